"""The engine's events are small value classes read by field (amiko.node.events)."""

import pytest

from amiko.node import events
from amiko.node.events import Event, PeerError

from sim import Sim

TXID = bytes(range(20))


def test_event_fields_and_default_reason():
    ev = Event(events.ROUTE_FOUND, bytearray(TXID), 0)
    assert (ev.kind, ev.txid, ev.side, ev.reason) == (events.ROUTE_FOUND, TXID, 0, None)
    assert type(ev.txid) is bytes  # a subscriber can use it as a dict key
    assert Event(events.ROLLED_BACK, TXID, 1, "gave up").reason == "gave up"


def test_event_kind_is_checked():
    with pytest.raises(ValueError):
        Event("peer_error", TXID, 0)  # a link's error is a PeerError, not a payment's event
    with pytest.raises(ValueError):
        Event("routed", TXID, 0)


def test_peer_error_fields():
    err = PeerError("b", 3, "refused")
    assert (err.kind, err.link, err.code, err.reason) == (events.PEER_ERROR, "b", 3, "refused")
    assert not isinstance(err, Event)


def test_value_equality_and_hash():
    assert Event(events.SETTLED, TXID, 0) == Event(events.SETTLED, TXID, 0)
    assert Event(events.SETTLED, TXID, 0) != Event(events.SETTLED, TXID, 1)
    assert Event(events.SETTLED, TXID, 0) != (events.SETTLED, TXID, 0)  # not a tuple any more
    assert PeerError("b", 3, "x") == PeerError("b", 3, "x") != PeerError("b", 4, "x")
    assert len({Event(events.LOCKED, TXID, 1), Event(events.LOCKED, TXID, 1), PeerError("b", 3, "x")}) == 2
    assert repr(Event(events.LOCKED, TXID, 1)) == "Event('locked', %r, 1, None)" % TXID


def test_slots_only():
    ev = Event(events.LOCKED, TXID, 1)
    with pytest.raises(AttributeError):
        ev.extra = 1
    with pytest.raises(AttributeError):
        PeerError("b", 3, "x").extra = 1


def test_a_payment_emits_events_after_commit(tmp_path):
    sim = Sim(tmp_path, seed=1)
    a, b = sim.node("a"), sim.node("b", meeting_points=["b"])
    sim.link(a, b)
    sim.deposit(a, b, 100)
    sim.run()
    p = sim.pay(a, b, 10)
    sim.run()
    assert p.done
    kinds_a = [ev.kind for ev in a.events if ev.txid == p.txid]
    kinds_b = [(ev.kind, ev.side) for ev in b.events if ev.txid == p.txid]
    assert kinds_a == [events.ROUTE_FOUND, events.SETTLED]
    assert (events.LOCKED, 1) in kinds_b and (events.SETTLED, 1) in kinds_b
    assert all(type(ev) is Event for n in (a, b) for ev in n.events)
