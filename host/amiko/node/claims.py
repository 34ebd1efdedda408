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

from amiko.node import credit, disputes, routing
from amiko.node import events
from amiko.node.events import Event
from amiko.node import store as _store
from amiko.node.routing import IN_LEG, get, leg_channel, txid_text, update

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


def _token(db, txid):
    row = db.execute("SELECT token FROM tokens WHERE txid = ?", (txid,)).fetchone()
    return None if row is None else bytes(row[0])


def _send(eng, db, r, token):
    link = r[IN_LEG[r["side"]] + "_link"]
    seq = eng.send(db, link, m.Message(m.REQUEST_COMMIT, txid=r["txid"], side=r["side"], token=token))
    db.execute("INSERT OR REPLACE INTO claims (link, seq, txid, side) VALUES (?, ?, ?, ?)",
               (link, seq, r["txid"], r["side"]))


def request(eng, db, r, token):
    """The in leg of r is locked and the token known: claim it (see module doc)."""
    inn = IN_LEG[r["side"]]
    update(eng, db, r, **{inn + "_status": "requested"})
    _send(eng, db, r, token)
    if r[inn + "_deadline"] is not None:
        routing.set_timer(db, r, "claim", r[inn + "_deadline"])


def _standing(db, link, seq):
    """The route entry of our RequestCommit seq on link, if its claim still stands."""
    row = db.execute("SELECT txid, side FROM claims WHERE link = ? AND seq = ?", (link, seq)).fetchone()
    if row is None:
        return None
    r = get(db, row[0], row[1])
    inn = IN_LEG[row[1]]
    if r is None or r[inn + "_link"] != link or r[inn + "_status"] != "requested":
        return None
    return r


def refused(eng, db, link, seq, reason):
    """The peer answered our RequestCommit seq on link with an Error (see module doc)."""
    r = _standing(db, link, seq)
    if r is None:
        return
    txid, side = r["txid"], r["side"]
    reason = m.cut_reason(reason)
    deadline = r[IN_LEG[side] + "_deadline"]
    now = eng.clock()
    db.execute("INSERT INTO claim_refusals (txid, side, link, count, reason, last) VALUES (?, ?, ?, 1, ?, ?) "
               "ON CONFLICT (txid, side) DO UPDATE SET count = count + 1, reason = excluded.reason, "
               "last = excluded.last", (txid, side, link, reason, int(now)))
    if deadline is None or now >= deadline:
        lost(eng, db, r, "claim refused by link %s at this node's deadline: %s" % (link, reason))
        return
    log.warning("claim for %s/%d (%d) refused by link %s %.0f s before this node's deadline: the claim stands "
                "and RequestCommit is sent again until then (peer said: %s)",
                txid_text(txid), side, r["amount"], link, deadline - now, reason)
    due = now + max(RESEND, eng.increment())
    if due < deadline:
        routing.set_timer(db, r, "resend", due)


def _refusal(db, txid, side):
    row = db.execute("SELECT count, reason FROM claim_refusals WHERE txid = ? AND side = ?", (txid, side)).fetchone()
    return None if row is None else (row[0], row[1])


def _dispute(eng, db, r, reason):
    inn = IN_LEG[r["side"]]
    link, channel = r[inn + "_link"], r[inn + "_channel"]
    d = disputes.record(db, eng.now(), link, channel, r["txid"], r["side"], r["amount"],
                        _token(db, r["txid"]) or b"", m.cut_reason(reason, 512))
    log.warning("DISPUTE on channel %d of link %s: %d owed by the peer for %s/%d, not settled by this node's "
                "deadline (%s); the channel forwards no new payment; open disputes on this link total %d, "
                "its credit limit is %d", channel, link, r["amount"], txid_text(r["txid"]), r["side"], reason,
                disputes.open_total(db, link), credit.limit(db, link))
    eng.emit(db, Event(events.DISPUTE, r["txid"], r["side"], reason))
    return d


def lost(eng, db, r, reason):
    """The deadline has passed and the peer refuses: drop the hold, keep the claim as a dispute."""
    txid, side = r["txid"], r["side"]
    inn = IN_LEG[side]
    _dispute(eng, db, r, reason)
    leg_channel(db, r, inn).rollback(txid, side)  # the hold is locked; its leg is 'requested'
    update(eng, db, r, **{inn + "_status": "rolled_back"})
    update(eng, db, r, state="rolled_back", reason=m.cut_reason(reason))
    routing.clear_timers(db, r)
    db.execute("DELETE FROM claim_refusals WHERE txid = ? AND side = ?", (txid, side))


def fire(eng, db, r, kind, now):
    """A 'claim' (the deadline) or 'resend' timer of r fell due."""
    inn = IN_LEG[r["side"]]
    if r[inn + "_status"] != "requested":
        return
    link, deadline = r[inn + "_link"], r[inn + "_deadline"]
    if kind == "resend":
        if deadline is not None and now < deadline:
            token = _token(db, r["txid"])
            if token is not None:
                log.info("RequestCommit for %s/%d sent again to link %s", txid_text(r["txid"]), r["side"], link)
                _send(eng, db, r, token)
        return
    refusal = _refusal(db, r["txid"], r["side"])
    if refusal is not None:
        lost(eng, db, r, "claim refused by link %s until this node's deadline (%d times, last: %s)"
             % (link, refusal[0], refusal[1]))
    else:
        _dispute(eng, db, r, "link %s did not settle by this node's deadline; the claim stands "
                             "(RequestCommit stays queued)" % link)


def settled(eng, db, r):
    """The peer paid the claim of r (SettleCommit): forget its refusals, resolve a dispute."""
    db.execute("DELETE FROM claim_refusals WHERE txid = ? AND side = ?", (r["txid"], r["side"]))
    d = disputes.resolve(db, r["txid"], r["side"], eng.now(), "settled by the peer after the deadline")
    if d is not None:
        log.warning("dispute on channel %d of link %s resolved: the peer settled %d for %s/%d",
                    d["channel"], d["link"], d["amount"], txid_text(r["txid"]), r["side"])
