"""The writer process classifies failures as the thread writer does.

A database error in the child comes back transient (rows kept), anything else
as a bug (batch dropped); a hung child is killed and replaced.
"""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from healthmgr.config import Settings, load_settings
from healthmgr.db.errors import diagnose
from healthmgr.db.store import open_store
from healthmgr.manager.flush_process import FlushBug, FlushFailed, ProcessFlush, to_flush_failed
from healthmgr.manager.writer import _is_bug, _kind
from healthmgr.rules.batch import FlushBatch, HealthBump
from tests.db.factories import new_id, utcnow
from tests.manager.conftest import migrated_engine


def settings_for(tmp_path: Path, url: str) -> Settings:
    path = tmp_path / "hm.toml"
    path.write_text(f'[database]\nconnection = "{url}"\ntimeout = 2\n')
    return load_settings(path)


def one_bump() -> FlushBatch:
    return FlushBatch(health=(HealthBump(new_id(), utcnow()),))


def test_a_database_error_keeps_its_diagnosis_through_pickle() -> None:
    locked = sa_exc.OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked"))
    found = diagnose(locked)
    sent = pickle.loads(pickle.dumps(to_flush_failed(locked)))
    assert isinstance(sent, FlushFailed)
    assert (sent.kind, sent.reason) == (found.error_class, found.reason)
    assert str(sent) == "(sqlite3.OperationalError) database is locked"
    assert _kind(sent) == found.error_class.value == "contention"
    assert not _is_bug(sent) and not _is_bug(locked)  # transient, as in the thread
    assert _is_bug(FlushBug("ValueError: x")) and _is_bug(ValueError("x"))


def test_the_child_answers_as_the_store_in_the_thread_would(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hm.db"
    migrated_engine(url).dispose()
    settings = settings_for(tmp_path, url)
    store = open_store(settings)
    flush = ProcessFlush(settings, store.schema)
    try:
        batch = one_bump()
        assert flush.flush(batch).health_rows == store.flush(one_bump()).health_rows == 1
        # A database error (the table gone): transient in both.
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE amphora_health")
        with pytest.raises(sa_exc.OperationalError) as in_thread:
            store.flush(batch)
        with pytest.raises(FlushFailed) as in_child:
            flush.flush(batch)
        assert not _is_bug(in_child.value) and not _is_bug(in_thread.value)
        assert _kind(in_child.value) == _kind(in_thread.value)
        # Values the child cannot read: a bug, dropped.
        with pytest.raises(FlushBug, match="ValidationError"):
            flush.flush(FlushBatch(health=(HealthBump("not an id", utcnow()),)))  # type: ignore[arg-type]
    finally:
        flush.close()
        store.engine.dispose()


def test_a_hung_child_is_killed_and_replaced(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hm.db"
    migrated_engine(url).dispose()
    settings = settings_for(tmp_path, url)
    flush = ProcessFlush(settings, "healthmgr")
    try:
        flush.start()
        assert flush._pool is not None
        (hung,) = flush._pool._processes.values()
        os.kill(hung.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        flush.bound = 1.0
        with pytest.raises(FlushFailed, match="did not answer") as failed:
            flush.flush(one_bump())
        assert failed.value.reason == "writer_timeout" and not _is_bug(failed.value)
        assert hung.exitcode == -signal.SIGKILL
        flush.bound = 60.0
        assert flush.flush(one_bump()).health_rows == 1  # a new child
    finally:
        flush.close()


def test_an_in_memory_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a database file"):
        ProcessFlush(settings_for(tmp_path, "sqlite://"), "healthmgr")
