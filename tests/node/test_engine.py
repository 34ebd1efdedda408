"""The engine over the simulator (tests/node/sim.py): real stores, real outboxes, seeded interleavings."""

import random

import pytest

from amiko.node import events
from amiko.node.events import Event

from sim import Sim

AMOUNT = 10_000


@pytest.fixture
def sim(tmp_path):
    s = Sim(tmp_path, seed=1)
    yield s
    s.close()


def funded(sim, a, b, ab=AMOUNT, ba=AMOUNT):
    sim.link(a, b)
    if ab:
        sim.deposit(a, b, ab)
    if ba:
        sim.deposit(b, a, ba)


def assert_committed(sim, p):
    assert p.failed == []
    assert p.done, "payment %s did not settle at both endpoints: %s" % (p.txid.hex(), p.settled)
    for node, role in ((p.payer, "payer"), (p.payee, "payee")):
        with node.store.read() as db:
            row = node.engine.payment(db, p.txid, role)
        assert row["state"] == "committed" and row["token"] == p.token, (node.name, row)


# ---- two nodes ----

def test_two_nodes_pay_both_ways_with_full_sync(tmp_path):
    sim = Sim(tmp_path, seed=3, synchronous="FULL")
    a = sim.node("a", ["mp-a"])
    b = sim.node("b", ["mp-b"])
    funded(sim, a, b, 1000, 500)
    sim.run()
    assert sim.balances() == {"a": 1000, "b": 500}
    payments = [sim.pay(a, b, 100), sim.pay(b, a, 30), sim.pay(a, b, 7, meeting_point="mp-b"),
                sim.pay(b, a, 1, meeting_point="mp-a")]
    # mp-a offered by a, mp-b by b: each payee offers its own meeting point
    sim.run()
    for p in payments:
        assert_committed(sim, p)
    assert sim.balances() == {"a": 1000 - 100 + 30 - 7 + 1, "b": 500 + 100 - 30 + 7 - 1}
    assert sim.errors == []
    sim.check_quiet()
    sim.close()


def test_payer_and_payee_on_one_node(sim):
    a = sim.node("a", ["mp-a"])
    p = sim.pay(a, a, 5)
    sim.run()
    assert_committed(sim, p)


def test_payment_exceeding_the_channel_fails_cleanly(sim):
    a = sim.node("a", ["mp-a"])
    b = sim.node("b", ["mp-b"])
    funded(sim, a, b, 100, 0)
    p = sim.pay(a, b, 101)  # b is the meeting point; a cannot reserve 101
    sim.run()
    assert p.failed == [("a", 0, "no route to meeting point %s on the payer side" % sim.mp("mp-b"))]
    for node, role in ((a, "payer"), (b, "payee")):  # b cancelled its half when told
        with node.store.read() as db:
            assert node.engine.payment(db, p.txid, role)["state"] == "cancelled"
    sim.check_quiet()
    assert sim.balances() == {"a": 100, "b": 0}


# ---- a multi-hop network with cycles ----

EDGES = [
    ("w1", "n1"), ("n1", "n2"), ("n2", "n3"), ("n3", "mpn"), ("mpn", "n5"), ("n5", "n6"), ("n6", "w2"),
    ("n1", "n7"), ("n7", "n6"), ("n2", "n7"),            # cycles
    ("a-dead1", "n1"),                                   # leaf: a dead end tried first (sorted names)
    ("n2", "a-pocket1"), ("a-pocket1", "a-pocket2"),     # a pocket two hops deep
    ("n5", "a-dead3"),
    ("z1", "n3"), ("z2", "n7"),
]
ENDPOINTS = ("w1", "w2", "z1", "z2")


def network(sim, edges=EDGES, amount=AMOUNT):
    names = sorted({n for e in edges for n in e})
    nodes = {}
    for name in names:
        if name == "mpn":
            nodes[name] = sim.node(name, ["mp"])
        else:
            nodes[name] = sim.node(name, external_meeting_points=["mp"])
    for a, b in edges:
        funded(sim, nodes[a], nodes[b], amount, amount)
    sim.run()
    return nodes


def route_links(node, txid, side):
    rows = node.query("SELECT up_link, down_link, state FROM routes WHERE txid = ? AND side = ?", (txid, side))
    return rows[0] if rows else None


def test_multihop_route_backtracks_out_of_dead_ends_and_meets_in_the_middle(sim):
    nodes = network(sim)
    before = sim.balances()
    p = sim.pay(nodes["w1"], nodes["w2"], 250)
    sim.run()
    assert_committed(sim, p)
    after = sim.balances()
    assert after["w1"] == before["w1"] - 250 and after["w2"] == before["w2"] + 250
    assert all(after[n] == before[n] for n in after if n not in ("w1", "w2"))
    # The payer side walked w1 -> n1 -> (a-dead1: no) -> n2 -> (a-pocket1 -> a-pocket2: no) -> n3 -> mpn,
    t = p.txid
    assert route_links(nodes["a-dead1"], t, 0) == ("n1", None, "failed")
    assert route_links(nodes["a-pocket2"], t, 0) == ("a-pocket1", None, "failed")
    assert route_links(nodes["a-pocket1"], t, 0) == ("n2", None, "failed")
    assert route_links(nodes["n1"], t, 0) == ("w1", "n2", "settled")
    assert route_links(nodes["n2"], t, 0) == ("n1", "n3", "settled")
    assert route_links(nodes["mpn"], t, 0) == ("n3", None, "settled")
    # the payee side w2 -> n6 -> n5 -> (a-dead3: no) -> mpn.
    assert route_links(nodes["a-dead3"], t, 1) == ("n5", None, "failed")
    assert route_links(nodes["n5"], t, 1) == ("n6", "mpn", "settled")
    assert route_links(nodes["mpn"], t, 1) == ("n5", None, "settled")
    # Deadlines grow by one increment per hop going up: payee side from the payee, then the payer side.
    inc = nodes["n1"].engine.cfg.timeout_increment

    def dl(name, side):
        return nodes[name].query("SELECT up_deadline, down_deadline FROM routes WHERE txid = ? AND side = ?",
                                 (t, side))[0]

    for hop, down in (("n6", "w2"), ("n5", "n6"), ("mpn", "n5")):  # payee side, toward the meeting point
        assert dl(hop, 1)[0] == dl(down, 1)[1]
        if hop != "mpn":
            assert dl(hop, 1)[1] == dl(hop, 1)[0] + inc
    assert dl("mpn", 0)[0] == dl("mpn", 1)[0] + inc  # turned around at the meeting point
    for hop, down in (("n3", "mpn"), ("n2", "n3"), ("n1", "n2"), ("w1", "n1")):  # payer side, going up
        assert dl(hop, 0)[1] == dl(down, 0)[0]
        if hop != "w1":
            assert dl(hop, 0)[0] == dl(hop, 0)[1] + inc
    assert dl("w1", 0)[1] == dl("w2", 1)[1] + 6 * inc  # seven channels, six hops between them
    assert sim.errors == []
    sim.check_quiet()


def test_fifty_concurrent_payments_in_mixed_directions(tmp_path):
    sim = Sim(tmp_path, seed=50)
    nodes = network(sim)
    before = sim.balances()
    rng = random.Random(7)
    expected = dict.fromkeys(before, 0)
    payments = []
    for i in range(50):
        payer, payee = rng.sample(ENDPOINTS, 2)
        amount = rng.randint(1, 100)
        payments.append(sim.pay(nodes[payer], nodes[payee], amount))
        expected[payer] -= amount
        expected[payee] += amount
    both_ways = 0  # observations of one channel holding payments in both directions at once
    most = 0       # the most holds seen on one channel at once
    while sim.step():
        if sim.steps % 25 == 0:
            for n in nodes.values():
                for link, cid, dirs, count in n.query(
                        "SELECT link, channel, COUNT(DISTINCT direction), COUNT(*) FROM holds GROUP BY link, channel"):
                    both_ways += dirs == 2
                    most = max(most, count)
    for p in payments:
        assert_committed(sim, p)
    after = sim.balances()
    assert {n: after[n] - before[n] for n in after} == expected
    assert sim.errors == []
    sim.check_quiet()
    assert both_ways > 0 and most >= 10, (both_ways, most)
    sim.close()


# ---- no route ----

def test_no_route_payer_side_releases_everything(sim):
    nodes = network(sim)
    island = sim.node("island", ["far-mp"])  # a meeting point nobody is linked to
    assert island
    p = sim.pay(nodes["w1"], nodes["w2"], 10, meeting_point="far-mp", start_payee=False)
    sim.run()
    assert p.failed == [("w1", 0, "no route to meeting point %s on the payer side" % sim.mp("far-mp"))]
    # every node of the component was visited once and left a tombstone, nothing is held
    visited = [n for n in nodes.values() if route_links(n, p.txid, 0)]
    assert len(visited) == len(nodes)
    assert all(route_links(n, p.txid, 0)[2] == "failed" for n in visited)
    assert sim.errors == []
    sim.check_quiet()


def test_no_route_payee_side_then_payer_half_cancelled(sim):
    nodes = network(sim)
    lonely = sim.node("lonely", external_meeting_points=["mp"])
    # on the payee side n6 would pay lonely: lonely funded its channel, n6 has nothing toward it
    sim.link(nodes["n6"], lonely)
    sim.deposit(lonely, nodes["n6"], 1000)
    sim.run()
    sim.auto_cancel = False
    p = sim.pay(nodes["w1"], lonely, 10, start_payer=False)
    sim.run()
    assert p.failed == [("lonely", 1, "no route to meeting point %s on the payee side" % sim.mp("mp"))]
    # the payer started late: its half reaches the meeting point and waits there ...
    sim._start(nodes["w1"], p, 0)
    sim.run()
    assert route_links(nodes["mpn"], p.txid, 0)[2] == "waiting"
    # ... until the payee's Cancel arrives: the payer withdraws its half from the meeting point
    sim._cancel_other_half(p, 1, "payee has no route")
    sim.run()
    assert route_links(nodes["mpn"], p.txid, 0)[2] == "cancelled"
    with nodes["w1"].store.read() as db:
        row = nodes["w1"].engine.payment(db, p.txid, "payer")
    assert (row["state"], row["reason"]) == ("cancelled", "payment cancelled: payee has no route")
    assert sim.errors == []
    sim.check_quiet()


def test_payee_side_hop_without_funds_answers_have_no_route(sim):
    """A payee-side MakeRoute asks the receiver to pay: one that cannot answers HaveNoRoute."""
    from amiko_core import messages as m
    from amiko.node import outbox
    a = sim.node("a", external_meeting_points=["mp"])
    b = sim.node("b", [])
    funded(sim, a, b, 0, 40)
    sim.run()
    cid = b.query("SELECT id FROM channels")[0][0]
    with b.store.read() as db:
        seq = outbox.last_in(db, "a") + 1
    msg = m.Message(m.MAKE_ROUTE, txid=b"\x05" * 20, side=1, amount=50, meeting_point="mp", channel=cid,
                    deadline=int(sim.time) + 10)
    assert sim.receive(b, "a", seq, m.MAKE_ROUTE, m.encode(msg)) == "applied"
    ((_, mtype, body),) = outbox.unacked(b.store, "a")
    assert m.decode(mtype, body) == m.Message(m.HAVE_NO_ROUTE, txid=b"\x05" * 20, side=1)
    assert b.query("SELECT * FROM holds") == [] and b.query("SELECT * FROM routes") == []


def test_payee_side_backtracks_when_a_hop_is_short_of_funds(tmp_path):
    """The payee's view of a peer's funds can be stale (the peer reserved for another payment
    that the payee has not seen yet): the peer refuses, the payee tries the next channel."""
    sim = Sim(tmp_path, seed=11)
    payee = sim.node("p", ["mp-p"], external_meeting_points=["mp"])
    short = sim.node("a-short")
    other = sim.node("b-other")
    m = sim.node("z-m", ["mp"])  # named last: a-short tries p first
    payer = sim.node("y-payer")
    funded(sim, payee, short, 0, 60)
    funded(sim, payee, other, 0, 60)
    funded(sim, short, m)
    funded(sim, other, m)
    funded(sim, payer, m)
    sim.run()
    first = sim.pay(short, payee, 50, meeting_point="mp-p", start_payee=False)
    sim.actions.pop()()  # a-short reserves 50 toward p; p has not seen that MakeRoute yet
    second = sim.pay(payer, payee, 50, meeting_point="mp")
    second_payee_start = sim.actions.pop()
    second_payer_start = sim.actions.pop()
    second_payee_start()  # p tries a-short first (name order), believing it has 60
    sim.later(second_payer_start)
    sim.run()
    assert_committed(sim, second)
    assert route_links(short, second.txid, 1) is None  # refused without keeping anything
    assert route_links(payee, second.txid, 1)[:2] == (None, "b-other")
    assert route_links(payee, first.txid, 0)[2] == "waiting"  # for a payee half never started
    with short.tx() as db:
        short.engine.cancel_route(db, first.txid, 0)
    sim.run()
    assert route_links(payee, first.txid, 0)[2] == "cancelled"
    assert sim.errors == []
    sim.check_quiet()


def test_bounded_pending_payments_per_link(tmp_path):
    sim = Sim(tmp_path, seed=5, max_pending_per_link=2)
    a = sim.node("a", external_meeting_points=["mp"])
    b = sim.node("b", ["mp"])
    c = sim.node("c", external_meeting_points=["mp"])
    funded(sim, a, b)
    funded(sim, b, c)
    sim.run()
    ps = [sim.pay(a, c, 1) for _ in range(6)]
    sim.run()
    failed = [p for p in ps if p.failed]
    done = [p for p in ps if p.done]
    assert len(failed) + len(done) == 6 and failed and done
    assert sim.errors == []
    sim.check_quiet()


# ---- cancel, rollback, withdraw ----

def two_hops(sim, **cfg):
    a = sim.node("a", external_meeting_points=["mp"], **cfg)
    b = sim.node("b", ["mp"], **cfg)
    c = sim.node("c", external_meeting_points=["mp"], **cfg)
    funded(sim, a, b, 1000, 1000)
    funded(sim, b, c, 1000, 1000)
    sim.run()
    return a, b, c


def run_until_routed(sim, p):
    while p.routed != {0, 1} or p.locked is False:
        assert sim.step()
    # drop the scheduled lock: the test decides
    sim.actions.clear()


def test_cancel_before_lock_and_refused_after(sim):
    a, b, c = two_hops(sim)
    p = sim.pay(a, c, 10)
    run_until_routed(sim, p)
    with c.tx() as db:
        c.engine.cancel_route(db, p.txid, 1, "payee cancelled")
    with a.tx() as db:
        a.engine.cancel_route(db, p.txid, 0, "payee cancelled")
    sim.run()
    sim.check_quiet()
    q = sim.pay(a, c, 10)
    sim.run()
    assert_committed(sim, q)
    from amiko_core.errors import AmikoError
    with pytest.raises(AmikoError, match="ended already"):
        with a.tx() as db:
            a.engine.cancel_route(db, q.txid, 0)
    r = sim.pay(a, c, 10)
    run_until_routed(sim, r)
    with a.tx() as db:
        a.engine.lock(db, r.txid)
    with pytest.raises(AmikoError, match="locked: it can no longer be cancelled"):
        with a.tx() as db:
            a.engine.cancel_route(db, r.txid, 0)
    sim.run()
    assert_committed(sim, r)


def test_payee_gives_up_after_lock_rolls_back_to_payer(tmp_path):
    sim = Sim(tmp_path, seed=9, auto_release=False)
    a, b, c = two_hops(sim)
    before = sim.balances()
    p = sim.pay(a, c, 10)
    sim.run()  # locked up to c, token never released
    assert Event(events.LOCKED, p.txid, 1) in c.events and not p.done
    assert a.query("SELECT state FROM holds") == [("locked",)]
    with c.tx() as db:
        c.engine.rollback(db, p.txid, 1, "payee gave up")
    sim.run()
    assert Event(events.ROLLED_BACK, p.txid, 0, "payee gave up") in a.events
    assert Event(events.ROLLED_BACK, p.txid, 1, "payee gave up") in c.events
    for node, role in ((a, "payer"), (c, "payee")):
        with node.store.read() as db:
            assert node.engine.payment(db, p.txid, role)["state"] == "cancelled"
    assert sim.balances() == before
    assert sim.errors == []
    sim.check_quiet()
    # a token arriving now moves nothing
    from amiko_core.errors import AmikoError
    with pytest.raises(AmikoError):
        with a.tx() as db:
            a.engine.release_token(db, p.txid, p.token)
    assert sim.balances() == before


def test_lock_meets_a_meeting_point_without_payee_half_and_rolls_back(sim):
    a, b, c = two_hops(sim)
    p = sim.pay(a, c, 10)
    run_until_routed(sim, p)
    # the payee half disappears at the meeting point (as issue 4's time-outs would do)
    with c.tx() as db:
        c.engine.cancel_route(db, p.txid, 1, "gone")
    sim.run()
    with a.tx() as db:
        a.engine.lock(db, p.txid)
    sim.run()
    assert Event(events.ROLLED_BACK, p.txid, 0, "the meeting point has no payee-side route") in a.events
    assert sim.errors == []
    sim.check_quiet()


def test_withdraw_closes_both_ends_and_is_refused_with_holds(sim):
    from amiko_core.errors import AmikoError
    a, b, c = two_hops(sim)
    cid = a.query("SELECT id FROM channels WHERE link = 'b' AND local = 1000 AND remote = 0")[0][0]
    p = sim.pay(a, c, 10)
    run_until_routed(sim, p)
    used = a.query("SELECT channel FROM holds")[0][0]
    with pytest.raises(AmikoError, match="pending holds"):
        with a.tx() as db:
            a.engine.withdraw(db, "b", used)
    sim.later(lambda: sim._lock(p))
    sim.run()
    assert_committed(sim, p)
    with a.tx() as db:
        a.engine.withdraw(db, "b", cid)
    sim.run()
    assert a.query("SELECT state FROM channels WHERE id = ?", (cid,)) == [("closed",)]
    assert b.query("SELECT state FROM channels WHERE id = ?", (cid,)) == [("closed",)]
    with pytest.raises(AmikoError, match="closed already"):
        with a.tx() as db:
            a.engine.withdraw(db, "b", cid)
    sim.check_quiet()


def test_withdraw_crossing_a_make_route_closes_after_have_no_route(sim):
    a = sim.node("a", external_meeting_points=["mp"])
    b = sim.node("b", ["mp"])
    funded(sim, a, b, 1000, 0)
    sim.run()
    cid = a.query("SELECT id FROM channels")[0][0]
    p = sim.pay(a, b, 10, start_payee=False)
    sim.actions.pop()()  # a reserves and sends MakeRoute ...
    with b.tx() as db:    # ... while b withdraws the channel
        b.engine.withdraw(db, "a", cid)
    sim.run()
    assert p.failed == [("a", 0, "no route to meeting point %s on the payer side" % sim.mp("mp"))]
    assert a.query("SELECT state FROM channels") == [("closed",)]
    assert sim.errors == []
    sim.check_quiet()


def test_status_reports_pending_and_channels(sim):
    a, b, c = two_hops(sim)
    p = sim.pay(a, c, 10)
    run_until_routed(sim, p)
    st = a.status()
    assert st["name"] == "a" and st["balance"] == 1000
    assert [x["state"] for x in st["pending"]] == ["routed"]
    assert sum(ch["reserved_out"] for ch in st["channels"]) == 10
    assert st["history"][0]["txid"] == p.txid.hex()
    with a.store.read() as db:
        timers = a.engine.due_timers(db, now=10**12)
    assert [(t["kind"], t["side"]) for t in timers] == [("lock", 0)]
    import json
    json.dumps(st)  # JSON-ready


def test_cancel_at_any_moment_before_lock_crosses_other_messages_quietly(tmp_path):
    """Cancels cross MakeRoute, HaveRoute and HaveNoRoute on the wire: no Error, nothing left."""
    for seed in range(12):
        (tmp_path / str(seed)).mkdir()
        sim = Sim(tmp_path / str(seed), seed=seed)
        a, b, c = two_hops(sim)
        before = sim.balances()
        ps = [sim.pay(a, c, 10), sim.pay(a, c, 5000), sim.pay(c, a, 7)]  # the 2nd has no route
        for _ in range(seed * 2):
            sim.step()
        for p in ps:
            if not p.locked and not p.cancelled:
                sim.cancel(p, "changed my mind")
        sim.run()
        assert sim.errors == [], (seed, sim.errors)
        sim.check_quiet()
        for p in ps:
            assert p.done or p.cancelled
        assert sum(sim.balances().values()) == sum(before.values())
        sim.close()
