"""Firing the stored timers of route entries, and purging old tombstones.

Every timer is a row of table timers (routing.SCHEMA): (txid, side, kind, due). They are
stored with the state change that arms them, so they survive a crash: a node that restarts
fires what fell due while it was down. The daemon fires each due timer in its own store
transaction through Engine.fire_timer(db, txid, side, kind, now); tests pass a fake clock.
Firing is idempotent: the row is deleted in the transaction that acts on it, and a timer
whose entry moved on (another state than the one it guards) is just dropped.

What a timer does when it fires (reason texts name the phase and the node):
- 'route' (entry 'routing' or 'waiting' after route_timeout): this node gives up the search:
  both holds are released, CancelRoute goes down (if a MakeRoute is out), HaveNoRoute goes
  up (the upstream tries its next candidate) and the entry becomes a 'failed' tombstone.
  At an endpoint the payment is cancelled ("time-out while routing to meeting point MP (at
  node N)") and ("route_failed", txid, side, reason) is emitted. The reason names no side:
  a half is routed only once both halves met at the meeting point, so an endpoint cannot
  tell whether its own half or the other one stalled.
- 'lock' (entry 'routed' after lock_timeout): this node forgets the route: holds released,
  CancelRoute down, entry 'cancelled'. Nothing goes up: the upstream has its own lock timer,
  and a Lock it sends later is answered with SettleRollback (settlement.on_lock). At an
  endpoint the payment is cancelled and ("rolled_back", txid, side, reason) is emitted.
- 'commit' (entry 'locked' when the out leg's deadline passes, or the payee's in-leg
  deadline): settlement.rollback: the out hold is dropped, the in hold given up with
  SettleRollback toward the payer. A leg that learned the token (requested/settled) is
  never rolled back: the timer is dropped and the claim stands.
- 'claim' (an in leg 'requested', at its deadline) and 'resend' (a refused claim before it):
  amiko.node.claims.fire: RequestCommit again, or a dispute once the deadline has passed.

purge(eng, db, now, retention): deletes route entries that ended ('settled', 'failed',
'cancelled', 'rolled_back') more than retention seconds ago and hold nothing, tokens of
transactions no entry refers to any more, and timers without an entry. Payment history
(payments, requests) is kept. The default retention (hours) is far beyond any deadline a
node accepts, so nothing can still arrive for a purged entry except hostile input (refused
as for an unknown transaction).
"""

import logging

from amiko_core import messages as m
from amiko_core.errors import AmikoError

from amiko.node import claims, endpoints, routing, settlement
from amiko.node import events
from amiko.node.events import Event
from amiko.node.routing import ROLES, get, release_leg, txid_text, update

log = logging.getLogger("amiko.timeouts")

KINDS = ("route", "lock", "commit") + claims.KINDS


def next_due(db):
    row = db.execute("SELECT MIN(due) FROM timers").fetchone()
    return None if row is None or row[0] is None else row[0]


def due(db, now, limit=None):
    sql = "SELECT txid, side, kind, due FROM timers WHERE due <= ? ORDER BY due"
    args = [now]
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    return [{"txid": r[0], "side": r[1], "kind": r[2], "due": r[3]} for r in db.execute(sql, args).fetchall()]


def fire(eng, db, txid, side, kind, now):
    """Fire one timer if it is (still) due at now; returns True if a timer row was consumed."""
    row = db.execute("SELECT due FROM timers WHERE txid = ? AND side = ? AND kind = ?", (txid, side, kind)).fetchone()
    if row is None or row[0] > now:
        return False
    db.execute("DELETE FROM timers WHERE txid = ? AND side = ? AND kind = ?", (txid, side, kind))
    r = get(db, txid, side)
    if r is None:
        return True
    where = "at node %s" % eng.cfg.name
    if kind == "route" and r["state"] in ("routing", "waiting"):
        log.info("route time-out for %s/%d", txid_text(txid), side)
        give_up_route(eng, db, r, "time-out while routing to meeting point %s (%s)" % (r["meeting_point"], where))
    elif kind == "lock" and r["state"] == "routed":
        log.info("lock time-out for %s/%d", txid_text(txid), side)
        forget_route(eng, db, r, "time-out waiting for the lock (%s)" % where)
    elif kind == "commit" and r["state"] == "locked":
        log.info("commit deadline passed for %s/%d", txid_text(txid), side)
        try:
            settlement.rollback(eng, db, txid, side,
                                "rolled back: no commit token before the deadline (%s)" % where)
        except AmikoError as e:
            log.info("commit timer of %s/%d: %s", txid_text(txid), side, e.reason)
    elif kind in claims.KINDS and r["state"] == "locked":
        claims.fire(eng, db, r, kind, now)
    return True


def _release_and_cancel_down(eng, db, r):
    had_down = release_leg(db, r, "down")
    release_leg(db, r, "up")
    if had_down:
        eng.send(db, r["down_link"], m.Message(m.CANCEL_ROUTE, txid=r["txid"], side=r["side"]))


def give_up_route(eng, db, r, reason):
    """Route time-out: no route through this node (see module doc)."""
    _release_and_cancel_down(eng, db, r)
    update(eng, db, r, state="failed", reason=reason)
    routing.clear_timers(db, r)
    if r["up_link"] is not None:
        eng.send(db, r["up_link"], m.Message(m.HAVE_NO_ROUTE, txid=r["txid"], side=r["side"]))
    else:
        endpoints.payment_outcome(db, r["txid"], "cancelled", eng.now(), reason=reason, role=ROLES[r["side"]])
        eng.emit(db, Event(events.ROUTE_FAILED, r["txid"], r["side"], reason))


def forget_route(eng, db, r, reason):
    """Lock time-out: forget the routed, unlocked entry (see module doc)."""
    _release_and_cancel_down(eng, db, r)
    update(eng, db, r, state="cancelled", reason=reason)
    routing.clear_timers(db, r)
    if r["up_link"] is None:
        endpoints.payment_outcome(db, r["txid"], "cancelled", eng.now(), reason=reason, role=ROLES[r["side"]])
        eng.emit(db, Event(events.ROLLED_BACK, r["txid"], r["side"], reason))


def purge(eng, db, now, retention):
    """Delete old tombstones (see module doc); returns the number of route entries deleted."""
    cutoff = int(now - retention)
    marks = ", ".join("?" * len(routing.ENDED))
    n = db.execute(
        "DELETE FROM routes WHERE state IN (%s) AND updated < ? AND NOT EXISTS "
        "(SELECT 1 FROM holds h WHERE h.txid = routes.txid AND h.side = routes.side)" % marks,
        routing.ENDED + (cutoff,)).rowcount
    if n:
        db.execute("DELETE FROM tokens WHERE txid NOT IN (SELECT txid FROM routes)")
        db.execute("DELETE FROM claims WHERE NOT EXISTS "
                   "(SELECT 1 FROM routes r WHERE r.txid = claims.txid AND r.side = claims.side)")
        db.execute("DELETE FROM claim_refusals WHERE NOT EXISTS (SELECT 1 FROM routes r "
                   "WHERE r.txid = claim_refusals.txid AND r.side = claim_refusals.side)")
        db.execute("DELETE FROM timers WHERE NOT EXISTS "
                   "(SELECT 1 FROM routes r WHERE r.txid = timers.txid AND r.side = timers.side)")
        log.info("purged %d ended route entries older than %d s", n, retention)
    return n
