import pytest

from amiko_core import messages as m
from amiko_core.errors import AmikoError, ProtocolError

from amiko.node import outbox
from amiko.node.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "node.db"), synchronous="OFF")
    yield s
    s.close()


def deposit(i):
    return m.Message(m.DEPOSIT, {"channel": i, "amount": 1 + i})


def test_enqueue_numbers_per_link_from_one(store):
    with store.transaction() as db:
        assert [outbox.enqueue(db, "a", deposit(i)) for i in range(3)] == [1, 2, 3]
        assert outbox.enqueue(db, "b", deposit(9)) == 1
    rows = outbox.unacked(store, "a")
    assert [(seq, t) for seq, t, _ in rows] == [(1, m.DEPOSIT), (2, m.DEPOSIT), (3, m.DEPOSIT)]
    assert [m.decode(t, body) for _, t, body in rows] == [deposit(0), deposit(1), deposit(2)]
    assert outbox.unacked(store, "a", after=2) == rows[2:]
    assert outbox.unacked(store, "a", limit=2) == rows[:2]
    with store.read() as db:
        assert outbox.unacked(db, "b")[0][0] == 1
        assert outbox.pending_count(db, "a") == 3
        assert outbox.pending_count(db, "nope") == 0
        assert outbox.pending_links(db) == ["a", "b"]


def test_enqueue_rolls_back_with_the_transaction(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            outbox.enqueue(db, "a", deposit(1))
            raise RuntimeError("state change failed")
    assert outbox.unacked(store, "a") == []
    with store.transaction() as db:
        assert outbox.enqueue(db, "a", deposit(1)) == 1  # the rolled-back seq is reused: it was never sent


def test_acked_deletes_up_to_seq_and_is_idempotent(store):
    with store.transaction() as db:
        for i in range(5):
            outbox.enqueue(db, "a", deposit(i))
    with store.transaction() as db:
        outbox.acked(db, "a", 3)
        outbox.acked(db, "a", 2)  # older ack: nothing changes
        outbox.acked(db, "a", 0)
    assert [r[0] for r in outbox.unacked(store, "a")] == [4, 5]
    with store.transaction() as db:
        assert outbox.pending_count(db, "a") == 2
        with pytest.raises(ProtocolError, match="only 5 were ever sent"):
            outbox.acked(db, "a", 6)
        outbox.acked(db, "a", 5)
        assert outbox.pending_count(db, "a") == 0
        assert outbox.pending_links(db) == []
        assert outbox.enqueue(db, "a", deposit(7)) == 6  # seqs are never reused once acked


def test_ack_on_unknown_link_is_a_protocol_error(store):
    with store.transaction() as db:
        with pytest.raises(ProtocolError):
            outbox.acked(db, "ghost", 1)
        outbox.acked(db, "ghost", 0)


def test_last_in(store):
    with store.transaction() as db:
        assert outbox.last_in(db, "a") == 0
        outbox.set_last_in(db, "a", 1)
        outbox.set_last_in(db, "a", 2)
        with pytest.raises(ProtocolError):
            outbox.set_last_in(db, "a", 2)
        with pytest.raises(ProtocolError):
            outbox.set_last_in(db, "a", 1)
    with store.read() as db:
        assert outbox.last_in(db, "a") == 2
        assert outbox.last_in(db, "b") == 0


def test_bound_refuses_when_full(store):
    with store.transaction() as db:
        for i in range(4):
            outbox.enqueue(db, "a", deposit(i), limit=4)
        with pytest.raises(outbox.OutboxFull, match="4 unacknowledged") as e:
            outbox.enqueue(db, "a", deposit(9), limit=4)
        assert isinstance(e.value, AmikoError)
        outbox.enqueue(db, "b", deposit(9), limit=4)  # the bound is per link
        outbox.acked(db, "a", 1)
        assert outbox.enqueue(db, "a", deposit(9), limit=4) == 5
        outbox.enqueue(db, "a", deposit(10), limit=None)
        assert outbox.pending_count(db, "a") == 5


def test_default_bound(store):
    assert outbox.MAX_OUTBOX == 10000
    with store.transaction() as db:
        db.execute("INSERT INTO link_seq (link, next_out, acked_out) VALUES ('a', 10001, 0)")
        with pytest.raises(outbox.OutboxFull):
            outbox.enqueue(db, "a", deposit(1))


def test_body_too_large_for_a_link_message(store, monkeypatch):
    big = m.Message(m.SETTLE_ROLLBACK, {"txid": bytes(20), "side": 0, "reason": "x" * 256})
    with store.transaction() as db:
        assert outbox.enqueue(db, "a", big) == 1  # the largest real messages fit
    assert outbox.MAX_BODY <= m.BODY_MAX_STR  # a LinkMsg carrying it still decodes
    monkeypatch.setattr(m, "encode", lambda msg: b"\xa0" * (outbox.MAX_BODY + 1))
    with store.transaction() as db:
        with pytest.raises(AmikoError, match="at most"):
            outbox.enqueue(db, "a", big)
    assert len(outbox.unacked(store, "a")) == 1


def test_survives_reopen(tmp_path):
    path = str(tmp_path / "n.db")
    s = Store(path)
    with s.transaction() as db:
        outbox.enqueue(db, "a", deposit(1))
        outbox.enqueue(db, "a", deposit(2))
        outbox.set_last_in(db, "a", 7)
        outbox.acked(db, "a", 1)
    s.close()
    s = Store(path)
    try:
        assert [r[0] for r in outbox.unacked(s, "a")] == [2]
        with s.transaction() as db:
            assert outbox.last_in(db, "a") == 7
            assert outbox.enqueue(db, "a", deposit(3)) == 3
    finally:
        s.close()
