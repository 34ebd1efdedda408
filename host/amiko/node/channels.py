"""Links and payment channels: the node's balances, as rows, behind one Channel interface.

Tables (SCHEMA, registered with the store):

    links(name PK, remote_url, remote_key, created)
        a named link to a peer node; remote_key (33-byte pubkey) is pinned by the link layer
    channels(link, id, kind, local, remote, state, created)  PK (link, id)
        id: the channel number both ends use on the wire (chosen at random by the depositor)
        local: what this node can pay over the channel; remote: what the peer can pay
        state: 'open' | 'closing' (withdrawn by the peer while holds were pending: no new
        holds, closed when the last hold ends) | 'closed'
    holds(link, channel, txid, side, direction, amount, state)  PK (link, channel, txid, side)
        direction 'out' = this node pays, 'in' = the peer pays;
        state 'proposed' (an 'in' hold this node asked the peer to reserve, not yet confirmed)
        | 'reserved' | 'locked'

Channel interface (one class per kind; KINDS maps kind -> class; load(db, link, id)):
    available_out()                    local - out holds
    available_in()                     remote - confirmed in holds ('reserved', 'locked'):
                                       what the peer certainly still has for new holds
    unclaimed_in()                     remote - every in hold, proposals included
    reserve(txid, side, direction, amount)   new hold in state 'reserved'; an 'out' hold needs
                                       available_out() >= amount, an 'in' hold available_in()
    propose(txid, side, amount)        new 'in' hold in state 'proposed'; needs unclaimed_in()
                                       >= amount. The peer decides whether it reserves: a
                                       proposal does not count against available_in(), so
                                       the peer's own concurrent reservations are accepted
    confirm(txid, side)                'proposed' -> 'reserved' (the peer did reserve)
    unreserve(txid, side)              drop a 'proposed' or 'reserved' hold
    lock(txid, side)                   'reserved' -> 'locked'
    commit(txid, side)                 apply a 'locked' hold and drop it:
                                       out: local -= a, remote += a; in: remote -= a, local += a
    rollback(txid, side)               drop a hold in any state (the money stays where it was)
    revert_commit(direction, amount)   undo a commit this node applied that the peer refused
                                       (its SettleRollback crossed our SettleCommit)
Every refusal is an AmikoError naming the channel and what was wrong; nothing is changed then.
Invariants: local + remote is constant per channel (set by the deposit); out holds <= local;
confirmed in holds <= remote; amounts are ints (not bool) with 0 < a <= MAX_AMOUNT; the
capacities of all channels not closed add up to at most MAX_AMOUNT (open_channel refuses
more), so every balance, hold and sum of them stays in range. A channel with an open
dispute (amiko.node.disputes) is left out of open_channels(): no new route uses it.

IOUChannel: the depositor issues IOUs up to its deposit and settles off-network (seeds/000);
no security, for parties that trust each other. Opening: `open_channel(db, link, id, local,
remote)`; closing: `close_channel`. A Bitcoin-enforced kind would implement the same methods
and add its own rows.
"""

import time

from amiko_core.errors import AmikoError
from amiko_core.messages import MAX_AMOUNT
from amiko_core.url import id_problem

from amiko.node import disputes
from amiko.node import store as _store

SCHEMA = """
CREATE TABLE IF NOT EXISTS links (
    name       TEXT PRIMARY KEY,
    remote_url TEXT,
    remote_key BLOB,
    created    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    link    TEXT NOT NULL REFERENCES links(name),
    id      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    local   INTEGER NOT NULL CHECK (local >= 0),
    remote  INTEGER NOT NULL CHECK (remote >= 0),
    state   TEXT NOT NULL CHECK (state IN ('open', 'closing', 'closed')),
    created INTEGER NOT NULL,
    PRIMARY KEY (link, id)
);
CREATE TABLE IF NOT EXISTS holds (
    link      TEXT NOT NULL,
    channel   INTEGER NOT NULL,
    txid      BLOB NOT NULL,
    side      INTEGER NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    amount    INTEGER NOT NULL CHECK (amount > 0),
    state     TEXT NOT NULL CHECK (state IN ('proposed', 'reserved', 'locked')),
    PRIMARY KEY (link, channel, txid, side),
    FOREIGN KEY (link, channel) REFERENCES channels(link, id)
);
"""

_store.register_schema(SCHEMA)

MAX_CHANNEL_ID = (1 << 63) - 1  # SQLite INTEGER is signed 64-bit


def check_amount(amount, what="amount"):
    """amount if it is an int (not bool) with 0 < amount <= MAX_AMOUNT, else AmikoError."""
    if type(amount) is not int:
        raise AmikoError("%s must be an integer, got %s" % (what, type(amount).__name__))
    if not 0 < amount <= MAX_AMOUNT:
        raise AmikoError("%s must be 1..%d, got %d" % (what, MAX_AMOUNT, amount))
    return amount


def check_link_name(name):
    problem = id_problem(name)
    if problem:
        raise AmikoError("link name %s" % problem)
    return name


def check_channel_id(channel):
    if type(channel) is not int or not 0 <= channel <= MAX_CHANNEL_ID:
        raise AmikoError("channel id must be an integer 0..%d, got %r" % (MAX_CHANNEL_ID, channel))
    return channel


# ---- links ----

def add_link(db, name, remote_url=None, remote_key=None, now=None):
    """Create link name, or update the URL/key given (None leaves them as they are)."""
    check_link_name(name)
    if remote_key is not None and (type(remote_key) is not bytes or len(remote_key) != 33):
        raise AmikoError("link %s: remote key must be 33 bytes" % name)
    if get_link(db, name) is None:
        db.execute(
            "INSERT INTO links (name, remote_url, remote_key, created) VALUES (?, ?, ?, ?)",
            (name, remote_url, remote_key, int(time.time() if now is None else now)),
        )
        return
    if remote_url is not None:
        db.execute("UPDATE links SET remote_url = ? WHERE name = ?", (remote_url, name))
    if remote_key is not None:
        db.execute("UPDATE links SET remote_key = ? WHERE name = ?", (remote_key, name))


def get_link(db, name):
    """{'name', 'remote_url', 'remote_key', 'created'} or None."""
    row = db.execute("SELECT name, remote_url, remote_key, created FROM links WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    return {"name": row[0], "remote_url": row[1], "remote_key": row[2], "created": row[3]}


def set_link_key(db, name, key):
    """Pin the peer key of an existing link (the link layer, on the first handshake)."""
    if get_link(db, name) is None:
        raise AmikoError("no link named %s" % name)
    add_link(db, name, remote_key=key)


def list_links(db):
    rows = db.execute("SELECT name FROM links ORDER BY name").fetchall()
    return [get_link(db, r[0]) for r in rows]


# ---- channels ----

class Channel:
    """One payment channel on a link, bound to the transaction db it was loaded in."""

    kind = None

    def __init__(self, db, link, cid, local, remote, state):
        self.db = db
        self.link = link
        self.id = cid
        self.local = local
        self.remote = remote
        self.state = state

    def describe(self):
        return "channel %d on link %s" % (self.id, self.link)

    # -- holds --

    def hold(self, txid, side):
        """(direction, amount, state) of the hold of (txid, side), or None."""
        row = self.db.execute(
            "SELECT direction, amount, state FROM holds WHERE link = ? AND channel = ? AND txid = ? AND side = ?",
            (self.link, self.id, txid, side),
        ).fetchone()
        return None if row is None else tuple(row)

    def held(self, direction, states=("proposed", "reserved", "locked")):
        sql = ("SELECT COALESCE(SUM(amount), 0) FROM holds WHERE link = ? AND channel = ? AND direction = ? "
               "AND state IN (%s)" % ", ".join("?" * len(states)))
        return self.db.execute(sql, [self.link, self.id, direction] + list(states)).fetchone()[0]

    def hold_count(self, state=None):
        sql = "SELECT COUNT(*) FROM holds WHERE link = ? AND channel = ?"
        args = [self.link, self.id]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        return self.db.execute(sql, args).fetchone()[0]

    def available_out(self):
        return self.local - self.held("out")

    def available_in(self):
        return self.remote - self.held("in", ("reserved", "locked"))

    def unclaimed_in(self):
        return self.remote - self.held("in")

    def _need_hold(self, txid, side, states):
        h = self.hold(txid, side)
        if h is None:
            raise AmikoError("%s has no hold for this transaction (side %d)" % (self.describe(), side))
        if h[2] not in states:
            raise AmikoError("%s: hold for this transaction (side %d) is %s, not %s"
                             % (self.describe(), side, h[2], " or ".join(states)))
        return h

    def _new_hold(self, txid, side, direction, amount, state, available):
        check_amount(amount)
        if self.state != "open":
            raise AmikoError("%s is %s: no new holds" % (self.describe(), self.state))
        if self.hold(txid, side) is not None:
            raise AmikoError("%s already holds funds for this transaction (side %d)" % (self.describe(), side))
        if amount > available:
            who = "this node" if direction == "out" else "the peer"
            raise AmikoError("%s: %s has %d available, %d needed" % (self.describe(), who, available, amount))
        self.db.execute(
            "INSERT INTO holds (link, channel, txid, side, direction, amount, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.link, self.id, txid, side, direction, amount, state),
        )

    def reserve(self, txid, side, direction, amount):
        if direction not in ("in", "out"):
            raise AmikoError("hold direction must be 'in' or 'out', got %r" % (direction,))
        available = self.available_out() if direction == "out" else self.available_in()
        self._new_hold(txid, side, direction, amount, "reserved", available)

    def propose(self, txid, side, amount):
        self._new_hold(txid, side, "in", amount, "proposed", self.unclaimed_in())

    def confirm(self, txid, side):
        self._need_hold(txid, side, ("proposed",))
        self.db.execute(
            "UPDATE holds SET state = 'reserved' WHERE link = ? AND channel = ? AND txid = ? AND side = ?",
            (self.link, self.id, txid, side),
        )

    def unreserve(self, txid, side):
        self._need_hold(txid, side, ("proposed", "reserved"))
        self._drop(txid, side)

    def lock(self, txid, side):
        self._need_hold(txid, side, ("reserved",))
        self.db.execute(
            "UPDATE holds SET state = 'locked' WHERE link = ? AND channel = ? AND txid = ? AND side = ?",
            (self.link, self.id, txid, side),
        )

    def commit(self, txid, side):
        direction, amount, _ = self._need_hold(txid, side, ("locked",))
        self._transfer(direction, amount)
        self._drop(txid, side)

    def rollback(self, txid, side):
        self._need_hold(txid, side, ("proposed", "reserved", "locked"))
        self._drop(txid, side)

    def revert_commit(self, direction, amount):
        check_amount(amount)
        self._transfer("in" if direction == "out" else "out", amount)

    def _drop(self, txid, side):
        self.db.execute(
            "DELETE FROM holds WHERE link = ? AND channel = ? AND txid = ? AND side = ?",
            (self.link, self.id, txid, side),
        )
        if self.state == "closing" and self.hold_count() == 0:
            self._set_state("closed")

    def _set_state(self, state):
        self.db.execute("UPDATE channels SET state = ? WHERE link = ? AND id = ?", (state, self.link, self.id))
        self.state = state

    def _transfer(self, direction, amount):
        raise NotImplementedError


class IOUChannel(Channel):
    kind = "iou"

    def _transfer(self, direction, amount):
        if direction == "out":
            local, remote = self.local - amount, self.remote + amount
        else:
            local, remote = self.local + amount, self.remote - amount
        if local < 0 or remote < 0:
            # Unreachable while holds never exceed the balance they draw on; refuse anyway.
            raise AmikoError("%s: commit of %d would make a balance negative" % (self.describe(), amount))
        self.db.execute("UPDATE channels SET local = ?, remote = ? WHERE link = ? AND id = ?",
                        (local, remote, self.link, self.id))
        self.local, self.remote = local, remote


KINDS = {"iou": IOUChannel}


def load(db, link, cid):
    """The Channel of (link, id), or None if there is none."""
    if type(cid) is not int or not 0 <= cid <= MAX_CHANNEL_ID:
        return None  # no channel has such an id (and SQLite could not even look it up)
    row = db.execute(
        "SELECT kind, local, remote, state FROM channels WHERE link = ? AND id = ?", (link, cid)
    ).fetchone()
    if row is None:
        return None
    cls = KINDS.get(row[0])
    if cls is None:
        raise AmikoError("channel %d on link %s has unknown kind %s" % (cid, link, row[0]))
    return cls(db, link, cid, row[1], row[2], row[3])


def require(db, link, cid):
    ch = load(db, link, cid)
    if ch is None:
        raise AmikoError("no channel %r on link %s" % (cid, link))
    return ch


def open_channel(db, link, cid, local, remote, kind="iou", now=None):
    """Record a new open channel; (link, id) must be new and the link must exist."""
    check_channel_id(cid)
    if kind not in KINDS:
        raise AmikoError("unknown channel kind %r" % (kind,))
    for value, what in ((local, "local balance"), (remote, "remote balance")):
        if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
            raise AmikoError("%s must be an integer 0..%d, got %r" % (what, MAX_AMOUNT, value))
    if local + remote > MAX_AMOUNT or local + remote == 0:
        raise AmikoError("channel capacity must be 1..%d, got %d" % (MAX_AMOUNT, local + remote))
    held = db.execute("SELECT COALESCE(SUM(local + remote), 0) FROM channels WHERE state != 'closed'").fetchone()[0]
    if held + local + remote > MAX_AMOUNT:
        # Every balance, hold and sum of them a node reports then stays within MAX_AMOUNT.
        raise AmikoError("a channel of %d would bring this node's open channels to %d in all, beyond %d"
                         % (local + remote, held + local + remote, MAX_AMOUNT))
    if get_link(db, link) is None:
        raise AmikoError("no link named %s" % link)
    if load(db, link, cid) is not None:
        raise AmikoError("channel %d on link %s exists already" % (cid, link))
    db.execute(
        "INSERT INTO channels (link, id, kind, local, remote, state, created) VALUES (?, ?, ?, ?, ?, 'open', ?)",
        (link, cid, kind, local, remote, int(time.time() if now is None else now)),
    )
    return load(db, link, cid)


def close_channel(ch, allow_reserved=False):
    """Close ch. Refused while it has locked holds, and while it has any hold unless
    allow_reserved (then it becomes 'closing' and closes when the last hold ends).
    Returns the new state."""
    if ch.state == "closed":
        raise AmikoError("%s is closed already" % ch.describe())
    locked = ch.hold_count("locked")
    total = ch.hold_count()
    if locked or (total and not allow_reserved):
        raise AmikoError("%s has %d pending holds (%d locked): withdraw once they have ended"
                         % (ch.describe(), total, locked))
    ch._set_state("closing" if total else "closed")
    return ch.state


def channel_rows(db, link=None):
    """Every channel as a dict with local, remote and the reserved/locked amounts per direction."""
    sql = "SELECT link, id, kind, local, remote, state FROM channels"
    args = ()
    if link is not None:
        sql += " WHERE link = ?"
        args = (link,)
    out = []
    for lk, cid, kind, local, remote, state in db.execute(sql + " ORDER BY link, id", args).fetchall():
        entry = {"link": lk, "id": cid, "kind": kind, "local": local, "remote": remote, "state": state}
        for direction, states in (("out", ("reserved", "locked")), ("in", ("proposed", "reserved", "locked"))):
            for st in states:
                entry["%s_%s" % (st, direction)] = db.execute(
                    "SELECT COALESCE(SUM(amount), 0) FROM holds WHERE link = ? AND channel = ? "
                    "AND direction = ? AND state = ?", (lk, cid, direction, st)).fetchone()[0]
        out.append(entry)
    return out


def open_channels(db, exclude_link=None):
    """[(link, id)] of open channels without an open dispute, in a stable order (link name, then id)."""
    rows = db.execute("SELECT link, id FROM channels WHERE state = 'open' ORDER BY link, id").fetchall()
    return [(r[0], r[1]) for r in rows if r[0] != exclude_link and not disputes.is_open(db, r[0], r[1])]
