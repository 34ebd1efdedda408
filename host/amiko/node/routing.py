"""Routing toward a meeting point: route entries, depth-first search with backtracking, joining.

A route entry (amiko.node.route: keyed (txid, side), an up and a down leg, each the in or
the out leg by side) is this node's part of one half of a payment; this module drives it
through the search, with the engine's narrow context (amiko.node.context.Context) as ctx.

On a channel, the party that will pay is the one that must have the funds:
    side 0: the MakeRoute sender reserves 'out' before sending; the receiver records 'in'
            (a receiver that cannot is being lied to: AmikoError);
    side 1: the MakeRoute sender records a proposed 'in' hold (a guess from its view of the
            peer's funds, confirmed by the HaveRoute that comes back); the receiver reserves
            'out', or answers HaveNoRoute when it cannot. Proposals do not count against the
            peer's funds when the peer itself reserves (side 0), so the two cannot deadlock.

Deadlines (unix seconds): the payee endpoint's MakeRoute carries now + route_timeout +
lock_timeout (rounded up; the lock may follow a whole routing phase of the payer's half), each
payee-side hop forwards its up deadline + timeout_increment; the meeting point answers the
payer side with HaveRoute{deadline = payee-side deadline + increment} and each payer-side
hop adds the increment going up. A leg's deadline is the commit deadline on that channel.
Peer deadlines above now + max_deadline_window are refused (MakeRoute: HaveNoRoute;
HaveRoute: AmikoError).

Timers (route.SCHEMA): 'route' while routing (route_timeout), 'lock' once routed
(lock_timeout; at the payer endpoint route_timeout + lock_timeout, since it also waits for the
payee's half), 'commit' once locked (the out leg's deadline). They are recorded and cleared
here and in settlement; amiko.node.timeouts fires them.

HaveRoute proof: the meeting point signs each half's HaveRoute with the key its id NAME@KEY
names (amiko.node.meetingpoints: txid, side, meeting point, amount); every hop and the
endpoint verify it against the entry's meeting point before accepting, and pass it upstream
unchanged. One that does not verify (missing, another key, other fields, another payment)
is refused with a warning: CancelRoute down that way, and the search goes on as after a
HaveNoRoute (so the half fails cleanly when no other way is left). A MakeRoute toward a
meeting point that is not NAME@KEY is answered HaveNoRoute.

Crossings tolerated (a message meeting an entry that has ended here is ignored, nothing
changes): HaveNoRoute, HaveRoute and CancelRoute for an ended entry (the CancelRoute this
node sent when it gave up follows on the same link and cleans the peer up).
"""


import json
import logging

from amiko_core import messages as m
from amiko_core.errors import AmikoError

from amiko.node import channels, disputes, endpoints, events, meetingpoints, outbox, route
from amiko.node.events import Event
from amiko.node.route import ROLES, Route, txid_text

log = logging.getLogger("amiko.routing")


def direction(side, leg_name):
    return "in" if route.IN_LEG[side] == leg_name else "out"


def leg_channel(db, leg):
    return channels.require(db, leg.link, leg.channel)


def release_leg(db, r, leg, status="released"):
    """Drop the hold of a leg that is proposed, reserved or locked; returns True if there was one."""
    if not leg.held:
        return False
    leg_channel(db, leg).rollback(r.txid, r.side)
    leg.status = status
    r.save_leg(db, leg)
    return True


def own_meeting_points(ctx, db):
    return set(ctx.config.meeting_points) | set(endpoints.stored_meeting_points(db))


def link_has_room(ctx, db, link):
    return (route.pending_on_link(db, link) < ctx.config.max_pending_per_link
            and outbox.pending_count(db, link) < ctx.config.max_outbox_per_link)


def _begin(ctx, db, r):
    r.set_timer(db, "route", ctx.clock() + ctx.config.route_timeout)
    if r.meeting_point in own_meeting_points(ctx, db):
        reach_meeting_point(ctx, db, r)
    else:
        advance(ctx, db, r)


# ---- starting and receiving routes ----

def start(ctx, db, txid, side, amount, meeting_point):
    """An endpoint starts routing its half toward meeting_point."""
    if type(txid) is not bytes or len(txid) != 20:
        raise AmikoError("transaction id must be 20 bytes")
    if side not in (0, 1) or type(side) is not int:
        raise AmikoError("side must be 0 (payer) or 1 (payee), got %r" % (side,))
    channels.check_amount(amount)
    endpoints.check_meeting_point(meeting_point)
    if Route.load(db, txid, side) is not None:
        raise AmikoError("transaction %s side %d is routed by this node already" % (txid_text(txid), side))
    r = Route.make(db, ctx.now(), txid, side, amount, meeting_point)
    _begin(ctx, db, r)
    return r


def on_make_route(ctx, db, link, msg):
    txid, side, amount = msg.txid, msg.side, msg.amount
    ch = channels.load(db, link, msg.channel)
    if ch is None:
        raise AmikoError("MakeRoute on channel %d, which link %s does not have" % (msg.channel, link))
    refusal = None
    if Route.load(db, txid, side) is not None:
        refusal = "this node carries the transaction already (loop)"
    elif meetingpoints.problem(msg.meeting_point):
        refusal = "meeting point id %s" % meetingpoints.problem(msg.meeting_point)
    elif ch.state != "open":
        refusal = "channel %d is %s" % (ch.id, ch.state)
    elif disputes.is_open(db, link, ch.id):
        refusal = "channel %d has an open dispute" % ch.id
    elif not link_has_room(ctx, db, link):
        refusal = "link %s has too many pending payments" % link
    elif side == 1:
        if msg.deadline is None:
            raise AmikoError("payee-side MakeRoute without a deadline")
        if not ctx.deadline_acceptable(msg.deadline):
            refusal = "deadline %d is beyond this node's policy" % msg.deadline
        elif ch.available_out() < amount:
            refusal = "%s: only %d available" % (ch.describe(), ch.available_out())
    elif ch.available_in() < amount:
        raise AmikoError("MakeRoute reserves %d on %s, but the peer has only %d available there"
                         % (amount, ch.describe(), ch.available_in()))
    if refusal is not None:
        log.info("HaveNoRoute to %s for %s/%d: %s", link, txid_text(txid), side, refusal)
        ctx.send(db, link, m.Message(m.HAVE_NO_ROUTE, txid=txid, side=side))
        return
    ch.reserve(txid, side, direction(side, "up"), amount)
    r = Route.make(db, ctx.now(), txid, side, amount, msg.meeting_point,
                   up=(link, ch.id, "reserved", msg.deadline if side == 1 else None))
    _begin(ctx, db, r)


def candidates(ctx, db, r):
    """Channels still worth trying as the down leg of r, in trial order (link name, then id):
    open, not on the upstream link, not tried yet, able to carry the amount as far as this
    node can tell, on a link below its bounds."""
    tried = set(r.tried_ways())
    want = direction(r.side, "down")
    for link, cid in channels.open_channels(db, exclude_link=r.up.link):
        if "%s/%d" % (link, cid) in tried:
            continue
        ch = channels.load(db, link, cid)
        available = ch.available_out() if want == "out" else ch.unclaimed_in()
        if available >= r.amount and link_has_room(ctx, db, link):
            yield ch


def advance(ctx, db, r, note=None):
    """Try the next candidate for the down leg (depth-first search), or give up (note: why the
    last way failed, for the reason)."""
    side = r.side
    for ch in candidates(ctx, db, r):
        if side == 0:
            ch.reserve(r.txid, side, "out", r.amount)
        else:
            ch.propose(r.txid, side, r.amount)
        deadline = None
        if side == 1:
            # At the payee the lock may come a whole routing phase (the payer's half) plus a
            # lock phase from now.
            deadline = (r.up.deadline + ctx.increment() if not r.at_endpoint
                        else ctx.deadline_in(ctx.config.route_timeout + ctx.config.lock_timeout))
        r.down.link, r.down.channel, r.down.deadline = ch.link, ch.id, deadline
        r.down.status = "reserved" if side == 0 else "proposed"
        r.tried = json.dumps(r.tried_ways() + ["%s/%d" % (ch.link, ch.id)])
        r.save(db, ctx.now())
        ctx.send(db, ch.link, m.Message(m.MAKE_ROUTE, txid=r.txid, side=side, amount=r.amount,
                                        meeting_point=r.meeting_point, channel=ch.id, deadline=deadline))
        return
    reason = "no route to meeting point %s on the %s side" % (r.meeting_point, ROLES[side])
    fail(ctx, db, r, reason if note is None else "%s (%s)" % (reason, note))


def retry(ctx, db, r, what=None, note=None):
    """The down leg's way is closed (its hold given up already, or dropped here): search on."""
    r.check(route.RETRY, what)
    release_leg(db, r, r.down)
    r.down.clear()
    r.apply(db, ctx.now(), route.RETRY, what)
    advance(ctx, db, r, note)


def _drop_holds(ctx, db, r):
    """Release both holds of an entry that is not locked; CancelRoute down if a MakeRoute is out."""
    had_down = release_leg(db, r, r.down)
    release_leg(db, r, r.up)
    if had_down:
        ctx.send(db, r.down.link, m.Message(m.CANCEL_ROUTE, txid=r.txid, side=r.side))


def fail(ctx, db, r, reason):
    """No route through this node (the search is exhausted, the halves disagree at the meeting
    point, or the route time-out): release, leave a 'failed' tombstone, tell upstream
    (HaveNoRoute: it tries its next way) or the endpoint (ROUTE_FAILED)."""
    r.check(route.FAIL)
    _drop_holds(ctx, db, r)
    r.apply(db, ctx.now(), route.FAIL, reason=reason)
    r.clear_timers(db)
    if not r.at_endpoint:
        ctx.send(db, r.up.link, m.Message(m.HAVE_NO_ROUTE, txid=r.txid, side=r.side))
    else:
        endpoints.payment_outcome(db, r.txid, "cancelled", ctx.now(), reason=reason, role=ROLES[r.side])
        ctx.emit(db, Event(events.ROUTE_FAILED, r.txid, r.side, reason))


def _entry_on_down(db, link, msg, what):
    """The entry a HaveNoRoute/HaveRoute refers to; None if it has ended (a crossing)."""
    r = Route.load(db, msg.txid, msg.side)
    if r is None:
        raise AmikoError("%s for transaction %s side %d, which this node never routed"
                         % (what, txid_text(msg.txid), msg.side))
    if r.ended:
        return None
    if r.down.link != link:
        raise AmikoError("%s from link %s, but transaction %s side %d was routed to %s"
                         % (what, link, txid_text(msg.txid), msg.side, r.down.link))
    return r


def on_have_no_route(ctx, db, link, msg):
    r = _entry_on_down(db, link, msg, "HaveNoRoute")
    if r is None:
        return  # crossed our CancelRoute (or this node gave up): the hold is released already
    retry(ctx, db, r, "HaveNoRoute")


# ---- the meeting point ----

def reach_meeting_point(ctx, db, r):
    r.at_mp = 1
    r.apply(db, ctx.now(), route.REACH)
    other = Route.load(db, r.txid, 1 - r.side)
    if other is not None and other.state == route.WAITING and other.at_mp:
        join(ctx, db, r, other)


def join(ctx, db, newcomer, other):
    e0, e1 = (newcomer, other) if newcomer.side == 0 else (other, newcomer)
    if e0.amount != e1.amount:
        fail(ctx, db, newcomer, "the halves disagree on the amount (%d, %d) at the meeting point"
             % (e0.amount, e1.amount))
        return
    base = e1.up.deadline if not e1.at_endpoint else ctx.deadline_in(ctx.config.lock_timeout)
    e1.apply(db, ctx.now(), route.ROUTE)
    if not e0.at_endpoint:
        e0.up.deadline = base + ctx.increment()
    e0.apply(db, ctx.now(), route.ROUTE)
    for r in (e0, e1):
        signature = None
        if not r.at_endpoint:
            signature = meetingpoints.sign_have_route(ctx.identity, r.txid, r.side, r.meeting_point, r.amount)
        route_found(ctx, db, r, signature)


def route_found(ctx, db, r, signature=None):
    """r is routed: tell upstream (passing the meeting point's signature on), or the endpoint."""
    r.clear_timers(db, "route")
    wait = ctx.config.lock_timeout
    if r.side == 0 and r.at_endpoint:
        # The payer locks once the payee's half is routed too, which may take the payee's
        # route time-out: the payee's failure (cancelled over the payment link) comes first.
        wait += ctx.config.route_timeout
    r.set_timer(db, "lock", ctx.clock() + wait)
    if not r.at_endpoint:
        ctx.send(db, r.up.link, m.Message(m.HAVE_ROUTE, txid=r.txid, side=r.side,
                                          deadline=r.up.deadline if r.side == 0 else None,
                                          signature=signature))
    else:
        ctx.emit(db, Event(events.ROUTE_FOUND, r.txid, r.side))


def on_have_route(ctx, db, link, msg):
    r = _entry_on_down(db, link, msg, "HaveRoute")
    if r is None:
        return  # crossed our CancelRoute (sent when this node gave up), which releases the peer's part
    r.check(route.ROUTE, "HaveRoute")
    forged = meetingpoints.have_route_problem(msg.signature, r.txid, r.side, r.meeting_point, r.amount)
    if forged:
        refuse_have_route(ctx, db, link, r, forged)
        return
    if msg.side == 1:
        leg_channel(db, r.down).confirm(r.txid, 1)  # the peer did reserve
        r.down.status = "reserved"
    else:
        if msg.deadline is None:
            raise AmikoError("payer-side HaveRoute without a deadline")
        if not ctx.deadline_acceptable(msg.deadline):
            raise AmikoError("HaveRoute deadline %d is beyond this node's policy (at most %d)"
                             % (msg.deadline, ctx.now() + ctx.config.max_deadline_window))
        r.down.deadline = msg.deadline
        if not r.at_endpoint:
            r.up.deadline = msg.deadline + ctx.increment()
    r.apply(db, ctx.now(), route.ROUTE, "HaveRoute")
    route_found(ctx, db, r, msg.signature)


def refuse_have_route(ctx, db, link, r, why):
    """A HaveRoute that the meeting point did not sign: drop that way (CancelRoute releases the
    peer's part) and search on, as after HaveNoRoute."""
    log.warning("refused HaveRoute from link %s for %s/%d toward meeting point %s: %s",
                link, txid_text(r.txid), r.side, r.meeting_point, why)
    release_leg(db, r, r.down)
    ctx.send(db, link, m.Message(m.CANCEL_ROUTE, txid=r.txid, side=r.side))
    retry(ctx, db, r, "HaveRoute", "refused a HaveRoute from %s: %s" % (link, why))


# ---- cancelling before lock ----

def cancel(ctx, db, r, reason, what=None, tell=False):
    """Drop an entry that is not locked (an endpoint's cancel, CancelRoute, the lock time-out):
    release both holds, CancelRoute down; at an endpoint the payment is cancelled, and with
    tell (the lock time-out: the endpoint did not ask for it) ROLLED_BACK is emitted."""
    r.check(route.CANCEL, what)
    _drop_holds(ctx, db, r)
    r.apply(db, ctx.now(), route.CANCEL, what, reason)
    r.clear_timers(db)
    if r.at_endpoint:
        endpoints.payment_outcome(db, r.txid, "cancelled", ctx.now(), reason=reason, role=ROLES[r.side])
        if tell:
            ctx.emit(db, Event(events.ROLLED_BACK, r.txid, r.side, reason))


def cancel_endpoint(ctx, db, txid, side, reason):
    r = Route.load(db, txid, side)
    if r is None or not r.at_endpoint:
        raise AmikoError("this node did not start routing transaction %s side %d" % (txid_text(txid), side))
    if not r.accepts(route.CANCEL):
        if r.state == route.LOCKED:
            raise AmikoError("transaction %s is locked: it can no longer be cancelled" % txid_text(txid))
        raise AmikoError("transaction %s side %d has ended already (%s)" % (txid_text(txid), side, r.state))
    cancel(ctx, db, r, reason)


def on_cancel_route(ctx, db, link, msg):
    r = Route.load(db, msg.txid, msg.side)
    if r is None or r.up.link != link or r.ended:
        # Crossed our HaveNoRoute (we refused it, or failed since): nothing of it is left here.
        log.info("CancelRoute from %s for %s/%d: nothing to cancel", link, txid_text(msg.txid), msg.side)
        return
    cancel(ctx, db, r, "cancelled by link %s" % link, "CancelRoute")
