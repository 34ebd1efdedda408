"""The node's payment engine: every state change of links, channels, routes and payments.

Every method takes `db`, the handle of an open store transaction (Store.transaction()),
and does all its work in it: rows change and the link messages it causes are enqueued
(amiko.node.outbox) in the same transaction, so either all of it commits or none of it.
Events for the daemon are delivered only after that transaction commits.

The engine owns the payment state: the route entries (amiko.node.route, with the one table
of their transitions) and what routing, settlement, timeouts, claims and credit do with them.
Those modules get a narrow context (amiko.node.context.Context: send, emit, clock, config,
identity, refuse_settle), never the engine; everything outside asks the engine (route_entry,
known_token, payment, status, ...), never those modules or their tables.

    Engine(store, node_config, identity=None, clock=time.time)
        identity (amiko.node.identity.Identity) is required for meeting points: they are
        named NAME@KEY by its key (amiko.node.meetingpoints) and sign their HaveRoutes.
        node_config: a dict or an object with attributes (missing ones take DEFAULTS):
        name, meeting_points (NAME or NAME@<own key>; another key is refused),
        external_meeting_points (NAME@KEY of other nodes), route_timeout, lock_timeout,
        timeout_increment, max_pending_per_link, max_outbox_per_link,
        max_channels_per_link, max_deadline_window, auto_release
    subscribe(fn)                   fn(event) after commit; event: amiko.node.events.Event
        (kind, txid, side, reason: route_found, route_failed, locked, settled, rolled_back,
        dispute) or PeerError(link, code, reason) (the peer refused one of our messages)
    on_link_message(db, link, msg)  a message the link layer received on link (after its
        sequencing): MakeRoute, HaveNoRoute, CancelRoute, HaveRoute, Lock, RequestCommit,
        SettleCommit, SettleRollback, Deposit, Withdraw, Error. Peer input is hostile: the
        message is validated again, and anything that does not fit the state (unknown
        txid/channel, wrong link, amount mismatch, wrong token, ...) raises AmikoError with
        the reason; the caller rolls the transaction back, so nothing changed.
    add_link(db, name, remote_url=None, remote_key=None); links(db)
    set_credit_limit(db, link, limit): how much the peer may deposit on link (amiko.node.credit;
        default 0: a peer's Deposit is refused until the operator sets a limit)
    deposit(db, link, amount) -> channel id; withdraw(db, link, channel_id)
    add_meeting_point(db, mp_id) -> NAME@KEY; meeting_points(db) -> own ids (config + added)
    create_request(db, amount, receipt) -> dict(payment_id, txid, token, meeting_points,
        amount, receipt)
    start_route(db, txid, side, amount, meeting_point, payment_id=None)
    lock(db, txid)                  payer endpoint, once both halves are routed
    release_token(db, txid, token)  payer got Commit{token} / payee releases: commits network
    cancel_route(db, txid, side, reason)  an endpoint drops its half before lock
    rollback(db, txid, side, reason)      give up (txid, side) here toward the payer (issue 4)
    record_payment(db, **fields); update_payment(db, txid, role, **fields); payment(db, txid, role)
    due_timers(db, now=None) -> [dict(txid, side, kind, due)]; next_timer(db) -> due or None
    fire_timer(db, txid, side, kind, now=None) -> bool   fire one due timer (amiko.node.timeouts)
    postpone_timer(db, txid, side, kind, due)   a timer whose firing failed (the timer loop)
    purge(db, now=None) -> int      delete tombstones older than tombstone_retention
    route_entry(db, txid, side) -> amiko.node.route.Route or None   read it, do not change it
    known_token(db, txid) -> bytes or None   the token this node learned for txid
    All times are from clock() (float seconds; tests pass a fake clock): route/lock timers
    are local and sub-second, deadlines on the wire whole seconds (rounded up).
    status(db) -> dict (JSON-ready): name, balance, links, channels, pending, meeting points,
        history (payments at this endpoint, with state and reason), routes (the last 200 route
        entries that ended here: txid, side, state, reason, updated), disputes (link, channel,
        txid, side, amount, token, state, reason, created, updated; amiko.node.disputes); every
        link row has credit_limit and credit_used (capacity of the peer's open channels)
    refuse_settle: a set of link names, empty unless `amiko node --developer` fills it: this
        node then cheats those peers on purpose (settlement module doc), for the attack tests

Bounds: new work over a link (a MakeRoute from it, or choosing it as the next hop) is
refused with HaveNoRoute once max_pending_per_link payments use it or max_outbox_per_link
messages wait in its outbox; a link has at most max_channels_per_link channels. Messages
that follow from existing work are always enqueued (their number is bounded by that work).
"""

import logging
import os
import time

from amiko_core import messages as m
from amiko_core.errors import AmikoError

from amiko.node import channels, claims, credit, disputes, endpoints, meetingpoints, outbox, route, routing, settlement
from amiko.node import timeouts
from amiko.node.context import Context
from amiko.node.events import PeerError

log = logging.getLogger("amiko.engine")

DEFAULTS = {
    "name": "node",
    "meeting_points": (),
    "external_meeting_points": (),
    "route_timeout": 10,
    "lock_timeout": 10,
    "timeout_increment": 5,
    "max_pending_per_link": 1000,
    "max_outbox_per_link": 10000,
    "max_channels_per_link": 64,
    "max_deadline_window": None,  # default: route_timeout + lock_timeout + 64 increments (64 hops)
    "auto_release": True,
    "tombstone_retention": None,  # default: max(3600, 2 * max_deadline_window) seconds
}


class Config:
    """The engine's view of node_config, with defaults."""

    def __init__(self, node_config):
        for key, default in DEFAULTS.items():
            if isinstance(node_config, dict):
                value = node_config.get(key, default)
            else:
                value = getattr(node_config, key, default)
            setattr(self, key, default if value is None else value)
        self.meeting_points = tuple(self.meeting_points)  # made NAME@KEY by the Engine
        self.external_meeting_points = tuple(self.external_meeting_points)
        for mp in self.external_meeting_points:
            meetingpoints.check(mp)
        if self.max_deadline_window is None:
            self.max_deadline_window = self.route_timeout + self.lock_timeout + 64 * self.timeout_increment
        if self.tombstone_retention is None:
            self.tombstone_retention = max(3600, 2 * self.max_deadline_window)


def _hex(value):
    return value.hex() if isinstance(value, (bytes, bytearray)) else value


class Engine:
    def __init__(self, store, node_config, identity=None, clock=time.time):
        self.store = store
        self.cfg = Config(node_config)
        self.identity = identity
        if self.cfg.meeting_points and identity is None:
            raise AmikoError("a meeting point is named by its node's key: the engine needs the node's identity")
        self.cfg.meeting_points = tuple(meetingpoints.own(mp, identity.pubkey) for mp in self.cfg.meeting_points)
        self.clock = clock
        self._subscribers = []
        self.refuse_settle = set()  # developer mode only (see the module doc)
        # all that routing, settlement, timeouts, claims and credit may use of the engine
        self._ctx = Context(self.send, self.emit, clock, self.cfg, identity, self.refuse_settle)
        self._handlers = {
            m.MAKE_ROUTE: routing.on_make_route,
            m.HAVE_NO_ROUTE: routing.on_have_no_route,
            m.CANCEL_ROUTE: routing.on_cancel_route,
            m.HAVE_ROUTE: routing.on_have_route,
            m.LOCK: settlement.on_lock,
            m.REQUEST_COMMIT: settlement.on_request_commit,
            m.SETTLE_COMMIT: settlement.on_settle_commit,
            m.SETTLE_ROLLBACK: settlement.on_settle_rollback,
            m.DEPOSIT: self._on_deposit,
            m.WITHDRAW: self._on_withdraw,
            m.ERROR: self._on_error,
        }

    # ---- plumbing ----

    def now(self):
        return int(self.clock())

    def subscribe(self, fn):
        self._subscribers.append(fn)

    def emit(self, db, event):
        db.after_commit(lambda: self._deliver(event))

    def _deliver(self, event):
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:
                log.exception("engine: event subscriber failed on %r", event)

    def send(self, db, link, msg):
        return outbox.enqueue(db, link, msg, limit=None)

    def own_meeting_points(self, db):
        return routing.own_meeting_points(self._ctx, db)

    # ---- link messages ----

    def on_link_message(self, db, link, msg):
        if not isinstance(msg, m.Message):
            raise AmikoError("link %s: expected a message, got %s" % (link, type(msg).__name__))
        handler = self._handlers.get(msg.type)
        if handler is None:
            raise AmikoError("link %s: %s is not a node link message" % (link, msg.name))
        if channels.get_link(db, link) is None:
            raise AmikoError("no link named %s" % link)
        try:
            # Build it again: validates every field even if msg did not come from decode().
            msg = m.Message(msg.type, dict(msg.fields))
        except AmikoError as e:
            raise AmikoError("invalid %s from link %s: %s" % (msg.name, link, e.reason))
        handler(self._ctx, db, link, msg)

    def _on_deposit(self, _ctx, db, link, msg):
        self._check_channel_room(db, link)
        channels.check_amount(msg.amount, "deposit amount")
        credit.check_peer_deposit(db, link, msg.amount)
        channels.open_channel(db, link, msg.channel, 0, msg.amount, now=self.now())
        credit.accepted(db, link, msg.channel, msg.amount)

    def _on_withdraw(self, _ctx, db, link, msg):
        ch = channels.require(db, link, msg.channel)
        if ch.state == "closed":
            return  # both sides withdrew at once
        # Reserved holds here can only be our MakeRoute crossing the Withdraw: the peer
        # answers it with HaveNoRoute and the channel closes then. Locked ones: refused.
        channels.close_channel(ch, allow_reserved=True)

    def _on_error(self, ctx, db, link, msg):
        if msg.ref_type == m.REQUEST_COMMIT and msg.ref_seq is not None:
            claims.refused(ctx, db, link, msg.ref_seq, msg.reason)
        elif msg.ref_type == m.DEPOSIT and msg.ref_seq is not None:
            credit.deposit_refused(ctx, db, link, msg.ref_seq, msg.reason)
        log.warning("link %s refused our %s (seq %s): %s", link, m.name_of(msg.ref_type) if msg.ref_type else "message",
                    msg.ref_seq, msg.reason)
        self.emit(db, PeerError(link, msg.code, msg.reason))

    # ---- links and channels ----

    def add_link(self, db, name, remote_url=None, remote_key=None):
        channels.add_link(db, name, remote_url, remote_key, now=self.now())

    def links(self, db):
        return channels.list_links(db)

    def set_credit_limit(self, db, link, limit):
        credit.set_limit(db, link, limit, self.now())

    def _check_channel_room(self, db, link):
        if channels.get_link(db, link) is None:
            raise AmikoError("no link named %s" % link)
        n = db.execute("SELECT COUNT(*) FROM channels WHERE link = ? AND state != 'closed'", (link,)).fetchone()[0]
        if n >= self.cfg.max_channels_per_link:
            raise AmikoError("link %s has %d open channels, the most allowed" % (link, n))

    def deposit(self, db, link, amount):
        channels.check_amount(amount, "deposit amount")
        self._check_channel_room(db, link)
        while True:
            cid = int.from_bytes(os.urandom(6), "big")
            if channels.load(db, link, cid) is None:
                break
        channels.open_channel(db, link, cid, amount, 0, now=self.now())
        seq = self.send(db, link, m.Message(m.DEPOSIT, channel=cid, amount=amount))
        credit.sent(db, link, seq, cid)
        return cid

    def withdraw(self, db, link, channel_id):
        ch = channels.require(db, link, channel_id)
        channels.close_channel(ch)
        self.send(db, link, m.Message(m.WITHDRAW, channel=channel_id))

    # ---- endpoints ----

    def add_meeting_point(self, db, mp_id):
        """Make this node the meeting point NAME (or NAME@<own key>); returns its id NAME@KEY."""
        if self.identity is None:
            raise AmikoError("a meeting point is named by its node's key: the engine needs the node's identity")
        mp_id = meetingpoints.own(mp_id, self.identity.pubkey)
        endpoints.add_meeting_point(db, mp_id, self.now())
        return mp_id

    def meeting_points(self, db):
        return sorted(self.own_meeting_points(db))

    def create_request(self, db, amount, receipt=""):
        offered = self.meeting_points(db) + [mp for mp in self.cfg.external_meeting_points
                                             if mp not in self.own_meeting_points(db)]
        return endpoints.create_request(db, amount, receipt, offered, self.now())

    def start_route(self, db, txid, side, amount, meeting_point, payment_id=None):
        routing.start(self._ctx, db, txid, side, amount, meeting_point)

    def lock(self, db, txid):
        settlement.lock_payer(self._ctx, db, txid)

    def release_token(self, db, txid, token):
        settlement.release_token(self._ctx, db, txid, token)

    def cancel_route(self, db, txid, side, reason="cancelled"):
        routing.cancel_endpoint(self._ctx, db, txid, side, reason)

    def rollback(self, db, txid, side, reason):
        settlement.rollback(self._ctx, db, txid, side, reason)

    def record_payment(self, db, **fields):
        endpoints.record_payment(db, now=self.now(), **fields)

    def update_payment(self, db, txid, role, **fields):
        endpoints.update_payment(db, txid, role, now=self.now(), **fields)

    def payment(self, db, txid, role):
        return endpoints.get_payment(db, txid, role)

    def due_timers(self, db, now=None, limit=None):
        return route.due(db, self.clock() if now is None else now, limit)

    def next_timer(self, db):
        return route.next_due(db)

    def postpone_timer(self, db, txid, side, kind, due):
        route.postpone_timer(db, txid, side, kind, due)

    def fire_timer(self, db, txid, side, kind, now=None):
        return timeouts.fire(self._ctx, db, txid, side, kind, self.clock() if now is None else now)

    def purge(self, db, now=None):
        """Delete route entries that ended more than tombstone_retention ago (amiko.node.timeouts)."""
        retention = self.cfg.tombstone_retention
        n = route.purge(db, int((self.clock() if now is None else now) - retention))
        if n:
            claims.purge(db)
            log.info("purged %d ended route entries older than %d s", n, retention)
        return n

    # ---- questions about payments, for the services outside the engine ----

    def route_entry(self, db, txid, side):
        """This node's route entry of (txid, side) (amiko.node.route.Route), or None."""
        return route.Route.load(db, txid, side)

    def known_token(self, db, txid):
        """The token of txid if this node learned it (bytes), or None."""
        return route.known_token(db, txid)

    # ---- status ----

    def status(self, db):
        chans = channels.channel_rows(db)
        return {
            "name": self.cfg.name,
            "balance": sum(c["local"] for c in chans),
            "links": [dict({k: _hex(v) for k, v in link.items()}, credit_limit=credit.limit(db, link["name"]),
                           credit_used=credit.in_use(db, link["name"])) for link in self.links(db)],
            "channels": chans,
            "pending": [{k: _hex(v) for k, v in row.items() if k != "tried"} for row in route.active_rows(db)],
            "meeting_points": self.meeting_points(db),
            "external_meeting_points": list(self.cfg.external_meeting_points),
            "history": [{k: _hex(v) for k, v in p.items()} for p in endpoints.history(db)],
            "routes": [dict(r, txid=_hex(r["txid"])) for r in route.recently_ended(db, 200)],
            "disputes": [{k: _hex(v) for k, v in d.items()} for d in disputes.rows(db)],
        }
