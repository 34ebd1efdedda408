"""Disputes: claims a peer did not settle by this node's own deadline, recorded on the channel.

A dispute is what an IOU peer owes this node by this node's books and refused (or failed)
to pay through the network: this node knew the token of a transaction (it paid on the next
hop, or it is the payee) and its RequestCommit on the in leg was not settled before that
leg's deadline (amiko.node.claims). The amount is bounded by what the operator trusted the
peer with (the link's credit limit, amiko.node.credit, and this node's own deposits); it is
settled off the network, like every IOU. While a channel has an open dispute it forwards no
new payment (routing refuses it as a hop, both ways).

Table disputes (SCHEMA) PK (txid, side):
    link, channel    the channel of the in leg
    txid, side       the transaction and the half this node carried
    amount, token    what is owed, and the proof (hash160(token) == txid)
    state            'open' | 'resolved' (the peer settled after all, late)
    reason           why (the peer's refusal, or its silence), then how it was resolved
    created, updated unix seconds

record(db, now, **fields) opens (or updates the reason of) a dispute; resolve(db, txid, side,
now, note) closes one the peer settled; is_open(db, link, channel); rows(db) for status.
"""

from amiko.node import store as _store

SCHEMA = """
CREATE TABLE IF NOT EXISTS disputes (
    txid    BLOB NOT NULL,
    side    INTEGER NOT NULL,
    link    TEXT NOT NULL,
    channel INTEGER NOT NULL,
    amount  INTEGER NOT NULL CHECK (amount > 0),
    token   BLOB NOT NULL,
    state   TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
    reason  TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (txid, side)
);
CREATE INDEX IF NOT EXISTS disputes_channel ON disputes (link, channel, state);
"""

_store.register_schema(SCHEMA)

COLUMNS = ("link", "channel", "txid", "side", "amount", "token", "state", "reason", "created", "updated")


def get(db, txid, side):
    row = db.execute("SELECT %s FROM disputes WHERE txid = ? AND side = ?" % ", ".join(COLUMNS),
                     (txid, side)).fetchone()
    return None if row is None else dict(zip(COLUMNS, row))


def record(db, now, link, channel, txid, side, amount, token, reason):
    """Open the dispute of (txid, side), or replace its reason (it is open again)."""
    if get(db, txid, side) is None:
        db.execute("INSERT INTO disputes (%s) VALUES (%s)" % (", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))),
                   (link, channel, txid, side, amount, bytes(token), "open", reason, int(now), int(now)))
    else:
        db.execute("UPDATE disputes SET state = 'open', reason = ?, updated = ? WHERE txid = ? AND side = ?",
                   (reason, int(now), txid, side))
    return get(db, txid, side)


def resolve(db, txid, side, now, note):
    """The peer settled the disputed claim after all: the dispute is closed (kept as history)."""
    d = get(db, txid, side)
    if d is None or d["state"] != "open":
        return None
    db.execute("UPDATE disputes SET state = 'resolved', reason = ?, updated = ? WHERE txid = ? AND side = ?",
               ((d["reason"] + "; " + note)[:1000], int(now), txid, side))
    return get(db, txid, side)


def is_open(db, link, channel):
    """True while the channel has an open dispute (it forwards no new payment then)."""
    return db.execute("SELECT 1 FROM disputes WHERE link = ? AND channel = ? AND state = 'open' LIMIT 1",
                      (link, channel)).fetchone() is not None


def rows(db, limit=200):
    """Every dispute, newest first, for status."""
    cur = db.execute("SELECT %s FROM disputes ORDER BY created DESC LIMIT ?" % ", ".join(COLUMNS), (limit,))
    return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]


def open_total(db, link=None):
    sql = "SELECT COALESCE(SUM(amount), 0) FROM disputes WHERE state = 'open'"
    args = ()
    if link is not None:
        sql += " AND link = ?"
        args = (link,)
    return db.execute(sql, args).fetchone()[0]
