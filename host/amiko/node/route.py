"""A route entry: this node's part of one half of a payment, and every rule of its state.

A route entry is keyed (txid, side); side 0 is the payer side (MakeRoute travels payer ->
meeting point), side 1 the payee side (MakeRoute travels payee -> meeting point). It has
two legs (Leg: link, channel, status, deadline): `up`, where the MakeRoute came from (none
at the endpoint that started it), and `down`, where this node forwarded it (none at the
meeting point). Money flows payer -> meeting point -> payee, so per side:

    side 0: up leg = in (the upstream peer pays us), down leg = out (we pay downstream)
    side 1: up leg = out (we pay the payee-ward peer), down leg = in

`Route.in_leg` and `Route.out_leg` name them so.

States and what moves an entry from one to the next are in TRANSITIONS, and nowhere else:
Route.apply(db, now, event) looks the pair up and raises RouteStateError (a ProtocolError,
so an AmikoError the link layer answers with an Error) for a pair the table does not have.
The modules that drive an entry (routing, settlement, timeouts, claims) decide which event
an input is; the table decides whether the entry accepts it.

    routing      a MakeRoute is out, or the search is at an endpoint
    waiting      at the meeting point, for the other half
    routed       both halves met; the lock may come
    locked       the in and out holds are locked
    settled      every leg settled
    failed       no route through here: a tombstone, so the same (txid, side) is refused
                 again (loop prevention and a node-visited-once search)
    cancelled    dropped before lock (an endpoint's cancel, CancelRoute, lock time-out)
    rolled_back  given up without payment toward the payer

    make      a new entry (start at an endpoint, a MakeRoute)
    retry     the way tried last is closed (HaveNoRoute, a refused HaveRoute, a refused
              Deposit under it): the search goes on
    reach     the search arrived at the meeting point
    route     the half is routed (HaveRoute, or the halves joined at the meeting point)
    fail      no way left, or the route time-out
    cancel    before lock: an endpoint's cancel, CancelRoute, the lock time-out
    lock      Lock (or the payer endpoint locking)
    settle    the last leg settled
    rollback  given up toward the payer (SettleRollback, a passed deadline, a payee that
              gives up, a late lock at the payee)
    revert    a SettleCommit of ours crossed the peer's rollback: the out leg is undone
    lose      a claim refused past this node's deadline: the in hold is dropped

Leg status: 'proposed' | 'reserved' | 'locked' | 'requested' (in leg: RequestCommit sent) |
'settled' | 'rolled_back' | 'released' (hold dropped while routing or by CancelRoute).

Tables (SCHEMA), owned here: routes (an entry a row: txid, side, amount, meeting_point,
state, at_mp, for each leg (up_, down_): link, channel, status, deadline; tried (JSON list of
"link/channel" already tried as down), reason, created, updated); timers(txid, side, kind,
due) (amiko.node.timeouts fires them; `due` of route and lock timers is a float, local clock,
sub-second); tokens(txid, token) (a token this node knows, so a leg locked later settles at
once).
"""

import json

from amiko_core.errors import ProtocolError

from amiko.node import store as _store

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
CREATE TABLE IF NOT EXISTS tokens (
    txid  BLOB PRIMARY KEY,
    token BLOB NOT NULL
);
"""

_store.register_schema(SCHEMA)

COLUMNS = ("txid", "side", "amount", "meeting_point", "state", "at_mp",
           "up_link", "up_channel", "up_status", "up_deadline",
           "down_link", "down_channel", "down_status", "down_deadline",
           "tried", "reason", "created", "updated")
_LEG_FIELDS = ("link", "channel", "status", "deadline")
_ENTRY_FIELDS = ("txid", "side", "amount", "meeting_point", "state", "at_mp", "tried", "reason", "created", "updated")

ROUTING, WAITING, ROUTED, LOCKED = "routing", "waiting", "routed", "locked"
SETTLED, FAILED, CANCELLED, ROLLED_BACK = "settled", "failed", "cancelled", "rolled_back"
STATES = (ROUTING, WAITING, ROUTED, LOCKED, SETTLED, FAILED, CANCELLED, ROLLED_BACK)
ACTIVE = (ROUTING, WAITING, ROUTED, LOCKED)
ENDED = (SETTLED, FAILED, CANCELLED, ROLLED_BACK)

MAKE, RETRY, REACH, ROUTE, FAIL, CANCEL = "make", "retry", "reach", "route", "fail", "cancel"
LOCK, SETTLE, ROLLBACK, REVERT, LOSE = "lock", "settle", "rollback", "revert", "lose"
EVENTS = (MAKE, RETRY, REACH, ROUTE, FAIL, CANCEL, LOCK, SETTLE, ROLLBACK, REVERT, LOSE)

NEW = None  # the state of an entry that does not exist yet

# state -> {event: next state}; a pair that is not here is refused (RouteStateError).
TRANSITIONS = {
    NEW: {MAKE: ROUTING},
    ROUTING: {RETRY: ROUTING, REACH: WAITING, ROUTE: ROUTED, FAIL: FAILED, CANCEL: CANCELLED, ROLLBACK: ROLLED_BACK},
    WAITING: {ROUTE: ROUTED, FAIL: FAILED, CANCEL: CANCELLED, ROLLBACK: ROLLED_BACK},
    ROUTED: {CANCEL: CANCELLED, LOCK: LOCKED, ROLLBACK: ROLLED_BACK},
    LOCKED: {SETTLE: SETTLED, ROLLBACK: ROLLED_BACK, REVERT: ROLLED_BACK, LOSE: ROLLED_BACK},
    # A SettleCommit of ours can cross the peer's rollback after this entry settled, or
    # after its own claim was lost; a claim can be refused after the entry rolled back with
    # the claim standing; an entry whose claim was lost still holds an out leg it did not
    # pay (developer mode), which the peer's SettleRollback drops.
    SETTLED: {REVERT: ROLLED_BACK},
    FAILED: {},
    CANCELLED: {},
    ROLLED_BACK: {ROLLBACK: ROLLED_BACK, REVERT: ROLLED_BACK, LOSE: ROLLED_BACK},
}

IN_LEG = ("up", "down")    # indexed by side
OUT_LEG = ("down", "up")
ROLES = ("payer", "payee")  # the endpoint role of each side
HELD = ("proposed", "reserved", "locked")  # leg statuses that keep a hold on the channel


class RouteStateError(ProtocolError):
    """An input the route entry's state does not accept (TRANSITIONS)."""


def txid_text(txid):
    return txid.hex()[:12]


def next_state(state, event, what=None, txid=None, side=None):
    """The state `event` moves an entry in `state` to; RouteStateError if the table has no such move."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        pass
    if event not in EVENTS:
        raise RouteStateError("no route event %r" % (event,))
    legal = sorted(s for s, moves in TRANSITIONS.items() if s is not None and event in moves)
    where = "" if txid is None else " for transaction %s side %d" % (txid_text(txid), side)
    raise RouteStateError("%s%s, which is %s (not %s)"
                          % (what or event, where, state or "not known", "/".join(legal) or "known"))


class Leg:
    """One leg of a route entry: the channel (link, id) it holds on, its status and deadline."""

    __slots__ = ("name", "link", "channel", "status", "deadline")

    def __init__(self, name, link=None, channel=None, status=None, deadline=None):
        self.name = name
        self.link, self.channel, self.status, self.deadline = link, channel, status, deadline

    @property
    def held(self):
        return self.link is not None and self.status in HELD

    def clear(self, deadline=True):
        self.link = self.channel = self.status = None
        if deadline:
            self.deadline = None

    def __repr__(self):
        return "Leg(%s %s/%s %s %s)" % (self.name, self.link, self.channel, self.status, self.deadline)


class Route:
    __slots__ = ("txid", "side", "amount", "meeting_point", "state", "at_mp", "up", "down", "tried", "reason",
                 "created", "updated", "_saved")

    def __init__(self, row):
        for name in _ENTRY_FIELDS:
            setattr(self, name, row.get(name))
        self.up = Leg("up", *(row.get("up_" + f) for f in _LEG_FIELDS))
        self.down = Leg("down", *(row.get("down_" + f) for f in _LEG_FIELDS))
        self._saved = dict(row)

    # ---- reading ----

    @classmethod
    def load(cls, db, txid, side):
        row = db.execute("SELECT %s FROM routes WHERE txid = ? AND side = ?" % ", ".join(COLUMNS),
                         (txid, side)).fetchone()
        return None if row is None else cls(dict(zip(COLUMNS, row)))

    @property
    def in_leg(self):
        return self.up if self.side == 0 else self.down

    @property
    def out_leg(self):
        return self.down if self.side == 0 else self.up

    @property
    def at_endpoint(self):
        """This node started the entry (the payer's or the payee's own node)."""
        return self.up.link is None

    @property
    def ended(self):
        return self.state in ENDED

    def leg(self, name):
        return self.up if name == "up" else self.down

    def tried_ways(self):
        return json.loads(self.tried)

    def row(self):
        row = {name: getattr(self, name) for name in _ENTRY_FIELDS}
        for leg in (self.up, self.down):
            for f in _LEG_FIELDS:
                row[leg.name + "_" + f] = getattr(leg, f)
        return row

    def __repr__(self):
        return "Route(%s/%d %s %r %r)" % (txid_text(self.txid), self.side, self.state, self.up, self.down)

    # ---- changing ----

    @classmethod
    def make(cls, db, now, txid, side, amount, meeting_point, up=None):
        """A new entry in state routing (event make); up: (link, channel, status, deadline)."""
        r = cls({"txid": txid, "side": side, "amount": amount, "meeting_point": meeting_point, "at_mp": 0,
                 "tried": "[]", "created": int(now), "updated": int(now)})
        r.state = next_state(NEW, MAKE, txid=txid, side=side)
        if up is not None:
            r.up.link, r.up.channel, r.up.status, r.up.deadline = up
        row = r.row()
        fields = [k for k in COLUMNS if row[k] is not None]
        db.execute("INSERT INTO routes (%s) VALUES (%s)" % (", ".join(fields), ", ".join("?" * len(fields))),
                   [row[k] for k in fields])
        r._saved = row
        return r

    def apply(self, db, now, event, what=None, reason=None):
        """Move to the state TRANSITIONS gives for event (RouteStateError if none) and save,
        with the leg and field changes made on this object since it was last saved."""
        self.state = next_state(self.state, event, what, self.txid, self.side)
        if reason is not None:
            self.reason = reason
        self.save(db, now)

    def accepts(self, event):
        return event in TRANSITIONS[self.state]

    def check(self, event, what=None):
        """Raise RouteStateError unless this entry accepts event now (nothing changes)."""
        next_state(self.state, event, what, self.txid, self.side)

    def save(self, db, now):
        """Write the fields changed on this object since it was loaded or saved (and `updated`)."""
        self.updated = int(now)
        row = self.row()
        changed = [k for k in COLUMNS if row[k] != self._saved.get(k)]
        if not changed:
            return
        db.execute("UPDATE routes SET %s WHERE txid = ? AND side = ?" % ", ".join("%s = ?" % k for k in changed),
                   [row[k] for k in changed] + [self.txid, self.side])
        self._saved = row

    def save_leg(self, db, leg):
        """Write one leg's status alone (a hold dropped), leaving `updated` as it is."""
        db.execute("UPDATE routes SET %s_status = ? WHERE txid = ? AND side = ?" % leg.name,
                   (leg.status, self.txid, self.side))
        self._saved[leg.name + "_status"] = leg.status

    # ---- timers ----

    def set_timer(self, db, kind, due):
        due = round(float(due), 3)
        db.execute("INSERT OR REPLACE INTO timers (txid, side, kind, due) VALUES (?, ?, ?, ?)",
                   (self.txid, self.side, kind, int(due) if due == int(due) else due))

    def clear_timers(self, db, *kinds):
        if not kinds:
            db.execute("DELETE FROM timers WHERE txid = ? AND side = ?", (self.txid, self.side))
        for kind in kinds:
            db.execute("DELETE FROM timers WHERE txid = ? AND side = ? AND kind = ?", (self.txid, self.side, kind))


# ---- the tables, as a whole ----

def entries(db, txid):
    """The entries (side 0, then 1) this node has of txid."""
    return [r for r in (Route.load(db, txid, 0), Route.load(db, txid, 1)) if r is not None]


def pending_on_link(db, link):
    """Route entries in progress that use link (either leg)."""
    marks = ", ".join("?" * len(ACTIVE))
    return db.execute(
        "SELECT (SELECT COUNT(*) FROM routes WHERE up_link = ? AND state IN (%s)) + "
        "(SELECT COUNT(*) FROM routes WHERE down_link = ? AND state IN (%s))" % (marks, marks),
        (link,) + ACTIVE + (link,) + ACTIVE).fetchone()[0]


def routing_on_channel(db, link, channel):
    """Entries still routing whose down leg is on (link, channel)."""
    return [Route.load(db, txid, side) for txid, side in db.execute(
        "SELECT txid, side FROM routes WHERE down_link = ? AND down_channel = ? AND state = ?",
        (link, channel, ROUTING)).fetchall()]


def active_rows(db):
    """Every entry in progress, oldest first, as column dicts."""
    return [dict(zip(COLUMNS, row)) for row in db.execute(
        "SELECT %s FROM routes WHERE state IN (%s) ORDER BY created"
        % (", ".join(COLUMNS), ", ".join("?" * len(ACTIVE))), ACTIVE).fetchall()]


def recently_ended(db, limit=200):
    """The last entries that ended: dicts of txid, side, state, reason, updated."""
    return [{"txid": r[0], "side": r[1], "state": r[2], "reason": r[3], "updated": r[4]} for r in db.execute(
        "SELECT txid, side, state, reason, updated FROM routes WHERE state IN (%s) ORDER BY updated DESC LIMIT ?"
        % ", ".join("?" * len(ENDED)), ENDED + (limit,)).fetchall()]


def known_token(db, txid):
    row = db.execute("SELECT token FROM tokens WHERE txid = ?", (txid,)).fetchone()
    return None if row is None else bytes(row[0])


def remember_token(db, txid, token):
    db.execute("INSERT OR IGNORE INTO tokens (txid, token) VALUES (?, ?)", (txid, token))


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


def take_timer(db, txid, side, kind, now):
    """Delete the timer if it is due at now; returns True if it was."""
    row = db.execute("SELECT due FROM timers WHERE txid = ? AND side = ? AND kind = ?", (txid, side, kind)).fetchone()
    if row is None or row[0] > now:
        return False
    db.execute("DELETE FROM timers WHERE txid = ? AND side = ? AND kind = ?", (txid, side, kind))
    return True


def postpone_timer(db, txid, side, kind, due):
    db.execute("UPDATE timers SET due = ? WHERE txid = ? AND side = ? AND kind = ?", (due, txid, side, kind))


def purge(db, cutoff):
    """Delete entries that ended before cutoff and hold nothing, with the tokens and timers no
    entry refers to any more; returns the number of entries deleted."""
    marks = ", ".join("?" * len(ENDED))
    n = db.execute(
        "DELETE FROM routes WHERE state IN (%s) AND updated < ? AND NOT EXISTS "
        "(SELECT 1 FROM holds h WHERE h.txid = routes.txid AND h.side = routes.side)" % marks,
        ENDED + (cutoff,)).rowcount
    if n:
        db.execute("DELETE FROM tokens WHERE txid NOT IN (SELECT txid FROM routes)")
        db.execute("DELETE FROM timers WHERE NOT EXISTS "
                   "(SELECT 1 FROM routes r WHERE r.txid = timers.txid AND r.side = timers.side)")
    return n
