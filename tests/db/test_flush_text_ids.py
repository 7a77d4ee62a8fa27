"""The flush's texts of ids: the canonical text, converted once per flush and
not kept after it (on every database)."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from healthmgr.db.flush import statements as st
from healthmgr.db.store import Store
from healthmgr.rules.batch import FlushBatch, HealthBump, StatsUpdate
from healthmgr.wire.ids import id_str
from tests.db.factories import make_seed_lb, utcnow
from tests.db.test_store_flush import stats_of


def test_text_id_is_the_canonical_text() -> None:
    for raw in (os.urandom(16) for _ in range(100)):
        assert st.text_id(raw) == id_str(raw)
        assert st.text_id(raw) == id_str(raw)  # converted already
    st.forget_texts()


def test_a_wrong_length_is_refused_not_kept() -> None:
    with pytest.raises(ValueError):
        st.text_id(b"short")
    assert b"short" not in st._texts


def test_forget_texts_drops_every_text() -> None:
    raw = os.urandom(16)
    st.text_id(raw)
    st.forget_texts()
    assert raw not in st._texts


def test_a_flush_keeps_no_text_after_it(engine: sa.Engine, store: Store) -> None:
    seed = make_seed_lb(engine)
    update = StatsUpdate(seed.listener, seed.amphora, 1, 1, 0, 1000, 7, 3, 1)
    store.flush(FlushBatch(health=(HealthBump(seed.amphora, utcnow()),), stats=(update,)))
    assert not st._texts
    assert stats_of(engine, seed.listener, seed.amphora)["bytes_in"] == 1000
    # The next flush converts them again, to the same rows.
    later = StatsUpdate(seed.listener, seed.amphora, 2, 1, 0, 1500, 7, 3, 1)
    store.flush(FlushBatch(stats=(later,)))
    assert not st._texts
    assert stats_of(engine, seed.listener, seed.amphora)["bytes_in"] == 1500
