"""The flush's cache of text ids: the canonical text, and bounded."""

from __future__ import annotations

import os

import pytest

from healthmgr.db.flush import statements as st
from healthmgr.wire.ids import id_str


def test_text_id_is_the_canonical_text() -> None:
    for raw in (os.urandom(16) for _ in range(100)):
        assert st.text_id(raw) == id_str(raw)
        assert st.text_id(raw) == id_str(raw)  # from the cache


def test_the_cache_is_emptied_at_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "TEXT_CACHE_MAX", 10)
    monkeypatch.setattr(st, "_texts", {})
    for raw in (os.urandom(16) for _ in range(25)):
        assert st.text_id(raw) == id_str(raw)
        assert len(st._texts) <= 10


def test_a_wrong_length_is_refused_not_cached() -> None:
    with pytest.raises(ValueError):
        st.text_id(b"short")
    assert b"short" not in st._texts
