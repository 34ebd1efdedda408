"""Claims are never given up early, and exposure is the operator's decision (issue 11), on
the deterministic simulator: a peer that takes the token and refuses to settle, a silent
peer, and deposits beyond the credit limit."""

import pytest

from amiko_core import messages as m
from amiko_core.errors import AmikoError
from amiko_core.messages import MAX_AMOUNT

from amiko.node.events import PeerError

from sim import Sim

FUNDING = 5000


def build(tmp_path, **kw):
    """x -> b -> s; s is the payee and the meeting point; x funds its channel to b (b trusts x
    for FUNDING), b funds its channel to s."""
    sim = Sim(tmp_path, seed=3, redeliver=0, **kw)
    x, b, s = sim.node("x", external_meeting_points=["mp"]), sim.node("b"), sim.node("s", ["mp"])
    sim.link(x, b, credit_limit=FUNDING)
    sim.link(b, s, credit_limit=FUNDING)
    sim.deposit(x, b, FUNDING)
    sim.deposit(b, s, FUNDING)
    sim.run()
    return sim, x, b, s


def route(node, p, side=0):
    rows = node.query("SELECT state, up_status, down_status, reason FROM routes WHERE txid = ? AND side = ?",
                      (p.txid, side))
    return rows[0] if rows else None


def channel_id(node, link):
    return node.query("SELECT id FROM channels WHERE link = ?", (link,))[0][0]


def refusals_at(sim, node):
    return [e for e in sim.errors if e[0] == node.name and e[2] == "RequestCommit"]


def test_peer_that_takes_the_token_and_refuses_to_settle_leaves_the_claim_standing_then_a_dispute(tmp_path):
    sim, x, b, s = build(tmp_path)
    before = sim.balances()
    sim.thieves.add("x")                           # x takes the token (its proof of payment)...
    sim.refusing.add(("x", m.REQUEST_COMMIT))      # ...and answers b's claim with an Error
    p = sim.pay(x, s, 3000)
    sim.run()
    assert p.token_sent and (s.name, 1) in p.settled   # the shop is paid: b paid it
    assert len(refusals_at(sim, x)) == 1
    # Refused long before b's deadline: the claim stands (before issue 11: dropped right here).
    state, up_status, down_status, _ = route(b, p)
    assert (state, up_status, down_status) == ("locked", "requested", "settled")
    assert b.query("SELECT direction, amount, state FROM holds") == [("in", 3000, "locked")]
    assert b.status()["disputes"] == []
    # RequestCommit is sent again (through the outbox) while the deadline is ahead.
    deadline = b.query("SELECT up_deadline FROM routes WHERE txid = ? AND side = 0", (p.txid,))[0][0]
    while sim.time + 5 < deadline:
        sim.advance(5)
        sim.run()
    assert len(refusals_at(sim, x)) >= 3
    assert route(b, p)[:2] == ("locked", "requested")
    # The deadline passes with x still refusing: the loss is recorded as a dispute on the channel.
    sim.advance(deadline - sim.time + 1)
    sim.run()
    (d,) = b.status()["disputes"]
    cid = channel_id(b, "x")
    assert (d["link"], d["channel"], d["txid"], d["amount"], d["token"], d["state"]) == (
        "x", cid, p.txid.hex(), 3000, p.token.hex(), "open")
    assert d["reason"].startswith("claim refused by link x") and d["created"] >= deadline
    assert route(b, p)[0] == "rolled_back"
    # Conservation: b paid the shop, the dispute holds what x owes it; both ends of every
    # channel agree, nothing is held.
    sim.check_quiet()
    after = sim.balances()
    assert sum(after.values()) == sum(before.values())
    assert after["b"] + d["amount"] == before["b"]
    assert after["s"] == before["s"] + 3000 and after["x"] == before["x"]
    # The disputed channel forwards no new payment, in either direction.
    sim.thieves.clear()
    sim.refusing.clear()
    q = sim.pay(x, s, 10)
    sim.run()
    assert q.failed and not q.settled
    assert b.query("SELECT COUNT(*) FROM holds")[0][0] == 0
    with b.tx() as db:
        assert [c["id"] for c in b.engine.status(db)["channels"] if c["link"] == "x"] == [cid]
    sim.check_quiet()


def test_refusal_after_the_deadline_is_a_dispute_at_once(tmp_path):
    sim, x, b, s = build(tmp_path)
    sim.thieves.add("x")
    p = sim.pay(x, s, 700)
    while route(b, p) is None or route(b, p)[1] != "requested":
        assert sim.step()
    sim.block(b, x)  # b's claim does not reach x before the deadline
    sim.run()
    deadline = b.query("SELECT up_deadline FROM routes WHERE txid = ? AND side = 0", (p.txid,))[0][0]
    sim.time = deadline + 0.5  # the clock passes the deadline; no timer has fired yet
    sim.refusing.add(("x", m.REQUEST_COMMIT))
    sim.unblock(b, x)
    sim.run()
    (d,) = b.status()["disputes"]
    assert d["amount"] == 700 and d["state"] == "open" and "refused" in d["reason"]
    sim.advance(1)
    sim.run()
    sim.check_quiet()


def test_silent_peer_past_the_deadline_is_a_dispute_and_a_late_settlement_resolves_it(tmp_path):
    sim, x, b, s = build(tmp_path)
    before = sim.balances()
    p = sim.pay(x, s, 400)
    while route(b, p) is None or route(b, p)[1] != "locked":
        assert sim.step()
    sim.block(x, b)
    sim.block(b, x)  # x goes silent (its SettleCommit and b's RequestCommit wait on the link)
    while (s.name, 1) not in p.settled:
        assert sim.step()
    sim.run()
    deadline = b.query("SELECT up_deadline FROM routes WHERE txid = ? AND side = 0", (p.txid,))[0][0]
    sim.time = deadline + 1
    with b.store.read() as db:
        due = b.engine.due_timers(db, now=sim.time)
    for t in due:  # only b's timers: x has not noticed the time yet
        with b.tx() as db:
            b.engine.fire_timer(db, t["txid"], t["side"], t["kind"], now=sim.time)
    (d,) = b.status()["disputes"]
    assert d["state"] == "open" and "did not settle" in d["reason"] and d["amount"] == 400
    assert route(b, p)[:2] == ("locked", "requested")  # the hold and the queued claim stay
    sim.unblock(x, b)
    sim.unblock(b, x)
    sim.run()
    (d,) = b.status()["disputes"]
    assert d["state"] == "resolved"
    assert route(b, p)[0] == "settled"
    sim.check_quiet()
    after = sim.balances()
    assert after["b"] == before["b"] and after["x"] == before["x"] - 400


def test_claims_of_honest_peers_settle_without_disputes(tmp_path):
    sim, x, b, s = build(tmp_path)
    sim.deposit(s, b, FUNDING)
    sim.deposit(b, x, FUNDING)
    sim.run()
    ps = [sim.pay(x, s, 100 + i) for i in range(5)] + [sim.pay(s, x, 50 + i, meeting_point="mp") for i in range(3)]
    sim.run()
    assert all(p.done for p in ps)
    for n in (x, b, s):
        assert n.status()["disputes"] == []
    sim.check_quiet()


# ---- credit limits ----

def deposit_errors(sim):
    return [e for e in sim.errors if e[2] == "Deposit"]


def channels_of(node, link):
    return node.query("SELECT id, local, remote, state FROM channels WHERE link = ? ORDER BY id", (link,))


def test_peer_deposit_without_a_credit_limit_is_refused_and_both_ends_agree(tmp_path):
    sim = Sim(tmp_path, redeliver=0)
    a, b = sim.node("a"), sim.node("b")
    sim.link(a, b, credit_limit=None)  # nobody set a limit: the default accepts no peer deposit
    sim.deposit(a, b, 1000)
    sim.run()
    ((who, frm, _, reason),) = deposit_errors(sim)
    assert (who, frm) == ("b", "a") and "no credit limit" in reason and "--credit-limit" in reason
    assert PeerError("b", 3, reason[:200]) in a.events
    assert channels_of(a, "b") == [] and channels_of(b, "a") == []  # a removed its channel
    sim.check_quiet()
    # b's operator sets a limit: now the same deposit is accepted on both ends
    with b.tx() as db:
        b.engine.set_credit_limit(db, "a", 1000)
    cid = sim.deposit(a, b, 1000)
    sim.run()
    assert channels_of(a, "b") == [(cid, 1000, 0, "open")] and channels_of(b, "a") == [(cid, 0, 1000, "open")]
    sim.check_quiet()


@pytest.mark.parametrize("amounts, refused", [
    ((2_100_000_000_000_000,), [0]),          # the whole money supply: far beyond the limit
    ((600, 400), []),                         # exactly the limit, in two deposits
    ((600, 401), [1]),                        # the second goes beyond it
])
def test_peer_deposits_beyond_the_credit_limit_are_refused(tmp_path, amounts, refused):
    sim = Sim(tmp_path, redeliver=0)
    a, b = sim.node("a"), sim.node("b")
    sim.link(a, b, credit_limit=1000)
    for amount in amounts:
        sim.deposit(a, b, amount)
    sim.run()
    errors = deposit_errors(sim)
    assert len(errors) == len(refused)
    for e in errors:
        assert "beyond the credit limit 1000" in e[3]
    kept = sorted(amounts[i] for i in range(len(amounts)) if i not in refused)
    assert sorted(r[1] for r in channels_of(a, "b")) == kept
    assert sorted(r[2] for r in channels_of(b, "a")) == kept
    sim.check_quiet()
    with b.store.read() as db:
        (link,) = [row for row in b.engine.status(db)["links"] if row["name"] == "a"]
    assert link["credit_limit"] == 1000 and link["credit_used"] == sum(kept)


def test_withdrawn_peer_channels_free_their_credit(tmp_path):
    sim = Sim(tmp_path, redeliver=0)
    a, b = sim.node("a"), sim.node("b")
    sim.link(a, b, credit_limit=1000)
    cid = sim.deposit(a, b, 1000)
    sim.run()
    with a.tx() as db:
        a.engine.withdraw(db, "b", cid)
    sim.deposit(a, b, 1000)
    sim.run()
    assert deposit_errors(sim) == []
    sim.check_quiet()


def test_refused_deposit_that_a_route_already_reserved_on_backtracks_the_route(tmp_path):
    sim = Sim(tmp_path, redeliver=0, auto_cancel=True)
    a, b, c = sim.node("a"), sim.node("b", ["mp"]), sim.node("c", external_meeting_points=["mp"])
    sim.link(a, b, credit_limit=None)
    sim.link(b, c)
    sim.deposit(b, c, 1000)
    sim.deposit(c, b, 1000)
    sim.run()
    sim.deposit(a, b, 500)  # refused by b; before the Error comes back a routes over it
    p = sim.pay(a, c, 50, meeting_point="mp")
    sim.run()
    assert deposit_errors(sim)
    assert channels_of(a, "b") == [] and p.failed and not p.settled
    sim.advance(30)
    sim.run()
    sim.check_quiet()


def test_credit_limit_is_checked_and_needs_a_link(tmp_path):
    sim = Sim(tmp_path)
    a = sim.node("a")
    for bad in (-1, MAX_AMOUNT + 1, True, 1.5, "5"):
        with pytest.raises(AmikoError, match="credit limit"):
            with a.tx() as db:
                a.engine.add_link(db, "b")
                a.engine.set_credit_limit(db, "b", bad)
    with pytest.raises(AmikoError, match="no link named"):
        with a.tx() as db:
            a.engine.set_credit_limit(db, "nobody", 5)


def test_channels_of_a_node_stay_within_the_money_supply(tmp_path):
    sim = Sim(tmp_path, redeliver=0)
    a, b, c = sim.node("a"), sim.node("b"), sim.node("c")
    sim.link(a, b, credit_limit=MAX_AMOUNT)
    sim.link(a, c, credit_limit=MAX_AMOUNT)
    sim.deposit(a, b, MAX_AMOUNT - 10)
    sim.run()
    with pytest.raises(AmikoError, match="in all, beyond"):
        sim.deposit(a, c, 11)
    sim.deposit(c, a, 11)  # within c's bound and a's credit limit, but a's channels would exceed it
    sim.run()
    assert [e[:2] for e in deposit_errors(sim) if "in all, beyond" in e[3]] == [("a", "c")]
    assert channels_of(c, "a") == []
    sim.check_quiet()
