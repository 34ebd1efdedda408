"""Routing toward a meeting point: route entries, depth-first search with backtracking, joining.

A route entry is this node's part of one half of a payment, keyed (txid, side); side 0 is
the payer side (MakeRoute travels payer -> meeting point), side 1 the payee side (MakeRoute
travels payee -> meeting point). "up" is where the MakeRoute came from (none at the
endpoint that started it), "down" is where this node forwarded it (none at the meeting
point). Money flows payer -> meeting point -> payee, so per side:

    side 0: up leg = 'in' (the upstream peer pays us), down leg = 'out' (we pay downstream)
    side 1: up leg = 'out' (we pay the payee-ward peer), down leg = 'in'

On a channel, the party that will pay is the one that must have the funds:
    side 0: the MakeRoute sender reserves 'out' before sending; the receiver records 'in'
            (a receiver that cannot is being lied to: AmikoError);
    side 1: the MakeRoute sender records a proposed 'in' hold (a guess from its view of the
            peer's funds, confirmed by the HaveRoute that comes back); the receiver reserves
            'out', or answers HaveNoRoute when it cannot. Proposals do not count against the
            peer's funds when the peer itself reserves (side 0), so the two cannot deadlock.

Table routes (SCHEMA): txid, side, amount, meeting_point, state, at_mp, for each leg
(up_, down_): link, channel, status, deadline; tried (JSON list of "link/channel" already
tried as down), reason, created, updated.
    state: 'routing' (a MakeRoute is out, or the search is at an endpoint) | 'waiting' (at the
    meeting point, for the other half) | 'routed' | 'locked' | 'settled' | 'failed' (no route
    through here: a tombstone, so the same (txid, side) is refused again: loop prevention
    and a node-visited-once search) | 'cancelled' | 'rolled_back'
    leg status: 'proposed' | 'reserved' | 'locked' | 'requested' (in leg: RequestCommit sent) | 'settled' |
    'rolled_back' | 'released' (hold dropped while routing or by CancelRoute)

Deadlines (unix seconds): the payee endpoint's MakeRoute carries now + route_timeout +
lock_timeout (rounded up; the lock may follow a whole routing phase of the payer's half), each
payee-side hop forwards its up deadline + timeout_increment; the meeting point answers the
payer side with HaveRoute{deadline = payee-side deadline + increment} and each payer-side
hop adds the increment going up. A leg's deadline is the commit deadline on that channel.
Peer deadlines above now + max_deadline_window are refused (MakeRoute: HaveNoRoute;
HaveRoute: AmikoError).

Timers (table timers(txid, side, kind, due)): 'route' while routing (route_timeout),
'lock' once routed (lock_timeout; at the payer endpoint route_timeout + lock_timeout, since
it also waits for the payee's half), 'commit' once locked (the out leg's deadline). They are
recorded and cleared here and in settlement; amiko.node.timeouts fires them. `due` of route
and lock timers is a float (local clock, sub-second); deadlines on the wire are whole seconds
(rounded up).

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

from amiko.node import channels
from amiko.node import disputes
from amiko.node import endpoints
from amiko.node import events
from amiko.node.events import Event
from amiko.node import meetingpoints
from amiko.node import store as _store

log = logging.getLogger("amiko.routing")

SCHEMA = """
CREATE TABLE IF NOT EXISTS routes (
    txid          BLOB NOT NULL,
    side          INTEGER NOT NULL CHECK (side IN (0, 1)),
    amount        INTEGER NOT NULL,
    meeting_point TEXT NOT NULL,
    state         TEXT NOT NULL,
    at_mp         INTEGER NOT NULL DEFAULT 0,
    up_link       TEXT,
    up_channel    INTEGER,
    up_status     TEXT,
    up_deadline   INTEGER,
    down_link     TEXT,
    down_channel  INTEGER,
    down_status   TEXT,
    down_deadline INTEGER,
    tried         TEXT NOT NULL DEFAULT '[]',
    reason        TEXT,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    PRIMARY KEY (txid, side)
);
CREATE INDEX IF NOT EXISTS routes_up ON routes (up_link, state);
CREATE INDEX IF NOT EXISTS routes_down ON routes (down_link, state);
CREATE TABLE IF NOT EXISTS timers (
    txid BLOB NOT NULL,
    side INTEGER NOT NULL,
    kind TEXT NOT NULL,
    due  INTEGER NOT NULL,
    PRIMARY KEY (txid, side, kind)
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due);
"""

_store.register_schema(SCHEMA)

COLUMNS = ("txid", "side", "amount", "meeting_point", "state", "at_mp",
           "up_link", "up_channel", "up_status", "up_deadline",
           "down_link", "down_channel", "down_status", "down_deadline",
           "tried", "reason", "created", "updated")
ACTIVE = ("routing", "waiting", "routed", "locked")
ENDED = ("settled", "failed", "cancelled", "rolled_back")
IN_LEG = ("up", "down")    # indexed by side
OUT_LEG = ("down", "up")
ROLES = ("payer", "payee")  # the endpoint role of each side


def direction(side, leg):
    return "in" if IN_LEG[side] == leg else "out"


def txid_text(txid):
    return txid.hex()[:12]


# ---- rows ----

def get(db, txid, side):
    row = db.execute("SELECT %s FROM routes WHERE txid = ? AND side = ?" % ", ".join(COLUMNS),
                     (txid, side)).fetchone()
    return None if row is None else dict(zip(COLUMNS, row))


def insert(eng, db, **fields):
    now = eng.now()
    fields.setdefault("created", now)
    fields["updated"] = now
    db.execute("INSERT INTO routes (%s) VALUES (%s)" % (", ".join(fields), ", ".join("?" * len(fields))),
               list(fields.values()))
    return get(db, fields["txid"], fields["side"])


def update(eng, db, r, **changes):
    changes["updated"] = eng.now()
    db.execute("UPDATE routes SET %s WHERE txid = ? AND side = ?" % ", ".join("%s = ?" % k for k in changes),
               list(changes.values()) + [r["txid"], r["side"]])
    r.update(changes)


def leg_channel(db, r, leg):
    return channels.require(db, r[leg + "_link"], r[leg + "_channel"])


def set_timer(db, r, kind, due):
    due = round(float(due), 3)
    db.execute("INSERT OR REPLACE INTO timers (txid, side, kind, due) VALUES (?, ?, ?, ?)",
               (r["txid"], r["side"], kind, int(due) if due == int(due) else due))


def clear_timers(db, r, *kinds):
    if not kinds:
        db.execute("DELETE FROM timers WHERE txid = ? AND side = ?", (r["txid"], r["side"]))
    for kind in kinds:
        db.execute("DELETE FROM timers WHERE txid = ? AND side = ? AND kind = ?", (r["txid"], r["side"], kind))


def pending_on_link(db, link):
    """Route entries in progress that use link (either leg)."""
    marks = ", ".join("?" * len(ACTIVE))
    return db.execute(
        "SELECT (SELECT COUNT(*) FROM routes WHERE up_link = ? AND state IN (%s)) + "
        "(SELECT COUNT(*) FROM routes WHERE down_link = ? AND state IN (%s))" % (marks, marks),
        (link,) + ACTIVE + (link,) + ACTIVE).fetchone()[0]


def release_leg(db, r, leg, status="released"):
    """Drop the hold of a leg that is proposed, reserved or locked; returns True if there was one."""
    if r[leg + "_link"] is None or r[leg + "_status"] not in ("proposed", "reserved", "locked"):
        return False
    leg_channel(db, r, leg).rollback(r["txid"], r["side"])
    r[leg + "_status"] = status
    db.execute("UPDATE routes SET %s_status = ? WHERE txid = ? AND side = ?" % leg, (status, r["txid"], r["side"]))
    return True


# ---- starting and receiving routes ----

def start(eng, db, txid, side, amount, meeting_point):
    """An endpoint starts routing its half toward meeting_point."""
    if type(txid) is not bytes or len(txid) != 20:
        raise AmikoError("transaction id must be 20 bytes")
    if side not in (0, 1) or type(side) is not int:
        raise AmikoError("side must be 0 (payer) or 1 (payee), got %r" % (side,))
    channels.check_amount(amount)
    endpoints.check_meeting_point(meeting_point)
    if get(db, txid, side) is not None:
        raise AmikoError("transaction %s side %d is routed by this node already" % (txid_text(txid), side))
    r = insert(eng, db, txid=txid, side=side, amount=amount, meeting_point=meeting_point, state="routing")
    set_timer(db, r, "route", eng.clock() + eng.cfg.route_timeout)
    if meeting_point in eng.own_meeting_points(db):
        reach_meeting_point(eng, db, r)
    else:
        advance(eng, db, r)
    return r


def on_make_route(eng, db, link, msg):
    txid, side, amount = msg.txid, msg.side, msg.amount
    ch = channels.load(db, link, msg.channel)
    if ch is None:
        raise AmikoError("MakeRoute on channel %d, which link %s does not have" % (msg.channel, link))
    refusal = None
    if get(db, txid, side) is not None:
        refusal = "this node carries the transaction already (loop)"
    elif meetingpoints.problem(msg.meeting_point):
        refusal = "meeting point id %s" % meetingpoints.problem(msg.meeting_point)
    elif ch.state != "open":
        refusal = "channel %d is %s" % (ch.id, ch.state)
    elif disputes.is_open(db, link, ch.id):
        refusal = "channel %d has an open dispute" % ch.id
    elif not eng.link_has_room(db, link):
        refusal = "link %s has too many pending payments" % link
    elif side == 1:
        if msg.deadline is None:
            raise AmikoError("payee-side MakeRoute without a deadline")
        if not eng.deadline_acceptable(msg.deadline):
            refusal = "deadline %d is beyond this node's policy" % msg.deadline
        elif ch.available_out() < amount:
            refusal = "%s: only %d available" % (ch.describe(), ch.available_out())
    elif ch.available_in() < amount:
        raise AmikoError("MakeRoute reserves %d on %s, but the peer has only %d available there"
                         % (amount, ch.describe(), ch.available_in()))
    if refusal is not None:
        log.info("HaveNoRoute to %s for %s/%d: %s", link, txid_text(txid), side, refusal)
        eng.send(db, link, m.Message(m.HAVE_NO_ROUTE, txid=txid, side=side))
        return
    ch.reserve(txid, side, direction(side, "up"), amount)
    r = insert(eng, db, txid=txid, side=side, amount=amount, meeting_point=msg.meeting_point, state="routing",
               up_link=link, up_channel=ch.id, up_status="reserved",
               up_deadline=msg.deadline if side == 1 else None)
    set_timer(db, r, "route", eng.clock() + eng.cfg.route_timeout)
    if msg.meeting_point in eng.own_meeting_points(db):
        reach_meeting_point(eng, db, r)
    else:
        advance(eng, db, r)


def candidates(eng, db, r):
    """Channels still worth trying as the down leg of r, in trial order (link name, then id):
    open, not on the upstream link, not tried yet, able to carry the amount as far as this
    node can tell, on a link below its bounds."""
    tried = set(json.loads(r["tried"]))
    want = direction(r["side"], "down")
    for link, cid in channels.open_channels(db, exclude_link=r["up_link"]):
        if "%s/%d" % (link, cid) in tried:
            continue
        ch = channels.load(db, link, cid)
        available = ch.available_out() if want == "out" else ch.unclaimed_in()
        if available >= r["amount"] and eng.link_has_room(db, link):
            yield ch


def advance(eng, db, r, note=None):
    """Try the next candidate for the down leg (depth-first search), or give up (note: why the
    last way failed, for the reason)."""
    side = r["side"]
    for ch in candidates(eng, db, r):
        if side == 0:
            ch.reserve(r["txid"], side, "out", r["amount"])
        else:
            ch.propose(r["txid"], side, r["amount"])
        tried = json.loads(r["tried"]) + ["%s/%d" % (ch.link, ch.id)]
        deadline = None
        if side == 1:
            # At the payee the lock may come a whole routing phase (the payer's half) plus a
            # lock phase from now.
            deadline = (r["up_deadline"] + eng.increment() if r["up_link"] is not None
                        else eng.deadline_in(eng.cfg.route_timeout + eng.cfg.lock_timeout))
        update(eng, db, r, state="routing", down_link=ch.link, down_channel=ch.id,
               down_status="reserved" if side == 0 else "proposed",
               down_deadline=deadline, tried=json.dumps(tried))
        eng.send(db, ch.link, m.Message(m.MAKE_ROUTE, txid=r["txid"], side=side, amount=r["amount"],
                                        meeting_point=r["meeting_point"], channel=ch.id, deadline=deadline))
        return
    reason = "no route to meeting point %s on the %s side" % (r["meeting_point"], ROLES[side])
    fail(eng, db, r, reason if note is None else "%s (%s)" % (reason, note))


def fail(eng, db, r, reason):
    """No route through this node: release, leave a tombstone, tell upstream (or the endpoint)."""
    release_leg(db, r, "up")
    release_leg(db, r, "down")
    update(eng, db, r, state="failed", reason=reason, down_link=None, down_channel=None, down_status=None)
    clear_timers(db, r)
    if r["up_link"] is not None:
        eng.send(db, r["up_link"], m.Message(m.HAVE_NO_ROUTE, txid=r["txid"], side=r["side"]))
    else:
        endpoints.payment_outcome(db, r["txid"], "cancelled", eng.now(), reason=reason, role=ROLES[r["side"]])
        eng.emit(db, Event(events.ROUTE_FAILED, r["txid"], r["side"], reason))


def on_have_no_route(eng, db, link, msg):
    r = get(db, msg.txid, msg.side)
    if r is None:
        raise AmikoError("HaveNoRoute for transaction %s side %d, which this node never routed"
                         % (txid_text(msg.txid), msg.side))
    if r["state"] in ENDED:
        return  # crossed our CancelRoute (or this node gave up): the hold is released already
    if r["down_link"] != link:
        raise AmikoError("HaveNoRoute from link %s, but transaction %s side %d was routed to %s"
                         % (link, txid_text(msg.txid), msg.side, r["down_link"]))
    if r["state"] != "routing":
        raise AmikoError("HaveNoRoute for transaction %s side %d, which is %s"
                         % (txid_text(msg.txid), msg.side, r["state"]))
    release_leg(db, r, "down")
    update(eng, db, r, down_link=None, down_channel=None, down_status=None, down_deadline=None)
    advance(eng, db, r)


# ---- the meeting point ----

def reach_meeting_point(eng, db, r):
    update(eng, db, r, state="waiting", at_mp=1)
    other = get(db, r["txid"], 1 - r["side"])
    if other is not None and other["state"] == "waiting" and other["at_mp"]:
        join(eng, db, r, other)


def join(eng, db, newcomer, other):
    e0, e1 = (newcomer, other) if newcomer["side"] == 0 else (other, newcomer)
    if e0["amount"] != e1["amount"]:
        fail(eng, db, newcomer, "the halves disagree on the amount (%d, %d) at the meeting point"
             % (e0["amount"], e1["amount"]))
        return
    base = e1["up_deadline"] if e1["up_link"] is not None else eng.deadline_in(eng.cfg.lock_timeout)
    update(eng, db, e1, state="routed")
    update(eng, db, e0, state="routed",
           up_deadline=base + eng.increment() if e0["up_link"] is not None else None)
    for r in (e0, e1):
        signature = None
        if r["up_link"] is not None:
            signature = meetingpoints.sign_have_route(eng.identity, r["txid"], r["side"], r["meeting_point"],
                                                      r["amount"])
        route_found(eng, db, r, signature)


def route_found(eng, db, r, signature=None):
    """r is routed: tell upstream (passing the meeting point's signature on), or the endpoint."""
    clear_timers(db, r, "route")
    wait = eng.cfg.lock_timeout
    if r["side"] == 0 and r["up_link"] is None:
        # The payer locks once the payee's half is routed too, which may take the payee's
        # route time-out: the payee's failure (cancelled over the payment link) comes first.
        wait += eng.cfg.route_timeout
    set_timer(db, r, "lock", eng.clock() + wait)
    if r["up_link"] is not None:
        eng.send(db, r["up_link"], m.Message(m.HAVE_ROUTE, txid=r["txid"], side=r["side"],
                                             deadline=r["up_deadline"] if r["side"] == 0 else None,
                                             signature=signature))
    else:
        eng.emit(db, Event(events.ROUTE_FOUND, r["txid"], r["side"]))


def on_have_route(eng, db, link, msg):
    r = get(db, msg.txid, msg.side)
    if r is None:
        raise AmikoError("HaveRoute for transaction %s side %d, which this node never routed"
                         % (txid_text(msg.txid), msg.side))
    if r["state"] in ENDED:
        return  # crossed our CancelRoute (sent when this node gave up), which releases the peer's part
    if r["down_link"] != link:
        raise AmikoError("HaveRoute from link %s, but transaction %s side %d was routed to %s"
                         % (link, txid_text(msg.txid), msg.side, r["down_link"]))
    if r["state"] != "routing":
        raise AmikoError("HaveRoute for transaction %s side %d, which is %s"
                         % (txid_text(msg.txid), msg.side, r["state"]))
    forged = meetingpoints.have_route_problem(msg.signature, r["txid"], r["side"], r["meeting_point"], r["amount"])
    if forged:
        refuse_have_route(eng, db, link, r, forged)
        return
    changes = {"state": "routed"}
    if msg.side == 1:
        leg_channel(db, r, "down").confirm(r["txid"], 1)  # the peer did reserve
        changes["down_status"] = "reserved"
    else:
        if msg.deadline is None:
            raise AmikoError("payer-side HaveRoute without a deadline")
        if not eng.deadline_acceptable(msg.deadline):
            raise AmikoError("HaveRoute deadline %d is beyond this node's policy (at most %d)"
                             % (msg.deadline, eng.now() + eng.cfg.max_deadline_window))
        changes["down_deadline"] = msg.deadline
        if r["up_link"] is not None:
            changes["up_deadline"] = msg.deadline + eng.increment()
    update(eng, db, r, **changes)
    route_found(eng, db, r, msg.signature)


def refuse_have_route(eng, db, link, r, why):
    """A HaveRoute that the meeting point did not sign: drop that way (CancelRoute releases the
    peer's part) and search on, as after HaveNoRoute."""
    log.warning("refused HaveRoute from link %s for %s/%d toward meeting point %s: %s",
                link, txid_text(r["txid"]), r["side"], r["meeting_point"], why)
    release_leg(db, r, "down")
    eng.send(db, link, m.Message(m.CANCEL_ROUTE, txid=r["txid"], side=r["side"]))
    update(eng, db, r, down_link=None, down_channel=None, down_status=None, down_deadline=None)
    advance(eng, db, r, "refused a HaveRoute from %s: %s" % (link, why))


# ---- cancelling before lock ----

def cancel(eng, db, r, reason):
    """Drop a route that is not locked: release both legs, pass CancelRoute down."""
    had_down = release_leg(db, r, "down")
    release_leg(db, r, "up")
    update(eng, db, r, state="cancelled", reason=reason)
    clear_timers(db, r)
    if had_down:
        eng.send(db, r["down_link"], m.Message(m.CANCEL_ROUTE, txid=r["txid"], side=r["side"]))


def cancel_endpoint(eng, db, txid, side, reason):
    r = get(db, txid, side)
    if r is None or r["up_link"] is not None:
        raise AmikoError("this node did not start routing transaction %s side %d" % (txid_text(txid), side))
    if r["state"] == "locked":
        raise AmikoError("transaction %s is locked: it can no longer be cancelled" % txid_text(txid))
    if r["state"] in ENDED:
        raise AmikoError("transaction %s side %d has ended already (%s)" % (txid_text(txid), side, r["state"]))
    cancel(eng, db, r, reason)
    endpoints.payment_outcome(db, txid, "cancelled", eng.now(), reason=reason, role=ROLES[side])


def on_cancel_route(eng, db, link, msg):
    r = get(db, msg.txid, msg.side)
    if r is None or r["up_link"] != link or r["state"] in ENDED:
        # Crossed our HaveNoRoute (we refused it, or failed since): nothing of it is left here.
        log.info("CancelRoute from %s for %s/%d: nothing to cancel", link, txid_text(msg.txid), msg.side)
        return
    if r["state"] == "locked":
        raise AmikoError("CancelRoute for transaction %s side %d, which is locked" % (txid_text(msg.txid), msg.side))
    cancel(eng, db, r, "cancelled by link %s" % link)
