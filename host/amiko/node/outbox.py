"""Per-link sequence bookkeeping in SQLite: the outbox (messages to send) and the inbox position.

Tables (SCHEMA, registered with store.register_schema at import):

    link_seq(link PK, next_out, acked_out, last_in)
        next_out   the seq the next enqueued message gets (starts at 1, never reused)
        acked_out  the highest seq the peer acknowledged (0: none)
        last_in    the highest seq received from the peer and consumed (applied, or
                   refused by a failed handler and answered with an Error); 0: none
    link_outbox(link, seq, type, body) PK (link, seq)
        every message enqueued and not yet acknowledged: exactly the seqs
        acked_out+1 .. next_out-1, so pending = next_out - 1 - acked_out.

Contract (db is the connection-like object of a store transaction: it has execute()):
- enqueue(db, link, msg, limit=MAX_OUTBOX) -> seq. Stores the message's type and CBOR
  body under the next seq of that link, in the caller's transaction, so the message
  exists if and only if the state change that caused it commits. Refused with OutboxFull
  (an AmikoError) when `limit` messages are already pending (limit None: no bound), and
  with AmikoError when the body is over MAX_BODY bytes (it would not fit a LinkMsg).
- unacked(store_or_db, link, after=0, limit=None) -> [(seq, type, body)] in seq order,
  seq > after; a Store is read through store.read().
- acked(db, link, seq): the peer acknowledged everything up to seq: deletes those rows.
  An ack at or below acked_out changes nothing; an ack of a seq never enqueued raises
  ProtocolError (the peer acknowledges what we never sent).
- last_in(db, link) -> int; set_last_in(db, link, seq) requires seq > last_in (ProtocolError).
- pending_count(db, link) -> int; pending_links(db) -> names with pending messages.
"""

from amiko_core import messages
from amiko_core.errors import AmikoError, ProtocolError

from amiko.node import store as _store

MAX_OUTBOX = 10000
# A LinkMsg carries the inner body as a CBOR byte string; messages.decode refuses strings
# longer than BODY_MAX_STR, which is therefore the real bound (the design allows 3800).
MAX_BODY = min(3800, messages.BODY_MAX_STR)

SCHEMA = """
CREATE TABLE IF NOT EXISTS link_seq (
    link      TEXT PRIMARY KEY,
    next_out  INTEGER NOT NULL DEFAULT 1,
    acked_out INTEGER NOT NULL DEFAULT 0,
    last_in   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS link_outbox (
    link TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    type INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (link, seq)
) WITHOUT ROWID;
"""

_store.register_schema(SCHEMA)


class OutboxFull(AmikoError):
    """A link has as many unacknowledged messages queued as its bound allows."""


def _row(db, link):
    """(next_out, acked_out, last_in) of link, creating its row on first use."""
    row = db.execute("SELECT next_out, acked_out, last_in FROM link_seq WHERE link = ?", (link,)).fetchone()
    if row is None:
        db.execute("INSERT INTO link_seq (link) VALUES (?)", (link,))
        return 1, 0, 0
    return tuple(row)


def enqueue(db, link, msg, limit=MAX_OUTBOX):
    """Queue msg (an amiko_core.messages.Message) for link; returns its seq."""
    body = messages.encode(msg)
    if len(body) > MAX_BODY:
        raise AmikoError("outbox: %s body is %d bytes, at most %d fit a link message" % (msg.name, len(body), MAX_BODY))
    next_out, acked_out, _ = _row(db, link)
    if limit is not None and next_out - 1 - acked_out >= limit:
        raise OutboxFull("outbox: link %s has %d unacknowledged messages queued (the bound)" % (link, limit))
    db.execute(
        "INSERT INTO link_outbox (link, seq, type, body) VALUES (?, ?, ?, ?)", (link, next_out, msg.type, body)
    )
    db.execute("UPDATE link_seq SET next_out = ? WHERE link = ?", (next_out + 1, link))
    return next_out


def _unacked(db, link, after, limit):
    sql = "SELECT seq, type, body FROM link_outbox WHERE link = ? AND seq > ? ORDER BY seq"
    args = (link, after)
    if limit is not None:
        sql += " LIMIT ?"
        args += (limit,)
    return [(seq, mtype, bytes(body)) for seq, mtype, body in db.execute(sql, args).fetchall()]


def unacked(store_or_db, link, after=0, limit=None):
    """The pending messages of link as (seq, type, body), seq > after, in seq order."""
    if hasattr(store_or_db, "read"):
        with store_or_db.read() as db:
            return _unacked(db, link, after, limit)
    return _unacked(store_or_db, link, after, limit)


def acked(db, link, seq):
    """The peer acknowledged every seq <= seq of link."""
    next_out, acked_out, _ = _row(db, link)
    if seq >= next_out:
        raise ProtocolError("outbox: link %s peer acknowledged seq %d, but only %d were ever sent" % (link, seq, next_out - 1))
    if seq <= acked_out:
        return
    db.execute("DELETE FROM link_outbox WHERE link = ? AND seq <= ?", (link, seq))
    db.execute("UPDATE link_seq SET acked_out = ? WHERE link = ?", (seq, link))


def last_in(db, link):
    """The highest seq received from link's peer and consumed (0 if none)."""
    row = db.execute("SELECT last_in FROM link_seq WHERE link = ?", (link,)).fetchone()
    return row[0] if row else 0


def set_last_in(db, link, seq):
    """Record that seq from link's peer is consumed; seq must be above the current position."""
    current = _row(db, link)[2]
    if seq <= current:
        raise ProtocolError("outbox: link %s inbox position %d cannot move back to %d" % (link, current, seq))
    db.execute("UPDATE link_seq SET last_in = ? WHERE link = ?", (seq, link))


def pending_count(db, link):
    """Messages of link enqueued and not yet acknowledged."""
    row = db.execute("SELECT next_out - 1 - acked_out FROM link_seq WHERE link = ?", (link,)).fetchone()
    return row[0] if row else 0


def pending_links(db):
    """Names of the links that have unacknowledged messages."""
    return [r[0] for r in db.execute("SELECT link FROM link_seq WHERE next_out - 1 > acked_out ORDER BY link").fetchall()]
