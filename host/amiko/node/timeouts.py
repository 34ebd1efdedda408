"""Firing the stored timers of route entries, and purging old tombstones.

Every timer is a row of table timers (amiko.node.route): (txid, side, kind, due). They are
stored with the state change that arms them, so they survive a crash: a node that restarts
fires what fell due while it was down. The daemon fires each due timer in its own store
transaction through Engine.fire_timer(db, txid, side, kind, now); tests pass a fake clock.
Firing is idempotent: the row is deleted in the transaction that acts on it, and a timer
whose entry moved on (another state than the one it guards) is just dropped.

What a timer does when it fires (reason texts name the phase and the node):
- 'route' (entry 'routing' or 'waiting' after route_timeout): this node gives up the search
  (routing.fail, as when no way is left): both holds are released, CancelRoute goes down (if
  a MakeRoute is out), HaveNoRoute goes up (the upstream tries its next candidate) and the
  entry becomes a 'failed' tombstone.
  At an endpoint the payment is cancelled ("time-out while routing to meeting point MP (at
  node N)") and ("route_failed", txid, side, reason) is emitted. The reason names no side:
  a half is routed only once both halves met at the meeting point, so an endpoint cannot
  tell whether its own half or the other one stalled.
- 'lock' (entry 'routed' after lock_timeout): this node forgets the route (routing.cancel,
  as an endpoint's own cancel or a CancelRoute): holds released, CancelRoute down, entry
  'cancelled'. Nothing goes up: the upstream has its own lock timer,
  and a Lock it sends later is answered with SettleRollback (settlement.on_lock). At an
  endpoint the payment is cancelled and ("rolled_back", txid, side, reason) is emitted.
- 'commit' (entry 'locked' when the out leg's deadline passes, or the payee's in-leg
  deadline): settlement.rollback: the out hold is dropped, the in hold given up with
  SettleRollback toward the payer. A leg that learned the token (requested/settled) is
  never rolled back: the timer is dropped and the claim stands.
- 'claim' (an in leg 'requested', at its deadline) and 'resend' (a refused claim before it):
  amiko.node.claims.fire: RequestCommit again, or a dispute once the deadline has passed.

Purging (Engine.purge): route entries that ended ('settled', 'failed', 'cancelled',
'rolled_back') more than tombstone_retention seconds ago and hold nothing are deleted by their
owner (route.purge, with the tokens and timers no entry refers to any more), then the claims of
the entries gone (claims.purge). Payment history (payments, requests) is kept. The default
retention (hours) is far beyond any deadline a node accepts, so nothing can still arrive for a
purged entry except hostile input (refused as for an unknown transaction).
"""

import logging

from amiko_core.errors import AmikoError

from amiko.node import claims, routing, route, settlement
from amiko.node.route import Route, txid_text

log = logging.getLogger("amiko.timeouts")

# the states in which each kind of timer still guards its entry; in any other it is dropped
GUARDS = {"route": (route.ROUTING, route.WAITING), "lock": (route.ROUTED,), "commit": (route.LOCKED,)}
GUARDS.update((kind, (route.LOCKED,)) for kind in claims.KINDS)
KINDS = tuple(GUARDS)


def fire(ctx, db, txid, side, kind, now):
    """Fire one timer if it is (still) due at now; returns True if a timer row was consumed."""
    if not route.take_timer(db, txid, side, kind, now):
        return False
    r = Route.load(db, txid, side)
    if r is None or r.state not in GUARDS.get(kind, ()):
        return True
    where = "at node %s" % ctx.config.name
    if kind == "route":
        log.info("route time-out for %s/%d", txid_text(txid), side)
        routing.fail(ctx, db, r, "time-out while routing to meeting point %s (%s)" % (r.meeting_point, where))
    elif kind == "lock":
        log.info("lock time-out for %s/%d", txid_text(txid), side)
        routing.cancel(ctx, db, r, "time-out waiting for the lock (%s)" % where, tell=True)
    elif kind == "commit":
        log.info("commit deadline passed for %s/%d", txid_text(txid), side)
        try:
            settlement.rollback(ctx, db, txid, side, "rolled back: no commit token before the deadline (%s)" % where)
        except AmikoError as e:
            log.info("commit timer of %s/%d: %s", txid_text(txid), side, e.reason)
    else:
        claims.fire(ctx, db, r, kind, now)
    return True
