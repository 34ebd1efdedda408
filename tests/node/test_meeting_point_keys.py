"""Meeting points bound to node keys (the original's vulnerability 6), on the engine simulator.

A meeting point is NAME@KEY of its node, and the HaveRoute it sends each half is signed by
KEY. A node cannot add another node's meeting point; a node that acts as a meeting point it
does not hold (it put the id into its own database, as modified software would) and forges
the HaveRoute (unsigned, its own key, a signature over other fields, one replayed from another
payment) is refused by the first honest node it answers: the route fails, the payment is
cancelled at both ends, nothing was locked, no balance moved, both ends of every channel agree.

Network (both halves of a payment from p to q pass through h, the real meeting point is m):

    p --- x --- h --- m          x: an honest hop on the payer side
                |
                q
"""

import logging

import pytest

from amiko_core import messages as m
from amiko_core.errors import AmikoError

from amiko.node import endpoints, events, meetingpoints, outbox
from sim import Sim, node_identity

FUNDING = 1000


def build(tmp_path, seed=0):
    sim = Sim(tmp_path, seed=seed, redeliver=0.05)
    mp = sim.node("m", ["mp"])
    nodes = {"m": mp}
    for name in ("p", "x", "h", "q"):
        nodes[name] = sim.node(name, external_meeting_points=["mp"])
    for a, b in (("p", "x"), ("x", "h"), ("h", "m"), ("q", "h")):
        sim.link(nodes[a], nodes[b])
        sim.deposit(nodes[a], nodes[b], FUNDING)
        sim.deposit(nodes[b], nodes[a], FUNDING)
    sim.run()
    return sim, nodes


def claim(node, mp_id):
    """The hostile node makes itself the meeting point mp_id behind the engine's back."""
    with node.tx() as db:
        db.execute("INSERT INTO meeting_points (id, created) VALUES (?, 0)", (mp_id,))


def history(node, txid):
    return [(p["state"], p["reason"]) for p in node.status()["history"] if p["txid"] == txid.hex()]


def payment_state(node, txid, role):
    with node.store.read() as db:
        return node.engine.payment(db, txid, role)["state"]


def assert_cancelled_cleanly(sim, p, before):
    """The payer never locked, no balance moved, both ends agree it is cancelled, all is quiet."""
    assert p.locked is False
    assert not any(ev.kind == events.LOCKED and ev.txid == p.txid for n in sim.nodes.values() for ev in n.events)
    assert sim.balances() == before
    sim.check_quiet()  # both ends of every channel agree; nothing reserved, locked, pending
    assert payment_state(p.payer, p.txid, "payer") == "cancelled"
    assert payment_state(p.payee, p.txid, "payee") == "cancelled"


def test_a_node_cannot_add_another_nodes_meeting_point(tmp_path):
    sim, nodes = build(tmp_path)
    victim = sim.mp("mp")
    assert victim == "mp@" + node_identity("m").pubkey.hex()
    h = nodes["h"]
    with pytest.raises(AmikoError, match="another node's key"):
        with h.tx() as db:
            h.engine.add_meeting_point(db, victim)
    with h.store.read() as db:
        assert h.engine.meeting_points(db) == []
    # its own name: NAME@<own key>
    with h.tx() as db:
        assert h.engine.add_meeting_point(db, "mp") == "mp@" + h.identity.pubkey.hex()
    # nor in its configuration
    with pytest.raises(AmikoError, match="another node's key"):
        sim.node("thief", [victim])
    # an id that is not NAME@KEY is not a meeting point at all
    for bad in ("mp", "mp@", "mp@zz", "mp@04" + "11" * 32, "mp@02" + "AB" * 32):
        with pytest.raises(AmikoError, match="meeting point"):
            endpoints.check_meeting_point(bad)
    sim.close()


def test_honest_payment_carries_the_meeting_points_signature_to_both_ends(tmp_path):
    sim, nodes = build(tmp_path)
    seen = []

    def watch(sender, receiver, msg):
        if msg.type == m.HAVE_ROUTE:
            seen.append((sender, receiver.name, msg.side, msg.signature))
        return msg
    sim.tamper = watch
    before = sim.balances()
    p = sim.pay(nodes["p"], nodes["q"], 100)
    sim.run()
    assert p.done and p.failed == []
    sim.check_quiet()
    assert sim.balances()["p"] == before["p"] - 100 and sim.balances()["q"] == before["q"] + 100
    # every hop passed the meeting point's signature on unchanged, on each side
    assert sorted((s, r, side) for s, r, side, _ in seen) == [("h", "q", 1), ("h", "x", 0), ("m", "h", 0),
                                                               ("m", "h", 1), ("x", "p", 0)]
    mp = sim.mp("mp")
    for side in (0, 1):
        sigs = {sig for _, _, s, sig in seen if s == side}
        assert len(sigs) == 1
        assert meetingpoints.have_route_problem(sigs.pop(), p.txid, side, mp, 100) is None
    sim.close()


def _forge_unsigned(ctx, msg):
    return m.Message(m.HAVE_ROUTE, dict(msg.fields, signature=None))


def _forge_own_key(ctx, msg):
    return msg  # h signed as the meeting point it claims, with its own key


def _forge_other_fields(ctx, msg):
    # the real meeting point's key, over another amount
    sig = meetingpoints.sign_have_route(node_identity("m"), msg.txid, msg.side, ctx["mp"], ctx["amount"] + 1)
    return m.Message(m.HAVE_ROUTE, dict(msg.fields, signature=sig))


def _forge_other_side(ctx, msg):
    sig = meetingpoints.sign_have_route(node_identity("m"), msg.txid, 1 - msg.side, ctx["mp"], ctx["amount"])
    return m.Message(m.HAVE_ROUTE, dict(msg.fields, signature=sig))


def _forge_replayed(ctx, msg):
    # the genuine signature of an earlier payment's HaveRoute, same side, same amount
    return m.Message(m.HAVE_ROUTE, dict(msg.fields, signature=ctx["earlier"][msg.side]))


FORGERIES = {
    "unsigned": _forge_unsigned,
    "own_key": _forge_own_key,
    "other_fields": _forge_other_fields,
    "other_side": _forge_other_side,
    "replayed_from_another_payment": _forge_replayed,
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
@pytest.mark.parametrize("seed", [0, 1])
def test_forged_have_route_cannot_make_the_payer_lock(tmp_path, caplog, forgery, seed):
    sim, nodes = build(tmp_path, seed)
    mp, amount = sim.mp("mp"), 100
    ctx = {"mp": mp, "amount": amount, "earlier": {}}

    # an honest payment first, through h to m: its genuine signatures are what a replay reuses
    def record(sender, receiver, msg):
        if msg.type == m.HAVE_ROUTE and sender == "h":
            ctx["earlier"][msg.side] = msg.signature
        return msg
    sim.tamper = record
    first = sim.pay(nodes["p"], nodes["q"], amount)
    sim.run()
    assert first.done and set(ctx["earlier"]) == {0, 1}

    # now h claims m's meeting point and answers both halves itself, forging the HaveRoutes
    claim(nodes["h"], mp)
    forge = FORGERIES[forgery]
    forged = []

    def hostile(sender, receiver, msg):
        if msg.type == m.HAVE_ROUTE and sender == "h":
            forged.append(msg.side)
            return forge(ctx, msg)
        return msg
    sim.tamper = hostile
    before = sim.balances()
    caplog.set_level(logging.WARNING, "amiko.routing")
    p = sim.pay(nodes["p"], nodes["q"], amount)
    sim.run()
    sim.advance(60)  # any timer left would fire here; nothing may change
    sim.run()
    assert forged, "h never answered as the meeting point"
    assert nodes["m"].query("SELECT COUNT(*) FROM routes WHERE txid = ?", (p.txid,))[0][0] == 0  # m never saw it
    assert_cancelled_cleanly(sim, p, before)
    # refused by the first honest node h answered: x on the payer side, q on the payee side
    refusals = [r.getMessage() for r in caplog.records if "refused HaveRoute" in r.getMessage()]
    assert refusals and all("from link h" in line and mp in line for line in refusals), refusals
    reasons = " | ".join(reason for _, _, reason in p.failed)
    assert "refused a HaveRoute from h" in reasons, p.failed
    # x's and q's entries ended (failed), h's were cancelled by their CancelRoute
    for name, side in (("x", 0), ("q", 1)):
        if side in forged:
            assert nodes[name].query("SELECT state FROM routes WHERE txid = ? AND side = ?",
                                     (p.txid, side)) == [("failed",)]
    sim.close()


def test_make_route_toward_an_unkeyed_meeting_point_is_answered_have_no_route(tmp_path):
    """A MakeRoute naming a meeting point that is not NAME@KEY is refused: nobody could verify it."""
    sim, nodes = build(tmp_path)
    x = nodes["x"]
    cid = x.query("SELECT id FROM channels WHERE link = 'h' AND local = ?", (FUNDING,))[0][0]
    with x.tx() as db:
        x.engine.on_link_message(db, "h", m.Message(m.MAKE_ROUTE, txid=b"\x42" * 20, side=1, amount=5,
                                                    meeting_point="mp", channel=cid, deadline=int(sim.time) + 30))
    assert x.query("SELECT * FROM routes WHERE txid = ?", (b"\x42" * 20,)) == []
    assert x.query("SELECT * FROM holds") == []
    seq, mtype, body = outbox.unacked(x.store, "h")[-1]
    assert m.decode(mtype, body) == m.Message(m.HAVE_NO_ROUTE, txid=b"\x42" * 20, side=1)
    sim.close()
