"""Locking, committing and rolling back a routed payment at one node.

Each route entry has an in leg (where money comes from: side 0 up, side 1 down) and an out
leg (where it goes: side 0 down, side 1 up); see routing. Order of events at a node:

Lock{txid, side, amount} travels payer -> payee: it arrives on the in leg of a 'routed'
entry (or starts at the payer endpoint, Engine.lock), locks the in hold and the out hold
and is forwarded on the out leg. At the meeting point the payer-side entry hands over to
the payee-side entry (which has no in leg); at the payee (no out leg) the lock has
arrived: event ("locked", txid, 1), and the payee's node releases the token itself when it
holds the request (config auto_release, default on).

The token (hash160(token) == txid, checked on every entry) commits. A node that learns it
(endpoint release, RequestCommit on an out leg, SettleCommit on an in leg) settles every
locked leg of the transaction it carries: on an out leg it pays (channel commit) and sends
SettleCommit; on an in leg it sends RequestCommit once ('requested') and the peer's
SettleCommit commits it. An entry whose legs are all settled is 'settled' (event
("settled", txid, side)). A token is remembered (table tokens, amiko.node.route) so a leg locked later is
settled at once (route.known_token). A RequestCommit for a leg settled already is a crossing, ignored.

SettleRollback{txid, side, reason} is sent by the party that would be paid on a leg, giving
up its claim: it arrives on the receiver's out leg; the receiver drops that hold, gives up
its own in leg (drops the hold, SettleRollback on it) and so on toward the payer, whose
endpoint ends with ("rolled_back", txid, 0, reason). A leg whose token is known (requested
or settled) is never given up. `rollback(ctx, db, txid, side, reason)` starts this at any
node (the seam for issue 4's time-outs: a passed deadline, a payee that gives up); it also
drops this node's own out hold on that entry without a message (the peer's deadline passes
too). A token arriving after a rollback moves nothing (AmikoError).

Time-outs (amiko.node.timeouts fires the 'commit' timer set when a leg locks): a node whose
out leg's deadline passes without the token rolls back (rollback above). The payee endpoint
has no out leg: its commit timer is its in leg's deadline, and it releases the token only
while that deadline is at least CLAIM_MARGIN seconds away (its RequestCommit must reach the
peer before the peer's own timer fires); a lock that arrives later, or for a request the
payee cancelled, is rolled back at once. A payee that rolls back also cancels its request,
so the token is never released afterwards.

A Lock for a transaction this node has forgotten (its lock timer fired, or the entry ended
otherwise; its tombstone is still there) is answered with SettleRollback on the link it came from: the
sender gives up its locked out leg and the rollback travels on toward the payer. A
SettleRollback for a leg that has ended here already (crossing) is ignored.

Claims (amiko.node.claims): a leg whose token this node knows is claimed with RequestCommit
and never given up before this node's own deadline for it: a peer's Error or silence leaves
the claim standing (RequestCommit is sent again); past the deadline an unsettled claim
becomes a dispute on the channel (amiko.node.disputes).

Developer mode (`amiko node --developer`, control method developer_refuse_settle): links in
ctx.refuse_settle are cheated on purpose, for the attack tests: this node neither pays its
out legs on them when it learns the token nor accepts their RequestCommit (Error).
"""

import logging

from amiko_core import messages as m
from amiko_core import token as tokens
from amiko_core.errors import AmikoError

from amiko.node import claims, endpoints, events, route
from amiko.node.events import Event
from amiko.node.route import IN_LEG, OUT_LEG, Route, txid_text
from amiko.node.routing import leg_channel, release_leg

log = logging.getLogger("amiko.settlement")

CLAIM_MARGIN = 0.5


def _check_token(txid, token, what):
    if not tokens.token_matches(token, txid):
        raise AmikoError("%s: the token does not match transaction %s" % (what, txid_text(txid)))


def _entry_from(db, link, msg, leg_of_side, what):
    """The route entry msg refers to, which must use link as the given leg (IN_LEG or OUT_LEG)."""
    r = Route.load(db, msg.txid, msg.side)
    if r is None:
        raise AmikoError("%s for transaction %s side %d, which this node does not carry"
                         % (what, txid_text(msg.txid), msg.side))
    leg = r.leg(leg_of_side[msg.side])
    if leg.link != link:
        raise AmikoError("%s from link %s, but transaction %s side %d has its %s leg on %s"
                         % (what, link, txid_text(msg.txid), msg.side,
                            "in" if leg_of_side is IN_LEG else "out", leg.link))
    return r


# ---- lock ----

def lock_payer(ctx, db, txid):
    r = Route.load(db, txid, 0)
    if r is None or not r.at_endpoint:
        raise AmikoError("this node is not the payer of transaction %s" % txid_text(txid))
    if not r.accepts(route.LOCK):
        raise AmikoError("transaction %s cannot be locked: its payer-side route is %s" % (txid_text(txid), r.state))
    forward_lock(ctx, db, r)


def on_lock(ctx, db, link, msg):
    r = Route.load(db, msg.txid, msg.side)
    if r is not None and r.ended and r.in_leg.link == link:
        # This node forgot the transaction (lock time-out, cancel): the lock is late.
        why = "%s (%s)" % (r.state, r.reason or "no reason")
        reason = m.cut_reason("late lock rolled back: node %s had forgotten the transaction: %s"
                              % (ctx.config.name, why))
        log.info("Lock from %s for %s/%d: %s", link, txid_text(msg.txid), msg.side, reason)
        ctx.send(db, link, m.Message(m.SETTLE_ROLLBACK, txid=msg.txid, side=msg.side, reason=reason))
        return
    r = _entry_from(db, link, msg, IN_LEG, "Lock")
    r.check(route.LOCK, "Lock")
    if msg.amount != r.amount:
        raise AmikoError("Lock amount %d does not match the route's %d" % (msg.amount, r.amount))
    leg_channel(db, r.in_leg).lock(r.txid, r.side)
    r.in_leg.status = "locked"
    forward_lock(ctx, db, r, "Lock")


def forward_lock(ctx, db, r, what=None):
    """The in leg of r is locked (or absent): lock the out leg and pass the Lock on."""
    txid, side, out = r.txid, r.side, r.out_leg
    r.check(route.LOCK, what)
    if out.link is not None:
        leg_channel(db, out).lock(txid, side)
        out.status = "locked"
    r.apply(db, ctx.now(), route.LOCK, what)
    r.clear_timers(db, "lock")
    if out.link is not None:
        r.set_timer(db, "commit", out.deadline or ctx.deadline_in(ctx.config.lock_timeout))
        ctx.send(db, out.link, m.Message(m.LOCK, txid=txid, side=side, amount=r.amount))
    elif side == 0:
        # The meeting point: the payee half takes the lock over.
        e1 = Route.load(db, txid, 1)
        if e1 is None or e1.state != route.ROUTED or not e1.at_mp:
            rollback_upstream(ctx, db, r, "the meeting point has no payee-side route")
            return
        forward_lock(ctx, db, e1)
        return
    else:
        # The payee endpoint: the lock has arrived.
        deadline = payee_deadline(ctx, db, r)
        request = endpoints.get_request(db, txid=txid)
        if request is not None and request["state"] != "open":
            rollback_upstream(ctx, db, r, "the payee cancelled the payment before the lock arrived")
            return
        if deadline is not None and ctx.clock() > deadline - CLAIM_MARGIN:
            rollback_upstream(ctx, db, r, "the lock reached the payee too late (after its commit deadline)")
            return
        endpoints.payment_outcome(db, txid, "locked", ctx.now(), role="payee")
        ctx.emit(db, Event(events.LOCKED, txid, side))
        if deadline is not None:
            r.set_timer(db, "commit", deadline)
        if ctx.config.auto_release and request is not None and request["state"] == "open":
            learn_token(ctx, db, txid, request["token"])
            return
    token = route.known_token(db, txid)
    if token is not None:
        settle_legs(ctx, db, txid, token)


def payee_deadline(ctx, db, r):
    """The commit deadline of the payee endpoint's entry r (side 1): its in leg's, or at a
    payee that is its own meeting point, the payer-side in leg's minus one increment."""
    if r.down.link is not None:
        return r.down.deadline
    e0 = Route.load(db, r.txid, 0)
    if e0 is not None and e0.up.deadline is not None:
        return e0.up.deadline - ctx.increment()
    return None


# ---- commit ----

def learn_token(ctx, db, txid, token):
    """This node knows the token of txid now: commit every locked leg it carries."""
    _check_token(txid, token, "token")
    token = bytes(token)
    route.remember_token(db, txid, token)
    endpoints.payment_outcome(db, txid, "committed", ctx.now(), token=token)
    settle_legs(ctx, db, txid, token)


def settle_legs(ctx, db, txid, token):
    for side in (0, 1):
        r = Route.load(db, txid, side)
        if r is None or r.state != route.LOCKED:
            continue
        out, inn = r.out_leg, r.in_leg
        if out.link is not None and out.status == "locked" and out.link not in ctx.refuse_settle:
            leg_channel(db, out).commit(txid, r.side)
            out.status = "settled"
            r.save(db, ctx.now())
            ctx.send(db, out.link, m.Message(m.SETTLE_COMMIT, txid=txid, side=r.side, token=token))
        if inn.link is not None and inn.status == "locked":
            claims.request(ctx, db, r, token)
        _check_settled(ctx, db, r)


def _check_settled(ctx, db, r):
    for leg in (r.up, r.down):
        if leg.link is not None and leg.status != "settled":
            return
    r.apply(db, ctx.now(), route.SETTLE)
    r.clear_timers(db)
    ctx.emit(db, Event(events.SETTLED, r.txid, r.side))


def release_token(ctx, db, txid, token):
    """An endpoint learned (payer: Commit{token}) or releases (payee) the token."""
    entries = route.entries(db, txid)
    if not entries:
        raise AmikoError("this node carries no transaction %s" % txid_text(txid))
    if not any(r.state in (route.LOCKED, route.SETTLED) for r in entries):
        raise AmikoError("transaction %s is %s here: the token moves nothing"
                         % (txid_text(txid), "/".join(r.state for r in entries)))
    learn_token(ctx, db, txid, token)


def on_request_commit(ctx, db, link, msg):
    r = _entry_from(db, link, msg, OUT_LEG, "RequestCommit")
    _check_token(msg.txid, msg.token, "RequestCommit")
    if link in ctx.refuse_settle:
        log.warning("DEVELOPER MODE: refusing to settle %s/%d with link %s", txid_text(msg.txid), msg.side, link)
        raise AmikoError("node %s refuses to settle with link %s (developer mode)" % (ctx.config.name, link))
    status = r.out_leg.status
    if status == "settled":
        return  # crossed our SettleCommit
    if status != "locked":
        raise AmikoError("RequestCommit for transaction %s side %d, whose hold here is %s"
                         % (txid_text(msg.txid), msg.side, status))
    learn_token(ctx, db, msg.txid, msg.token)


def on_settle_commit(ctx, db, link, msg):
    r = _entry_from(db, link, msg, IN_LEG, "SettleCommit")
    _check_token(msg.txid, msg.token, "SettleCommit")
    leg = r.in_leg
    if leg.status not in ("locked", "requested"):
        raise AmikoError("SettleCommit for transaction %s side %d, whose hold here is %s"
                         % (txid_text(msg.txid), msg.side, leg.status))
    leg_channel(db, leg).commit(msg.txid, msg.side)
    leg.status = "settled"
    r.save(db, ctx.now())
    claims.settled(ctx, db, r)
    learn_token(ctx, db, msg.txid, msg.token)  # also marks r settled when it is


# ---- rollback ----

def on_settle_rollback(ctx, db, link, msg):
    r = _entry_from(db, link, msg, OUT_LEG, "SettleRollback")
    leg = r.out_leg
    if leg.status in ("rolled_back", "released", None):
        return  # both ends timed out on their own, or crossed our own giving up
    if leg.status == "settled":
        # Our SettleCommit crossed the peer's giving up: it refuses the SettleCommit (its leg
        # is rolled back), so undo our side of the commit and both ends agree again.
        r.check(route.REVERT, "SettleRollback")
        leg_channel(db, leg).revert_commit("out", r.amount)
        reason = m.cut_reason("commit reverted on link %s: the peer had rolled back (%s)" % (link, msg.reason or ""))
        log.error("%s/%d: %s", txid_text(msg.txid), msg.side, reason)
        leg.status = "rolled_back"
        r.apply(db, ctx.now(), route.REVERT, "SettleRollback", reason)
        r.clear_timers(db)
        return
    if leg.status not in ("reserved", "locked"):
        raise AmikoError("SettleRollback for transaction %s side %d, whose hold here is %s"
                         % (txid_text(msg.txid), msg.side, leg.status))
    r.check(route.ROLLBACK, "SettleRollback")
    release_leg(db, r, leg, "rolled_back")
    rollback_upstream(ctx, db, r, msg.reason or "rolled back by link %s" % link)


def rollback(ctx, db, txid, side, reason):
    """Give up this node's part of (txid, side) from here toward the payer (see module doc)."""
    r = Route.load(db, txid, side)
    if r is None or r.ended:
        raise AmikoError("transaction %s side %d is not pending here" % (txid_text(txid), side))
    if r.out_leg.status in ("requested", "settled") or r.in_leg.status in ("requested", "settled"):
        raise AmikoError("transaction %s is committing: it cannot be rolled back" % txid_text(txid))
    release_leg(db, r, r.out_leg, "rolled_back")
    rollback_upstream(ctx, db, r, reason)


def rollback_upstream(ctx, db, r, reason):
    """r's out leg has ended without payment: give up the in leg, toward the payer."""
    txid, side, inn = r.txid, r.side, r.in_leg
    r.apply(db, ctx.now(), route.ROLLBACK, reason=reason)
    r.clear_timers(db)
    if side == 1 and r.at_endpoint:
        # The token must never be released after this: the claim is given up.
        endpoints.cancel_open_request(db, txid)
        endpoints.payment_outcome(db, txid, "cancelled", ctx.now(), reason=reason, role="payee")
        ctx.emit(db, Event(events.ROLLED_BACK, txid, side, reason))
    if inn.link is not None:
        if inn.status in ("requested", "settled"):
            log.warning("rollback of %s/%d: the in leg is %s, the claim stands", txid_text(txid), side, inn.status)
            return
        if release_leg(db, r, inn, "rolled_back"):
            ctx.send(db, inn.link, m.Message(m.SETTLE_ROLLBACK, txid=txid, side=side, reason=m.cut_reason(reason)))
    elif side == 1:
        e0 = Route.load(db, txid, 0)
        if e0 is not None and e0.at_mp and e0.state in (route.ROUTED, route.LOCKED):
            rollback_upstream(ctx, db, e0, reason)
    else:
        endpoints.payment_outcome(db, txid, "cancelled", ctx.now(), reason=reason, role="payer")
        ctx.emit(db, Event(events.ROLLED_BACK, txid, side, reason))
