"""Credit limits: how much of a peer's IOUs this node accepts, set by the operator.

On an IOU channel the depositor issues IOUs up to its deposit: a Deposit from the peer is
credit this node extends to it (what the peer pays us over that channel is owed to us off
the network). So the peer's message alone never decides the exposure: the operator sets a
credit limit per link (`amiko link NAME --credit-limit N`, or `amiko deposit NAME AMOUNT
--credit-limit N`), and a peer's Deposit is accepted only while the capacity of the peer's
channels on the link that are not closed, plus the new one, stays within it. The default
limit is 0: a link without a credit limit accepts no peer deposit (this node can still
deposit toward the peer: its own deposits are its own decision).

A refused Deposit is answered with an Error (the link layer sends it, with the reason); the
depositor, on that Error (ref_type Deposit, ref_seq its seq), removes the channel it had
opened, so both ends agree there is no such channel. Routes that had reserved on it meanwhile
try their next candidate, as on HaveNoRoute.

Tables (SCHEMA):
    credit_limits(link PK, credit_limit, updated)   the operator's limit (missing: 0)
    peer_deposits(link, channel PK, amount)         every peer Deposit this node accepted
    deposits_sent(link, seq PK, channel)            our Deposits, so a refusal finds its channel

set_limit(db, link, limit, now); limit(db, link); in_use(db, link) (capacity of the peer's
channels not closed); check_peer_deposit(db, link, amount) raises AmikoError beyond the limit;
accepted(db, link, channel, amount); sent(db, link, seq, channel);
deposit_refused(ctx, db, link, seq, reason) (ctx: amiko.node.context).
"""

import logging

from amiko_core.errors import AmikoError
from amiko_core.messages import MAX_AMOUNT

from amiko.node import channels, route, routing
from amiko.node import store as _store

log = logging.getLogger("amiko.credit")

SCHEMA = """
CREATE TABLE IF NOT EXISTS credit_limits (
    link         TEXT PRIMARY KEY,
    credit_limit INTEGER NOT NULL CHECK (credit_limit >= 0),
    updated      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_deposits (
    link    TEXT NOT NULL,
    channel INTEGER NOT NULL,
    amount  INTEGER NOT NULL,
    PRIMARY KEY (link, channel)
);
CREATE TABLE IF NOT EXISTS deposits_sent (
    link    TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    PRIMARY KEY (link, seq)
);
"""

_store.register_schema(SCHEMA)

DEFAULT_LIMIT = 0


def check_limit(value, what="credit limit"):
    if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
        raise AmikoError("%s must be a whole number in 0..%d, got %r" % (what, MAX_AMOUNT, value))
    return value


def set_limit(db, link, value, now):
    check_limit(value)
    if channels.get_link(db, link) is None:
        raise AmikoError("no link named %s" % link)
    db.execute("INSERT OR REPLACE INTO credit_limits (link, credit_limit, updated) VALUES (?, ?, ?)",
               (link, value, int(now)))


def limit(db, link):
    row = db.execute("SELECT credit_limit FROM credit_limits WHERE link = ?", (link,)).fetchone()
    return DEFAULT_LIMIT if row is None else row[0]


def in_use(db, link):
    """The capacity of the channels the peer funded on link that are not closed."""
    return db.execute(
        "SELECT COALESCE(SUM(p.amount), 0) FROM peer_deposits p JOIN channels c "
        "ON c.link = p.link AND c.id = p.channel WHERE p.link = ? AND c.state != 'closed'", (link,)).fetchone()[0]


def check_peer_deposit(db, link, amount):
    """Refuse a peer's Deposit of amount beyond the link's credit limit (AmikoError)."""
    allowed = limit(db, link)
    used = in_use(db, link)
    if used + amount > allowed:
        if allowed == 0:
            raise AmikoError("deposit of %d refused: link %s has no credit limit, so this node accepts no deposit "
                             "from the peer (its operator sets one with `amiko link %s --credit-limit N`)"
                             % (amount, link, link))
        raise AmikoError("deposit of %d refused: the peer's channels on link %s would hold %d, beyond the credit "
                         "limit %d its operator set" % (amount, link, used + amount, allowed))


def accepted(db, link, channel, amount):
    db.execute("INSERT INTO peer_deposits (link, channel, amount) VALUES (?, ?, ?)", (link, channel, amount))


def sent(db, link, seq, channel):
    db.execute("INSERT OR REPLACE INTO deposits_sent (link, seq, channel) VALUES (?, ?, ?)", (link, seq, channel))


def deposit_refused(ctx, db, link, seq, reason):
    """The peer refused our Deposit (seq on link): the channel never existed there; remove it here."""
    row = db.execute("SELECT channel FROM deposits_sent WHERE link = ? AND seq = ?", (link, seq)).fetchone()
    if row is None:
        return
    cid = row[0]
    db.execute("DELETE FROM deposits_sent WHERE link = ? AND seq = ?", (link, seq))
    ch = channels.load(db, link, cid)
    if ch is None:
        return
    if ch.remote != 0 or ch.hold_count("locked"):
        # The peer has used the channel: it did accept the deposit, whatever this Error says.
        log.warning("link %s: Error for our deposit on channel %d ignored, the channel is in use: %s", link, cid, reason)
        return
    log.warning("link %s refused our deposit of %d on channel %d: %s; the channel is removed",
                link, ch.local + ch.remote, cid, reason)
    # Routes that reserved on it before the refusal came back: as if the peer said HaveNoRoute.
    for r in route.routing_on_channel(db, link, cid):
        routing.retry(ctx, db, r)
    if channels.require(db, link, cid).hold_count():
        # Unreachable: nothing but our own MakeRoutes can hold on a channel the peer never had.
        log.error("channel %d on link %s: refused by the peer but still holds funds; kept", cid, link)
        return
    db.execute("DELETE FROM channels WHERE link = ? AND id = ?", (link, cid))
