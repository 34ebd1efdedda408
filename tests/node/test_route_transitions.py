"""Every (state, event) pair of a route entry (amiko.node.route.TRANSITIONS): a legal pair
moves a stored entry to the state the table gives, an illegal one raises RouteStateError
and changes nothing."""

import itertools
import pathlib
import re

import pytest

from amiko_core.errors import AmikoError, ProtocolError

from amiko.node import route
from amiko.node.route import Route, RouteStateError
from amiko.node.store import Store

TXID = bytes(range(20))
NODE = pathlib.Path(__file__).resolve().parents[2] / "host" / "amiko" / "node"

# The rules, written out once more: a change to the table must change this too.
EXPECTED = {
    (None, "make"): "routing",
    ("routing", "retry"): "routing",
    ("routing", "reach"): "waiting",
    ("routing", "route"): "routed",
    ("routing", "fail"): "failed",
    ("routing", "cancel"): "cancelled",
    ("routing", "rollback"): "rolled_back",
    ("waiting", "route"): "routed",
    ("waiting", "fail"): "failed",
    ("waiting", "cancel"): "cancelled",
    ("waiting", "rollback"): "rolled_back",
    ("routed", "cancel"): "cancelled",
    ("routed", "lock"): "locked",
    ("routed", "rollback"): "rolled_back",
    ("locked", "settle"): "settled",
    ("locked", "rollback"): "rolled_back",
    ("locked", "revert"): "rolled_back",
    ("locked", "lose"): "rolled_back",
    ("settled", "revert"): "rolled_back",
    ("rolled_back", "rollback"): "rolled_back",
    ("rolled_back", "revert"): "rolled_back",
    ("rolled_back", "lose"): "rolled_back",
}
PAIRS = list(itertools.product(route.STATES, route.EVENTS))


def test_table_is_the_expected_one():
    table = {(state, event): nxt for state, moves in route.TRANSITIONS.items() for event, nxt in moves.items()}
    assert table == EXPECTED
    assert set(route.TRANSITIONS) == {None} | set(route.STATES)
    assert set(route.ACTIVE) | set(route.ENDED) == set(route.STATES)


def test_ended_entries_only_roll_back():
    for state in route.ENDED:
        assert set(route.TRANSITIONS[state]) <= {"rollback", "revert", "lose"}, state
    for state in ("failed", "cancelled"):
        assert route.TRANSITIONS[state] == {}


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "node.db"), synchronous="OFF")
    yield s
    s.close()


def stored_in(store, state):
    with store.transaction() as db:
        Route.make(db, 100, TXID, 0, 10, "mp@" + "02" * 33, up=("a", 1, "reserved", 500))
        db.execute("UPDATE routes SET state = ? WHERE txid = ? AND side = 0", (state, TXID))


@pytest.mark.parametrize("state,event", PAIRS)
def test_every_pair(store, state, event):
    stored_in(store, state)
    before = store.dump()
    if (state, event) in EXPECTED:
        with store.transaction() as db:
            r = Route.load(db, TXID, 0)
            r.apply(db, 200, event, reason="why")
        with store.read() as db:
            r = Route.load(db, TXID, 0)
        assert (r.state, r.reason, r.updated) == (EXPECTED[state, event], "why", 200)
        assert (r.up.link, r.up.channel, r.up.status, r.up.deadline, r.created) == ("a", 1, "reserved", 500, 100)
    else:
        with pytest.raises(RouteStateError) as e:
            with store.transaction() as db:
                r = Route.load(db, TXID, 0)
                assert not r.accepts(event)
                r.apply(db, 200, event, "Something")
        assert "Something for transaction %s side 0, which is %s (not " % (TXID.hex()[:12], state) in e.value.reason
        assert store.dump() == before


def test_make_is_the_only_way_in(store):
    for event in route.EVENTS:
        if event != "make":
            with pytest.raises(RouteStateError, match="which is not known"):
                route.next_state(None, event, txid=TXID, side=1)
    with store.transaction() as db:
        r = Route.make(db, 5, TXID, 1, 7, "mp@" + "02" * 33)
    assert r.state == "routing" and r.at_endpoint and r.in_leg is r.down and r.out_leg is r.up


def test_unknown_event_and_error_class():
    with pytest.raises(RouteStateError, match="no route event"):
        route.next_state("routing", "teleport")
    assert issubclass(RouteStateError, ProtocolError) and issubclass(RouteStateError, AmikoError)


def test_apply_writes_leg_changes_with_the_state(store):
    stored_in(store, "routed")
    with store.transaction() as db:
        r = Route.load(db, TXID, 0)
        r.in_leg.status = "locked"
        r.apply(db, 300, "lock")
    with store.read() as db:
        r = Route.load(db, TXID, 0)
    assert (r.state, r.up.status, r.updated) == ("locked", "locked", 300)


# the tables a route entry owns, and the words that write them
OWNED = re.compile(r"(INSERT[^\"]*INTO|UPDATE|DELETE FROM) (routes|timers|tokens)\b")


def test_only_route_writes_the_tables_it_owns():
    writers = sorted(p.name for p in NODE.glob("*.py") if OWNED.search(p.read_text()))
    assert writers == ["route.py"]


def test_payment_modules_take_a_context_not_the_engine():
    for name in ("routing.py", "settlement.py", "timeouts.py", "claims.py", "credit.py"):
        text = (NODE / name).read_text()
        assert not re.search(r"\beng\b", text), name
        assert "import engine" not in text and "from amiko.node.engine" not in text, name
