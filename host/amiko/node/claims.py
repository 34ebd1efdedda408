"""Claims: being paid on an in leg once this node knows the token, never given up early.

A node that knows the token of a transaction (it revealed it as the payee, or learned it
from the next hop and paid there) claims the amount of every locked in leg it carries:
request() marks the leg 'requested', sends RequestCommit and arms the 'claim' timer at the
leg's deadline (this node's own deadline for that claim). The peer's SettleCommit pays it
(settled()). Until the deadline nothing the peer says gives the claim up:

- an Error for one of our RequestCommits (refused()) before the deadline is logged at
  WARNING, the claim stands, and RequestCommit is sent again (a new message through the
  durable outbox, timer 'resend') every RESEND seconds (at least; one timeout increment)
  while the deadline is ahead; an honest peer that crossed our claim settles on any copy,
  later copies are ignored there as crossings;
- silence changes nothing: the RequestCommit stays in the outbox and is resent on every
  reconnect (the link layer).

When the deadline passes ('claim' timer) with the leg still 'requested', the peer has not
settled in time: a dispute is recorded on the channel (amiko.node.disputes), logged at
WARNING with the amount and what bounds it (the link's credit limit), and the channel
forwards no new payment while it is open.
- If the peer refused, the claim is lost on the network: the in hold is dropped (the peer
  dropped its out hold too, so both ends of the channel agree: nothing moved on it), the
  entry ends 'rolled_back' with reason "claim refused by link ...". What the peer owes is
  the dispute's amount, settled off the network like every IOU.
- If the peer was silent, the hold and the queued RequestCommit stay: a SettleCommit that
  comes later still pays the claim and resolves the dispute; an Error that comes later
  makes it lost as above. A refusal that arrives after the deadline is handled at once.

A leg with no deadline (not expected: every in leg gets one with its route) is lost at the
first refusal, as there is no deadline to keep it until.

Tables (SCHEMA): claims(link, seq -> txid, side), one row per RequestCommit sent, so a
peer's Error (which names the seq) finds the claim; claim_refusals(txid, side PK, link,
count, reason, last): the refusals of a claim still standing.
"""

import logging

from amiko_core import messages as m

from amiko.node import credit, disputes, events, route
from amiko.node import store as _store
from amiko.node.events import Event
from amiko.node.route import Route, txid_text
from amiko.node.routing import leg_channel

log = logging.getLogger("amiko.claims")

SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    link TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    txid BLOB NOT NULL,
    side INTEGER NOT NULL,
    PRIMARY KEY (link, seq)
);
CREATE TABLE IF NOT EXISTS claim_refusals (
    txid   BLOB NOT NULL,
    side   INTEGER NOT NULL,
    link   TEXT NOT NULL,
    count  INTEGER NOT NULL,
    reason TEXT NOT NULL,
    last   INTEGER NOT NULL,
    PRIMARY KEY (txid, side)
);
"""

_store.register_schema(SCHEMA)

RESEND = 1  # seconds, at least, between two copies of a refused RequestCommit
KINDS = ("claim", "resend")


def _send(ctx, db, r, token):
    link = r.in_leg.link
    seq = ctx.send(db, link, m.Message(m.REQUEST_COMMIT, txid=r.txid, side=r.side, token=token))
    db.execute("INSERT OR REPLACE INTO claims (link, seq, txid, side) VALUES (?, ?, ?, ?)",
               (link, seq, r.txid, r.side))


def request(ctx, db, r, token):
    """The in leg of r is locked and the token known: claim it (see module doc)."""
    inn = r.in_leg
    inn.status = "requested"
    r.save(db, ctx.now())
    _send(ctx, db, r, token)
    if inn.deadline is not None:
        r.set_timer(db, "claim", inn.deadline)


def _standing(db, link, seq):
    """The route entry of our RequestCommit seq on link, if its claim still stands."""
    row = db.execute("SELECT txid, side FROM claims WHERE link = ? AND seq = ?", (link, seq)).fetchone()
    if row is None:
        return None
    r = Route.load(db, row[0], row[1])
    if r is None or r.in_leg.link != link or r.in_leg.status != "requested":
        return None
    return r


def refused(ctx, db, link, seq, reason):
    """The peer answered our RequestCommit seq on link with an Error (see module doc)."""
    r = _standing(db, link, seq)
    if r is None:
        return
    txid, side = r.txid, r.side
    reason = m.cut_reason(reason)
    deadline = r.in_leg.deadline
    now = ctx.clock()
    db.execute("INSERT INTO claim_refusals (txid, side, link, count, reason, last) VALUES (?, ?, ?, 1, ?, ?) "
               "ON CONFLICT (txid, side) DO UPDATE SET count = count + 1, reason = excluded.reason, "
               "last = excluded.last", (txid, side, link, reason, int(now)))
    if deadline is None or now >= deadline:
        lost(ctx, db, r, "claim refused by link %s at this node's deadline: %s" % (link, reason))
        return
    log.warning("claim for %s/%d (%d) refused by link %s %.0f s before this node's deadline: the claim stands "
                "and RequestCommit is sent again until then (peer said: %s)",
                txid_text(txid), side, r.amount, link, deadline - now, reason)
    due = now + max(RESEND, ctx.increment())
    if due < deadline:
        r.set_timer(db, "resend", due)


def _refusal(db, txid, side):
    row = db.execute("SELECT count, reason FROM claim_refusals WHERE txid = ? AND side = ?", (txid, side)).fetchone()
    return None if row is None else (row[0], row[1])


def _dispute(ctx, db, r, reason):
    link, channel = r.in_leg.link, r.in_leg.channel
    d = disputes.record(db, ctx.now(), link, channel, r.txid, r.side, r.amount,
                        route.known_token(db, r.txid) or b"", m.cut_reason(reason, 512))
    log.warning("DISPUTE on channel %d of link %s: %d owed by the peer for %s/%d, not settled by this node's "
                "deadline (%s); the channel forwards no new payment; open disputes on this link total %d, "
                "its credit limit is %d", channel, link, r.amount, txid_text(r.txid), r.side, reason,
                disputes.open_total(db, link), credit.limit(db, link))
    ctx.emit(db, Event(events.DISPUTE, r.txid, r.side, reason))
    return d


def lost(ctx, db, r, reason):
    """The deadline has passed and the peer refuses: drop the hold, keep the claim as a dispute."""
    txid, side, inn = r.txid, r.side, r.in_leg
    r.check(route.LOSE)
    _dispute(ctx, db, r, reason)
    leg_channel(db, inn).rollback(txid, side)  # the hold is locked; its leg is 'requested'
    inn.status = "rolled_back"
    r.apply(db, ctx.now(), route.LOSE, reason=m.cut_reason(reason))
    r.clear_timers(db)
    db.execute("DELETE FROM claim_refusals WHERE txid = ? AND side = ?", (txid, side))


def fire(ctx, db, r, kind, now):
    """A 'claim' (the deadline) or 'resend' timer of r fell due."""
    inn = r.in_leg
    if inn.status != "requested":
        return
    link, deadline = inn.link, inn.deadline
    if kind == "resend":
        if deadline is not None and now < deadline:
            token = route.known_token(db, r.txid)
            if token is not None:
                log.info("RequestCommit for %s/%d sent again to link %s", txid_text(r.txid), r.side, link)
                _send(ctx, db, r, token)
        return
    refusal = _refusal(db, r.txid, r.side)
    if refusal is not None:
        lost(ctx, db, r, "claim refused by link %s until this node's deadline (%d times, last: %s)"
             % (link, refusal[0], refusal[1]))
    else:
        _dispute(ctx, db, r, "link %s did not settle by this node's deadline; the claim stands "
                             "(RequestCommit stays queued)" % link)


def settled(ctx, db, r):
    """The peer paid the claim of r (SettleCommit): forget its refusals, resolve a dispute."""
    db.execute("DELETE FROM claim_refusals WHERE txid = ? AND side = ?", (r.txid, r.side))
    d = disputes.resolve(db, r.txid, r.side, ctx.now(), "settled by the peer after the deadline")
    if d is not None:
        log.warning("dispute on channel %d of link %s resolved: the peer settled %d for %s/%d",
                    d["channel"], d["link"], d["amount"], txid_text(r.txid), r.side)


def purge(db):
    """Forget the claims of route entries that are gone (route.purge deleted them)."""
    db.execute("DELETE FROM claims WHERE NOT EXISTS "
               "(SELECT 1 FROM routes r WHERE r.txid = claims.txid AND r.side = claims.side)")
    db.execute("DELETE FROM claim_refusals WHERE NOT EXISTS (SELECT 1 FROM routes r "
               "WHERE r.txid = claim_refusals.txid AND r.side = claim_refusals.side)")
