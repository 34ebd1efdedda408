import sqlite3
import threading

import pytest

from amiko.node import store as store_mod
from amiko.node.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "node.db")
    yield s
    s.close()


def test_opens_with_wal_full_sync_and_foreign_keys(store):
    with store.read() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_registered_schemas_exist(store):
    # channels, routing, endpoints, settlement and outbox register at import (via the engine).
    import amiko.node.engine  # noqa: F401
    with store.transaction() as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"links", "channels", "holds", "routes", "timers", "tokens", "requests", "payments",
            "meeting_points", "link_seq", "link_outbox"} <= names


def test_late_registered_schema_is_applied_at_next_transaction(store, monkeypatch):
    monkeypatch.setattr(store_mod, "SCHEMAS", list(store_mod.SCHEMAS))
    store_mod.register_schema("CREATE TABLE IF NOT EXISTS late_table (x INTEGER);")
    store_mod.register_schema("CREATE TABLE IF NOT EXISTS late_table (x INTEGER);")  # idempotent
    assert store_mod.SCHEMAS.count("CREATE TABLE IF NOT EXISTS late_table (x INTEGER);") == 1
    with store.transaction() as db:
        db.execute("INSERT INTO late_table VALUES (1)")
    with store.read() as db:
        assert db.execute("SELECT x FROM late_table").fetchall() == [(1,)]


def test_commit_runs_after_commit_callbacks_in_order(store):
    seen = []
    with store.transaction() as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.execute("INSERT INTO t VALUES (1)")
        db.after_commit(lambda: seen.append("first"))
        db.after_commit(lambda: seen.append("second"))
        assert seen == []
    assert seen == ["first", "second"]
    other = sqlite3.connect(store.path)
    assert other.execute("SELECT x FROM t").fetchall() == [(1,)]  # visible to another connection
    other.close()


def test_exception_rolls_back_and_drops_callbacks(store):
    with store.transaction() as db:
        db.execute("CREATE TABLE t (x INTEGER)")
    seen = []
    with pytest.raises(ValueError, match="boom"):
        with store.transaction() as db:
            db.execute("INSERT INTO t VALUES (1)")
            db.after_commit(lambda: seen.append(1))
            raise ValueError("boom")
    assert seen == []
    with store.read() as db:
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    with store.transaction() as db:  # usable again
        db.execute("INSERT INTO t VALUES (2)")
    with store.read() as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(2,)]


def test_failing_callback_does_not_undo_or_stop_others(store, caplog):
    seen = []
    with store.transaction() as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.after_commit(lambda: 1 / 0)
        db.after_commit(lambda: seen.append("ran"))
    assert seen == ["ran"]
    assert "after-commit callback failed" in caplog.text
    with store.read() as db:
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_transactions_do_not_nest(store):
    with store.transaction():
        with pytest.raises(RuntimeError, match="do not nest"):
            with store.transaction():
                pass


def test_read_inside_a_transaction_sees_its_changes(store):
    with store.transaction() as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.execute("INSERT INTO t VALUES (7)")
        with store.read() as rd:
            assert rd.execute("SELECT x FROM t").fetchall() == [(7,)]


def test_read_snapshot_cannot_register_callbacks(store):
    with store.read() as db:
        with pytest.raises(RuntimeError):
            db.after_commit(lambda: None)


def test_state_survives_reopen(tmp_path):
    path = tmp_path / "node.db"
    s = Store(path)
    with s.transaction() as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.execute("INSERT INTO t VALUES (42)")
    s.close()
    s = Store(path)
    with s.read() as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(42,)]
    assert "INSERT INTO \"t\" VALUES(42);" in s.dump()
    s.close()


def test_rejects_unknown_sync_mode(tmp_path):
    with pytest.raises(ValueError):
        Store(tmp_path / "x.db", synchronous="SOMETIMES")


def test_transactions_from_threads_are_serialised(store):
    with store.transaction() as db:
        db.execute("CREATE TABLE t (x INTEGER)")

    def work(k):
        for i in range(20):
            with store.transaction() as db:
                n = db.execute("SELECT COUNT(*) FROM t").fetchone()[0]
                db.execute("INSERT INTO t VALUES (?)", (n,))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.read() as db:
        assert sorted(r[0] for r in db.execute("SELECT x FROM t")) == list(range(80))


def test_a_transaction_that_need_not_be_durable_commits_and_restores_full_sync(store, tmp_path):
    with store.transaction() as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    with store.transaction(durable=False) as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: no fsync at COMMIT in WAL
        db.execute("INSERT INTO t VALUES (1)")
    with store.read() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    with pytest.raises(ValueError):
        with store.transaction(durable=False) as db:
            db.execute("INSERT INTO t VALUES (2)")
            raise ValueError("rolled back")
    with store.read() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
    other = sqlite3.connect(str(tmp_path / "node.db"))
    try:
        assert other.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        other.close()
