import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amiko_core.errors import AmikoError
from amiko_core.messages import MAX_AMOUNT

from amiko.node import channels
from amiko.node.store import Store

TX1 = b"\x01" * 20
TX2 = b"\x02" * 20


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "node.db", synchronous="OFF")
    with s.transaction() as db:
        channels.add_link(db, "peer")
    yield s
    s.close()


def open_iou(store, local=1000, remote=500, cid=7):
    with store.transaction() as db:
        channels.open_channel(db, "peer", cid, local, remote)


def row(store, cid=7):
    with store.read() as db:
        return db.execute("SELECT local, remote, state FROM channels WHERE link = 'peer' AND id = ?", (cid,)).fetchone()


def holds(store):
    with store.read() as db:
        return db.execute("SELECT txid, side, direction, amount, state FROM holds ORDER BY txid, side").fetchall()


def do(store, fn, cid=7):
    with store.transaction() as db:
        return fn(channels.require(db, "peer", cid))


def test_out_hold_lifecycle_commit_moves_money(store):
    open_iou(store)
    do(store, lambda ch: ch.reserve(TX1, 0, "out", 300))
    assert do(store, lambda ch: (ch.available_out(), ch.available_in())) == (700, 500)
    do(store, lambda ch: ch.lock(TX1, 0))
    assert holds(store) == [(TX1, 0, "out", 300, "locked")]
    assert row(store) == (1000, 500, "open")  # locked money has not moved yet
    do(store, lambda ch: ch.commit(TX1, 0))
    assert row(store) == (700, 800, "open")
    assert holds(store) == []


def test_in_hold_commit_moves_money_toward_us(store):
    open_iou(store)
    do(store, lambda ch: ch.reserve(TX1, 1, "in", 500))
    assert do(store, lambda ch: ch.available_in()) == 0
    do(store, lambda ch: ch.lock(TX1, 1))
    do(store, lambda ch: ch.commit(TX1, 1))
    assert row(store) == (1500, 0, "open")


def test_rollback_and_unreserve_leave_balances(store):
    open_iou(store)
    do(store, lambda ch: ch.reserve(TX1, 0, "out", 100))
    do(store, lambda ch: ch.reserve(TX2, 0, "out", 200))
    do(store, lambda ch: ch.lock(TX2, 0))
    do(store, lambda ch: ch.unreserve(TX1, 0))
    do(store, lambda ch: ch.rollback(TX2, 0))
    assert row(store) == (1000, 500, "open")
    assert holds(store) == []


def test_same_txid_both_sides_are_separate_holds(store):
    open_iou(store)
    do(store, lambda ch: ch.reserve(TX1, 0, "out", 100))
    do(store, lambda ch: ch.reserve(TX1, 1, "in", 100))
    assert len(holds(store)) == 2


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT + 1, True, 1.5, "10", None, 2**70])
def test_bad_amounts_are_refused(store, amount):
    open_iou(store)
    with pytest.raises(AmikoError, match="amount"):
        do(store, lambda ch: ch.reserve(TX1, 0, "out", amount))
    assert holds(store) == []


def test_cannot_reserve_beyond_available(store):
    open_iou(store)
    do(store, lambda ch: ch.reserve(TX1, 0, "out", 900))
    with pytest.raises(AmikoError, match="100 available, 101 needed"):
        do(store, lambda ch: ch.reserve(TX2, 0, "out", 101))
    with pytest.raises(AmikoError, match="the peer has 500 available"):
        do(store, lambda ch: ch.reserve(TX2, 0, "in", 501))
    assert holds(store) == [(TX1, 0, "out", 900, "reserved")]


@pytest.mark.parametrize("op, setup, reason", [
    ("lock", None, "no hold"),
    ("commit", None, "no hold"),
    ("rollback", None, "no hold"),
    ("unreserve", None, "no hold"),
    ("commit", "reserve", "is reserved, not locked"),
    ("lock", "lock", "is locked, not reserved"),
    ("unreserve", "lock", "is locked, not proposed or reserved"),
    ("reserve", "reserve", "already holds"),
])
def test_hold_state_machine_refusals_change_nothing(store, op, setup, reason):
    open_iou(store)
    if setup:
        do(store, lambda ch: ch.reserve(TX1, 0, "out", 10))
        if setup == "lock":
            do(store, lambda ch: ch.lock(TX1, 0))
    before = store.dump()
    with pytest.raises(AmikoError, match=reason):
        if op == "reserve":
            do(store, lambda ch: ch.reserve(TX1, 0, "out", 10))
        else:
            do(store, lambda ch: getattr(ch, op)(TX1, 0))
    assert store.dump() == before


def test_bad_direction_refused(store):
    open_iou(store)
    with pytest.raises(AmikoError, match="direction"):
        do(store, lambda ch: ch.reserve(TX1, 0, "sideways", 10))


def test_open_channel_validation(store):
    with pytest.raises(AmikoError, match="no link"):
        with store.transaction() as db:
            channels.open_channel(db, "stranger", 1, 10, 0)
    with pytest.raises(AmikoError, match="capacity"):
        with store.transaction() as db:
            channels.open_channel(db, "peer", 1, 0, 0)
    with pytest.raises(AmikoError, match="capacity"):
        with store.transaction() as db:
            channels.open_channel(db, "peer", 1, MAX_AMOUNT, 1)
    for bad in (-1, True, 1.0, 2**63):
        with pytest.raises(AmikoError):
            with store.transaction() as db:
                channels.open_channel(db, "peer", bad, 10, 0)
        with pytest.raises(AmikoError):
            with store.transaction() as db:
                channels.open_channel(db, "peer", 1, bad, 10)
    open_iou(store)
    with pytest.raises(AmikoError, match="exists already"):
        open_iou(store)


def test_close_refused_with_holds_then_allowed(store):
    open_iou(store)
    do(store, lambda ch: ch.reserve(TX1, 0, "out", 10))
    with pytest.raises(AmikoError, match="pending holds"):
        do(store, channels.close_channel)
    # A peer's Withdraw may close it once the reserved hold ends ...
    assert do(store, lambda ch: channels.close_channel(ch, allow_reserved=True)) == "closing"
    with pytest.raises(AmikoError, match="closing: no new holds"):
        do(store, lambda ch: ch.reserve(TX2, 0, "out", 1))
    do(store, lambda ch: ch.unreserve(TX1, 0))
    assert row(store)[2] == "closed"
    with pytest.raises(AmikoError, match="closed already"):
        do(store, channels.close_channel)


def test_close_refused_with_locked_holds_even_for_peer(store):
    open_iou(store)
    do(store, lambda ch: ch.reserve(TX1, 0, "in", 10))
    do(store, lambda ch: ch.lock(TX1, 0))
    with pytest.raises(AmikoError, match="1 locked"):
        do(store, lambda ch: channels.close_channel(ch, allow_reserved=True))
    assert row(store)[2] == "open"


def test_channel_rows_report_reserved_and_locked(store):
    open_iou(store)
    do(store, lambda ch: ch.reserve(TX1, 0, "out", 10))
    do(store, lambda ch: ch.reserve(TX2, 0, "in", 20))
    do(store, lambda ch: ch.lock(TX2, 0))
    with store.read() as db:
        (r,) = channels.channel_rows(db)
    assert (r["local"], r["remote"], r["reserved_out"], r["locked_out"], r["reserved_in"], r["locked_in"]) == \
        (1000, 500, 10, 0, 0, 20)


def test_links(store):
    key = b"\x02" + b"\x11" * 32
    with store.transaction() as db:
        channels.add_link(db, "other", remote_url="amikolink://h/other")
        channels.set_link_key(db, "other", key)
        channels.add_link(db, "other")  # no change
        assert channels.get_link(db, "other")["remote_key"] == key
        assert channels.get_link(db, "other")["remote_url"] == "amikolink://h/other"
        assert [link["name"] for link in channels.list_links(db)] == ["other", "peer"]
        with pytest.raises(AmikoError, match="link name"):
            channels.add_link(db, "bad name")
        with pytest.raises(AmikoError, match="33 bytes"):
            channels.add_link(db, "x", remote_key=b"short")
        with pytest.raises(AmikoError, match="no link"):
            channels.set_link_key(db, "nobody", key)


OPS = st.lists(st.tuples(
    st.sampled_from(["reserve", "lock", "commit", "rollback", "unreserve"]),
    st.integers(0, 5),                      # txid index
    st.integers(0, 1),                      # side
    st.sampled_from(["in", "out"]),
    st.integers(-5, 1200),                  # amount, some invalid
), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_operations_conserve_and_respect_bounds(tmp_path_factory, ops):
    s = Store(tmp_path_factory.mktemp("ch") / "node.db", synchronous="OFF")
    with s.transaction() as db:
        channels.add_link(db, "peer")
        channels.open_channel(db, "peer", 1, 700, 300)
    for op, t, side, direction, amount in ops:
        txid = bytes([t]) * 20
        try:
            with s.transaction() as db:
                ch = channels.require(db, "peer", 1)
                if op == "reserve":
                    ch.reserve(txid, side, direction, amount)
                else:
                    getattr(ch, op)(txid, side)
        except AmikoError:
            pass
        with s.read() as db:
            ch = channels.require(db, "peer", 1)
            assert ch.local + ch.remote == 1000
            assert 0 <= ch.held("out") <= ch.local
            assert 0 <= ch.held("in") <= ch.remote
    s.close()
