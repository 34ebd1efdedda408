"""Hostile peer input: every message that does not fit the state is refused with a reason,
and the refusing transaction leaves the database exactly as it was (full dump compared)."""

import pytest

from amiko_core import messages as m
from amiko_core.errors import AmikoError
from amiko_core.messages import MAX_AMOUNT

from amiko.node import meetingpoints, outbox
from amiko.node.events import PeerError
from sim import Sim

WRONG_TOKEN = b"\x99" * 32
UNKNOWN_TX = b"\x77" * 20


def forged(mtype, **fields):
    """A Message that skipped validation, as a buggy or hostile caller could hand over."""
    return m.Message(mtype, fields, m._TRUSTED)


def deliver(sim, a, b):
    """Deliver everything a has queued for b (and nothing else)."""
    while True:
        row = sim._undelivered(a, b)
        if row is None:
            return
        sim.receive(b, a.name, *row)


def routed(sim, p):
    while p.routed != {0, 1} or not p.locked:
        assert sim.step()
    sim.actions.clear()  # the scheduled lock: the test decides


class Scene:
    """a -> b -> c, c is the meeting point and the payee. At b: `routing` is waiting for c's
    answer, `routed` is routed, `locked` has its Lock forwarded to c (not delivered)."""

    def __init__(self, tmp_path):
        sim = self.sim = Sim(tmp_path, seed=4, redeliver=0)
        a = self.a = sim.node("a")
        b = self.b = sim.node("b")
        c = self.c = sim.node("c", ["mp"])
        for x, y in ((a, b), (b, c)):
            sim.link(x, y)
            sim.deposit(x, y, 1000)
            sim.deposit(y, x, 1000)
        sim.run()
        self.routed = sim.pay(a, c, 10)
        routed(sim, self.routed)
        self.locked = sim.pay(a, c, 20)
        routed(sim, self.locked)
        with a.tx() as db:
            a.engine.lock(db, self.locked.txid)
        deliver(sim, a, b)
        self.routing = sim.pay(a, c, 30, start_payee=False)
        sim.actions.pop()()
        deliver(sim, a, b)
        assert self.route(self.routing)[0] == "routing"
        assert self.route(self.routed)[0] == "routed"
        assert self.route(self.locked)[0] == "locked"

    def route(self, p, side=0):
        return self.b.query("SELECT state, up_channel, down_channel FROM routes WHERE txid = ? AND side = ?",
                            (p.txid, side))[0]

    def channel(self, p, leg="up"):
        return self.route(p)[1 if leg == "up" else 2]

    def free_channel(self, link):
        return self.b.query("SELECT id FROM channels WHERE link = ? AND local = 1000 ORDER BY id", (link,))[0][0]


@pytest.fixture
def scene(tmp_path):
    s = Scene(tmp_path)
    yield s
    s.sim.close()


def mp_signed(s, p, side=0):
    """The meeting point c's genuine signature for HaveRoute of payment p, side."""
    return meetingpoints.sign_have_route(s.c.identity, p.txid, side, s.sim.mp("mp"), p.amount)


def mk(t, **f):
    return lambda s: m.Message(t, **f)


CASES = {
    # link, message builder, reason
    "make_route_unknown_channel": ("a", lambda s: m.Message(
        m.MAKE_ROUTE, txid=UNKNOWN_TX, side=0, amount=5, meeting_point=s.sim.mp("mp"), channel=12345),
        "which link a does not have"),
    "make_route_more_than_peer_has": ("a", lambda s: m.Message(
        m.MAKE_ROUTE, txid=UNKNOWN_TX, side=0, amount=5000, meeting_point=s.sim.mp("mp"), channel=s.channel(s.routed)),
        "the peer has only"),
    "payee_make_route_without_deadline": ("c", lambda s: m.Message(
        m.MAKE_ROUTE, txid=UNKNOWN_TX, side=1, amount=5, meeting_point=s.sim.mp("mp"), channel=s.free_channel("c")),
        "without a deadline"),
    "make_route_channel_beyond_sqlite": ("a", lambda s: m.Message(
        m.MAKE_ROUTE, txid=UNKNOWN_TX, side=0, amount=5, meeting_point=s.sim.mp("mp"), channel=2**64 - 1),
        "which link a does not have"),
    "make_route_negative_amount": ("a", lambda s: forged(
        m.MAKE_ROUTE, txid=UNKNOWN_TX, side=0, amount=-5, meeting_point=s.sim.mp("mp"), channel=s.channel(s.routed)),
        "amount"),
    "make_route_bool_side": ("a", lambda s: forged(
        m.MAKE_ROUTE, txid=UNKNOWN_TX, side=True, amount=5, meeting_point=s.sim.mp("mp"), channel=s.channel(s.routed)),
        "side"),
    "make_route_short_txid": ("a", lambda s: forged(
        m.MAKE_ROUTE, txid=b"\x01", side=0, amount=5, meeting_point=s.sim.mp("mp"), channel=s.channel(s.routed)),
        "txid"),
    "have_no_route_unknown_tx": ("c", mk(m.HAVE_NO_ROUTE, txid=UNKNOWN_TX, side=0), "never routed"),
    "have_no_route_from_upstream": ("a", lambda s: m.Message(m.HAVE_NO_ROUTE, txid=s.routing.txid, side=0),
                                    "was routed to c"),
    "have_no_route_after_routed": ("c", lambda s: m.Message(m.HAVE_NO_ROUTE, txid=s.routed.txid, side=0),
                                   "which is routed"),
    "have_route_unknown_tx": ("c", mk(m.HAVE_ROUTE, txid=UNKNOWN_TX, side=0, deadline=1), "never routed"),
    "have_route_wrong_link": ("a", lambda s: m.Message(
        m.HAVE_ROUTE, txid=s.routing.txid, side=0, deadline=int(s.sim.time) + 20), "was routed to c"),
    "have_route_without_deadline": ("c", lambda s: m.Message(m.HAVE_ROUTE, txid=s.routing.txid, side=0,
                                                             signature=mp_signed(s, s.routing)),
                                    "without a deadline"),
    "have_route_deadline_too_far": ("c", lambda s: m.Message(
        m.HAVE_ROUTE, txid=s.routing.txid, side=0, deadline=int(s.sim.time) + 10**9,
        signature=mp_signed(s, s.routing)), "beyond this node's policy"),
    "have_route_twice": ("c", lambda s: m.Message(
        m.HAVE_ROUTE, txid=s.routed.txid, side=0, deadline=int(s.sim.time) + 20), "which is routed"),
    "lock_unknown_route": ("a", mk(m.LOCK, txid=UNKNOWN_TX, side=0, amount=5), "does not carry"),
    "lock_not_yet_routed": ("a", lambda s: m.Message(m.LOCK, txid=s.routing.txid, side=0, amount=30),
                            "not routed"),
    "lock_from_downstream": ("c", lambda s: m.Message(m.LOCK, txid=s.routed.txid, side=0, amount=10),
                             "in leg on a"),
    "lock_amount_mismatch": ("a", lambda s: m.Message(m.LOCK, txid=s.routed.txid, side=0, amount=11),
                             "does not match the route's 10"),
    "lock_twice": ("a", lambda s: m.Message(m.LOCK, txid=s.locked.txid, side=0, amount=20), "which is locked"),
    "request_commit_wrong_token": ("c", lambda s: m.Message(
        m.REQUEST_COMMIT, txid=s.locked.txid, side=0, token=WRONG_TOKEN), "token does not match"),
    "request_commit_unlocked_leg": ("c", lambda s: m.Message(
        m.REQUEST_COMMIT, txid=s.routed.txid, side=0, token=s.routed.token), "whose hold here is reserved"),
    "request_commit_from_upstream": ("a", lambda s: m.Message(
        m.REQUEST_COMMIT, txid=s.locked.txid, side=0, token=s.locked.token), "out leg on c"),
    "settle_commit_wrong_token": ("a", lambda s: m.Message(
        m.SETTLE_COMMIT, txid=s.locked.txid, side=0, token=WRONG_TOKEN), "token does not match"),
    "settle_commit_from_downstream": ("c", lambda s: m.Message(
        m.SETTLE_COMMIT, txid=s.locked.txid, side=0, token=s.locked.token), "in leg on a"),
    "settle_commit_unlocked": ("a", lambda s: m.Message(
        m.SETTLE_COMMIT, txid=s.routed.txid, side=0, token=s.routed.token), "whose hold here is reserved"),
    "settle_commit_unknown_tx": ("a", mk(m.SETTLE_COMMIT, txid=UNKNOWN_TX, side=0, token=WRONG_TOKEN),
                                 "does not carry"),
    "settle_rollback_from_upstream": ("a", lambda s: m.Message(m.SETTLE_ROLLBACK, txid=s.locked.txid, side=0),
                                      "out leg on c"),
    "settle_rollback_unknown_tx": ("c", mk(m.SETTLE_ROLLBACK, txid=UNKNOWN_TX, side=0), "does not carry"),
    "cancel_route_after_lock": ("a", lambda s: m.Message(m.CANCEL_ROUTE, txid=s.locked.txid, side=0),
                                "which is locked"),
    "deposit_huge_amount": ("a", lambda s: forged(m.DEPOSIT, channel=99, amount=MAX_AMOUNT + 1), "amount"),
    "deposit_negative_amount": ("a", lambda s: forged(m.DEPOSIT, channel=99, amount=-1), "amount"),
    "deposit_zero": ("a", lambda s: forged(m.DEPOSIT, channel=99, amount=0), "amount"),
    "deposit_bool_amount": ("a", lambda s: forged(m.DEPOSIT, channel=99, amount=True), "amount"),
    "deposit_float_amount": ("a", lambda s: forged(m.DEPOSIT, channel=99, amount=1.5), "amount"),
    "deposit_existing_channel": ("a", lambda s: m.Message(m.DEPOSIT, channel=s.channel(s.routed), amount=5),
                                 "exists already"),
    "deposit_channel_id_too_big": ("a", lambda s: m.Message(m.DEPOSIT, channel=2**64 - 1, amount=5),
                                   "channel id"),
    "withdraw_unknown_channel": ("a", mk(m.WITHDRAW, channel=424242), "no channel"),
    "withdraw_channel_beyond_sqlite": ("a", mk(m.WITHDRAW, channel=2**64 - 1), "no channel"),
    "withdraw_with_locked_holds": ("a", lambda s: m.Message(m.WITHDRAW, channel=s.channel(s.locked)),
                                   "locked"),
    "payment_link_message": ("a", mk(m.PAY, id="abc"), "not a node link message"),
    "connect_link_message": ("a", mk(m.CONNECT_LINK, link="a", key=b"\x02" * 33), "not a node link message"),
    "unknown_link": ("mallory", mk(m.HAVE_NO_ROUTE, txid=UNKNOWN_TX, side=0), "no link named mallory"),
    "not_a_message": ("a", lambda s: {"type": m.LOCK}, "expected a message"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_message_is_refused_and_changes_nothing(scene, case):
    link, build, reason = CASES[case]
    msg = build(scene)
    before = scene.b.store.dump()
    events = list(scene.b.events)
    with pytest.raises(AmikoError, match=reason):
        with scene.b.tx() as db:
            scene.b.engine.on_link_message(db, link, msg)
    assert scene.b.store.dump() == before
    assert scene.b.events == events


def test_deposit_beyond_channel_bound_refused(tmp_path):
    sim = Sim(tmp_path, max_channels_per_link=2)
    a, b = sim.node("a"), sim.node("b")
    sim.link(a, b)
    sim.deposit(a, b, 1)
    sim.deposit(b, a, 1)
    sim.run()
    before = b.store.dump()
    with pytest.raises(AmikoError, match="open channels, the most allowed"):
        with b.tx() as db:
            b.engine.on_link_message(db, "a", m.Message(m.DEPOSIT, channel=5, amount=1))
    assert b.store.dump() == before
    with pytest.raises(AmikoError, match="the most allowed"):
        sim.deposit(a, b, 1)


def test_refused_message_is_answered_with_an_error_and_the_network_carries_on(scene):
    sim, a, b = scene.sim, scene.a, scene.b
    # a sends a Lock with the wrong amount through the real outbox
    with a.tx() as db:
        outbox.enqueue(db, "b", m.Message(m.LOCK, txid=scene.routed.txid, side=0, amount=11))
    before_routes = b.query("SELECT * FROM routes ORDER BY txid, side")
    before_holds = b.query("SELECT * FROM holds ORDER BY txid, side")
    deliver(sim, a, b)
    assert sim.errors[-1][:3] == ("b", "a", "Lock")
    assert b.query("SELECT * FROM routes ORDER BY txid, side") == before_routes
    assert b.query("SELECT * FROM holds ORDER BY txid, side") == before_holds
    (_, mtype, body), = [r for r in outbox.unacked(b.store, "a") if r[1] == m.ERROR]
    err = m.decode(mtype, body)
    assert err.ref_type == m.LOCK and "does not match the route's 10" in err.reason
    deliver(sim, b, a)
    assert PeerError("b", err.code, err.reason) in a.events
    # the real lock of that payment and everything else still completes
    n_errors = len(sim.errors)
    with a.tx() as db:
        a.engine.lock(db, scene.routed.txid)
    with a.tx() as db:
        a.engine.cancel_route(db, scene.routing.txid, 0, "test over")
    sim.run()
    assert sim.errors[n_errors:] == []
    for p in (scene.routed, scene.locked):
        assert p.done
    sim.check_quiet()


def test_late_token_after_rollback_moves_nothing(tmp_path):
    sim = Sim(tmp_path, seed=2, auto_release=False)
    a, b, c = sim.node("a"), sim.node("b"), sim.node("c", ["mp"])
    for x, y in ((a, b), (b, c)):
        sim.link(x, y)
        sim.deposit(x, y, 100)
    sim.run()
    p = sim.pay(a, c, 10)
    sim.run()
    with c.tx() as db:
        c.engine.rollback(db, p.txid, 1, "payee gave up")
    sim.run()
    balances = sim.balances()
    # c releases the token anyway, over the network: nothing moves, b refuses it
    before = b.store.dump()
    with pytest.raises(AmikoError, match="whose hold here is rolled_back"):
        with b.tx() as db:
            b.engine.on_link_message(db, "c", m.Message(m.REQUEST_COMMIT, txid=p.txid, side=0, token=p.token))
    assert b.store.dump() == before
    with pytest.raises(AmikoError, match="moves nothing"):
        with a.tx() as db:
            a.engine.release_token(db, p.txid, p.token)
    assert sim.balances() == balances
    sim.check_quiet()


@pytest.mark.parametrize("deadline", [0, 1, 2**64 - 1])
def test_payee_make_route_with_unacceptable_deadline_gets_have_no_route(scene, deadline):
    b = scene.b
    before_routes = b.query("SELECT * FROM routes ORDER BY txid, side")
    before_holds = b.query("SELECT * FROM holds ORDER BY txid, side")
    with b.tx() as db:
        n = outbox.pending_count(db, "c")
        b.engine.on_link_message(db, "c", m.Message(
            m.MAKE_ROUTE, txid=UNKNOWN_TX, side=1, amount=5, meeting_point=scene.sim.mp("mp"), channel=scene.free_channel("c"),
            deadline=deadline))
        assert outbox.pending_count(db, "c") == n + 1
    assert b.query("SELECT * FROM routes ORDER BY txid, side") == before_routes
    assert b.query("SELECT * FROM holds ORDER BY txid, side") == before_holds
    seq, mtype, body = outbox.unacked(b.store, "c")[-1]
    assert m.decode(mtype, body) == m.Message(m.HAVE_NO_ROUTE, txid=UNKNOWN_TX, side=1)


def test_loop_is_refused_with_have_no_route(scene):
    """A MakeRoute for a (txid, side) this node carries already comes back round a cycle."""
    b = scene.b
    before_routes = b.query("SELECT * FROM routes ORDER BY txid, side")
    with b.tx() as db:
        b.engine.on_link_message(db, "c", m.Message(
            m.MAKE_ROUTE, txid=scene.routed.txid, side=0, amount=10, meeting_point=scene.sim.mp("mp"),
            channel=scene.b.query("SELECT id FROM channels WHERE link = 'c' AND local = 0")[0][0]))
    assert b.query("SELECT * FROM routes ORDER BY txid, side") == before_routes
    seq, mtype, body = outbox.unacked(b.store, "c")[-1]
    assert m.decode(mtype, body) == m.Message(m.HAVE_NO_ROUTE, txid=scene.routed.txid, side=0)
