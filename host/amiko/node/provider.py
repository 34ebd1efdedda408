"""The provider role: a node holds wallet accounts and routes payments for them.

A wallet (firmware/) has one link: an IOU channel with its provider. Here that channel is a
row of `wallets`: `balance` is what the wallet can pay (IOUs the provider issued to it, e.g.
against cash: `amiko wallet topup`); payments in progress hold part of it (rows of
`wallet_payments` in state routing/routed/locked); available = balance - held. A committed
payment moves its amount from the wallet to the provider (balance -= amount), exactly when the
provider's own payer-side route entry settles in the network. The provider is the payer
endpoint in the network (engine.start_route(side 0), engine.lock): the wallet's funds never
leave this node except through the provider's own channels.

Tables (SCHEMA):
    wallets(id PK, key, balance, limit_amount, daily, auto, counter, pcounter, created)
        key: 32-byte HMAC key shared with the wallet; counter: last Auth counter accepted;
        pcounter: last Status counter sent
    wallet_payments(txid PK, wallet, amount, meeting_point, state, reason, token, day, created,
        updated)  state: routing | routed | locked | committed | cancelled

Wire (amiko_core.walletlink): a BOLT 8 stream (amiko.wire.stream; the terminal's relay connects
with an ephemeral key, pinned to this node's key from the wallet's amikolink URL) whose first
frame is an Auth is served here (serve): every Auth is answered with one Status (or an Error frame when the
Auth is not authenticated: unknown wallet, bad MAC, counter not above the last one: such an
Auth changes nothing); while the payment is routing, a second Status (same ref, next
counter) follows when the route is found or fails. Rules per action, all idempotent per txid:
    route   new txid: per-payment limit, daily limit (UTC day, committed and pending
            payments), available balance; the payee's signed Receipt the Auth carries
            (amiko.node.receipts: hash, payment, key, signature); the auto-confirm rules for
            an Auth confirmed without the button (amiko.node.autoconfirm); then
            engine.start_route(txid, side 0, amount, mp). A known txid: its current state.
    lock    routed -> engine.lock (the funds are locked); otherwise the current state
    commit  locked and hash160(token) == txid -> engine.release_token (commits the network)
    cancel  routing/routed -> engine.cancel_route; locked or final: the current state
    query   the current state (committed answers carry the token: the wallet's proof)
An Auth whose amount, meeting point, payee key or receipt hash differs from the txid's payment
is REFUSED.
Engine events (route_found/route_failed/settled/rolled_back for side 0) update the rows; the
rows are also reconciled with the route table at start (a crash between the engine's commit
and ours leaves nothing ambiguous: the route table decides).
"""

import asyncio
import logging
import os
import time

from amiko_core import codes
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.errors import AmikoError, DecodeError
from amiko_core.token import token_matches
from amiko_core.url import AmikoURL, LINK

from amiko.node import autoconfirm, events, paylink_tcp, receipts
from amiko.node import store as _store
from amiko.node.control import ControlError
from amiko.node.events import Event
from amiko.wire import stream as streams

log = logging.getLogger("amiko.provider")

SCHEMA = """
CREATE TABLE IF NOT EXISTS wallets (
    id           TEXT PRIMARY KEY,
    key          BLOB NOT NULL,
    balance      INTEGER NOT NULL CHECK (balance >= 0),
    limit_amount INTEGER NOT NULL,
    daily        INTEGER NOT NULL,
    auto         INTEGER NOT NULL,
    counter      INTEGER NOT NULL DEFAULT 0,
    pcounter     INTEGER NOT NULL DEFAULT 0,
    created      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS wallet_payments (
    txid          BLOB PRIMARY KEY,
    wallet        TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    meeting_point TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT,
    token         BLOB,
    day           INTEGER NOT NULL,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS wallet_payments_wallet ON wallet_payments (wallet, day);
"""

_store.register_schema(SCHEMA)

WAIT = 15
MAX_PENDING_ANSWERS = 16
HELD = ("routing", "routed", "locked")
# the payer-side engine events that move a wallet payment on (sync reads the route entry)
_PAYER_KINDS = (events.ROUTE_FOUND, events.ROUTE_FAILED, events.SETTLED, events.ROLLED_BACK)
FINAL = ("committed", "cancelled")
STATE_CODES = {"routing": wl.ROUTING, "routed": wl.ROUTED, "locked": wl.LOCKED,
               "committed": wl.COMMITTED, "cancelled": wl.CANCELLED}
# route entry state (amiko.node.route) -> wallet payment state
ROUTE_STATES = {"routing": "routing", "waiting": "routing", "routed": "routed", "locked": "locked",
                "settled": "committed", "failed": "cancelled", "cancelled": "cancelled",
                "rolled_back": "cancelled"}
_COLS = ("txid", "wallet", "amount", "meeting_point", "state", "reason", "token", "day", "created", "updated")


def _day(t):
    return int(t) // 86400


class Provider:
    def __init__(self, ledger, engine, identity, config, clock=time.time):
        self.ledger = ledger
        self.engine = engine
        self.identity = identity
        self.config = config
        self.clock = clock
        self._waiters = {}  # txid -> asyncio.Event, set on an engine event for it

    # ---------------------------------------------------------------- rows

    @staticmethod
    def wallet(db, wallet_id):
        row = db.execute("SELECT id, key, balance, limit_amount, daily, auto, counter, pcounter, created "
                         "FROM wallets WHERE id = ?", (wallet_id,)).fetchone()
        if row is None:
            return None
        return dict(zip(("id", "key", "balance", "limit", "daily", "auto", "counter", "pcounter", "created"), row))

    @staticmethod
    def payment(db, txid):
        row = db.execute("SELECT %s FROM wallet_payments WHERE txid = ?" % ", ".join(_COLS), (txid,)).fetchone()
        return None if row is None else dict(zip(_COLS, row))

    def _set(self, db, p, **changes):
        changes["updated"] = int(self.clock())
        db.execute("UPDATE wallet_payments SET %s WHERE txid = ?" % ", ".join("%s = ?" % k for k in changes),
                   list(changes.values()) + [p["txid"]])
        p.update(changes)

    def held(self, db, wallet_id):
        return db.execute("SELECT COALESCE(SUM(amount), 0) FROM wallet_payments WHERE wallet = ? AND state IN "
                          "('routing', 'routed', 'locked')", (wallet_id,)).fetchone()[0]

    def spent_today(self, db, wallet_id, day):
        return db.execute("SELECT COALESCE(SUM(amount), 0) FROM wallet_payments WHERE wallet = ? AND day = ? AND "
                          "state != 'cancelled'", (wallet_id, day)).fetchone()[0]

    def sync(self, db, p):
        """Bring a payment row in line with the engine's payer-side route entry."""
        if p["state"] in FINAL:
            return p
        r = self.engine.route_entry(db, p["txid"], 0)
        state = "cancelled" if r is None else ROUTE_STATES.get(r.state, p["state"])
        if state == p["state"]:
            return p
        if state == "committed":
            token = self.engine.known_token(db, p["txid"])
            db.execute("UPDATE wallets SET balance = balance - ? WHERE id = ?", (p["amount"], p["wallet"]))
            self._set(db, p, state="committed", token=bytes(token) if token else None)
            log.info("wallet %s paid %d (%s)", p["wallet"], p["amount"], p["txid"].hex())
        elif state == "cancelled":
            self._set(db, p, state="cancelled", reason=(r and r.reason) or p["reason"] or "no route")
        else:
            self._set(db, p, state=state)
        return p

    def reconcile(self, db):
        rows = db.execute("SELECT txid FROM wallet_payments WHERE state IN ('routing', 'routed', 'locked')").fetchall()
        for (txid,) in rows:
            self.sync(db, self.payment(db, txid))

    # ---------------------------------------------------------------- authorisations

    def handle_auth(self, db, msg):
        """Process one Auth in transaction db: (Status message, txid to wait on or None) or an
        Error message (not authenticated: nothing changed)."""
        w = self.wallet(db, msg.wallet)
        if w is None:
            return paylink_tcp.error_frame(codes.UNAUTHENTICATED, "unknown wallet %s" % msg.wallet, wl.AUTH), None
        if not wl.verify(w["key"], msg):
            return paylink_tcp.error_frame(codes.UNAUTHENTICATED, "authorisation MAC does not verify", wl.AUTH), None
        if msg.counter <= w["counter"]:
            return paylink_tcp.error_frame(codes.UNAUTHENTICATED, "authorisation counter %d is not above %d (replay)"
                                           % (msg.counter, w["counter"]), wl.AUTH), None
        db.execute("UPDATE wallets SET counter = ? WHERE id = ?", (msg.counter, w["id"]))
        now = self.clock()
        p = self.payment(db, msg.txid)
        reason = None
        if p is not None and (p["wallet"] != w["id"] or p["amount"] != msg.amount
                              or p["meeting_point"] != msg.meeting_point or not receipts.bound(db, msg)):
            return self._status(db, w, msg, wl.REFUSED, "authorisation differs from the payment of this transaction"), None
        if p is not None:
            p = self.sync(db, p)
        action = msg.action
        if action == wl.ROUTE and p is None:
            refusal = self._route_refusal(db, w, msg.txid, msg.amount, now) or self._vouch_refusal(db, w, msg)
            p = self._new_payment(db, w, msg, now, refusal)
            if refusal is None:
                receipts.record(db, msg)
                autoconfirm.record(db, w["id"], msg)
                try:
                    self.engine.record_payment(db, txid=msg.txid, role="payer", amount=msg.amount,
                                                    state="confirmed", meeting_point=msg.meeting_point,
                                                    payment_id=w["id"])
                except Exception as e:  # a payer row for this txid exists already
                    log.info("wallet %s: %s", w["id"], e)
                try:
                    self.engine.start_route(db, msg.txid, 0, msg.amount, msg.meeting_point)
                except AmikoError as e:
                    self._set(db, p, state="cancelled", reason=e.reason)
                p = self.sync(db, p)
            if refusal is not None:
                return self._status(db, w, msg, wl.REFUSED, refusal), None
        elif p is None:
            return self._status(db, w, msg, wl.CANCELLED, "no payment with this transaction id"), None
        elif action == wl.LOCK and p["state"] == "routed":
            self.engine.lock(db, msg.txid)
            p = self.sync(db, p)
        elif action == wl.COMMIT and p["state"] == "locked" and token_matches(msg.token, msg.txid):
            self.engine.release_token(db, msg.txid, msg.token)
            p = self.sync(db, p)
        elif action == wl.CANCEL and p["state"] in ("routing", "routed"):
            self.engine.cancel_route(db, msg.txid, 0, "cancelled by the wallet")
            p = self.sync(db, p)
        if p["state"] == "cancelled":
            reason = p["reason"]
        wait = msg.txid if p["state"] == "routing" else None
        return self._status(db, w, msg, STATE_CODES[p["state"]], reason, p.get("token")), wait

    def _route_refusal(self, db, w, txid, amount, now):
        if amount > w["limit"]:
            return "amount %d is over the wallet's per-payment limit %d" % (amount, w["limit"])
        spent = self.spent_today(db, w["id"], _day(now))
        if spent + amount > w["daily"]:
            return "amount %d is over the wallet's daily limit (%d of %d used)" % (amount, spent, w["daily"])
        available = w["balance"] - self.held(db, w["id"])
        if amount > available:
            return "amount %d is over the wallet's available balance %d" % (amount, available)
        if self.engine.route_entry(db, txid, 0) is not None:
            return "this node routes that transaction already"
        return None

    @staticmethod
    def _vouch_refusal(db, w, msg):
        """The payee's Receipt, then the auto-confirm rules (the signature check costs most:
        bench/RESULTS.md, "Provider receipt check")."""
        problem = receipts.problem(msg)
        if problem is not None:
            log.info("wallet %s: refused a route: %s", w["id"], problem)
            return problem
        return autoconfirm.refusal(db, w, msg)

    def _new_payment(self, db, w, msg, now, refusal):
        state = "cancelled" if refusal else "routing"
        db.execute("INSERT INTO wallet_payments (txid, wallet, amount, meeting_point, state, reason, day, created, "
                   "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (msg.txid, w["id"], msg.amount, msg.meeting_point, state, refusal, _day(now), int(now), int(now)))
        return self.payment(db, msg.txid)

    def _status(self, db, w, msg, state, reason=None, token=None):
        pcounter = w["pcounter"] + 1
        db.execute("UPDATE wallets SET pcounter = ? WHERE id = ?", (pcounter, w["id"]))
        w["pcounter"] = pcounter
        balance = db.execute("SELECT balance FROM wallets WHERE id = ?", (w["id"],)).fetchone()[0]
        if reason is not None:
            reason = m.cut_reason(reason)
        return wl.status(w["key"], w["id"], pcounter, msg.counter, msg.txid, state, msg.amount, msg.meeting_point,
                         balance, int(self.clock()), token=bytes(token) if state == wl.COMMITTED and token else None,
                         reason=reason)

    # ---------------------------------------------------------------- events

    def on_event(self, event):
        if not isinstance(event, Event) or event.side != 0 or event.kind not in _PAYER_KINDS:
            return
        txid = event.txid

        def update(db):
            p = self.payment(db, txid)
            if p is not None:
                self.sync(db, p)

        self.ledger.transact(update)
        ev = self._waiters.get(txid)
        if ev is not None:
            ev.set()

    # ---------------------------------------------------------------- connections

    async def serve(self, stream, first):
        """A terminal relays a wallet's Auth frames over an authenticated stream: answer each
        with a Status (or an Error frame). A frame that does not decode ends the connection."""
        tasks = set()
        fr = first
        try:
            while True:
                try:
                    msg = m.from_frame(fr)
                except DecodeError as e:
                    log.info("provider: bad frame from %s: %s", stream.peer, e.reason)
                    stream.send(paylink_tcp.error_frame(codes.PROTOCOL, e.reason, fr.type))
                    break
                if msg.type != wl.AUTH:
                    stream.send(paylink_tcp.error_frame(codes.UNEXPECTED, "the provider takes only Auth, got %s"
                                                        % msg.name, msg.type))
                elif len(tasks) >= MAX_PENDING_ANSWERS:
                    stream.send(paylink_tcp.error_frame(codes.UNEXPECTED, "too many authorisations in progress",
                                                        msg.type))
                else:
                    task = asyncio.ensure_future(self._answer(stream, msg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                try:
                    fr = await stream.recv()
                except streams.StreamClosed:
                    break
                except streams.StreamError as e:
                    log.info("provider: closing the connection from %s: %s", stream.peer, e.reason)
                    break
            await asyncio.wait_for(stream.drain(), 5)
        except (streams.StreamError, ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            for t in list(tasks):
                t.cancel()

    async def _answer(self, stream, msg):
        """Answer at once; while the payment is routing, send a fresh Status (same ref, next
        counter) when the route is found or fails (at most WAIT s later)."""
        answer, wait = self.ledger.transact(self.handle_auth, msg)
        if stream.is_closing():
            return
        _send(stream, answer if isinstance(answer, bytes) else m.to_frame(answer))
        if wait is None:
            return
        ev = self._waiters.setdefault(wait, asyncio.Event())
        try:
            await asyncio.wait_for(ev.wait(), WAIT)
        except asyncio.TimeoutError:
            return
        finally:
            if self._waiters.get(wait) is ev:
                del self._waiters[wait]
        answer = self.ledger.transact(self._fresh_status, msg)
        if not stream.is_closing():
            _send(stream, m.to_frame(answer))

    def _fresh_status(self, db, msg):
        w = self.wallet(db, msg.wallet)
        p = self.sync(db, self.payment(db, msg.txid))
        return self._status(db, w, msg, STATE_CODES[p["state"]], p["reason"] if p["state"] == "cancelled" else None,
                            p.get("token"))

    # ---------------------------------------------------------------- control methods

    def methods(self):
        return {"wallet_provision": self.rpc_provision, "wallet_invite": self.rpc_invite, "wallet_topup": self.rpc_topup,
                "wallet_info": self.rpc_info}

    def provider_url(self, wallet_id):
        cfg = self.config
        return str(AmikoURL(LINK, cfg.host, cfg.port, wallet_id, {"key": self.identity.pubkey.hex()}))

    @staticmethod
    def _limits(params):
        values = {}
        for name in ("limit", "daily", "auto"):
            v = params.get(name)
            if type(v) is not int or not 0 <= v <= m.MAX_AMOUNT or (name != "auto" and v == 0):
                raise ControlError("invalid", "%s must be a whole number in %d..%d" % (name, name != "auto", m.MAX_AMOUNT))
            values[name] = v
        return values

    def rpc_provision(self, params, conn):
        wallet_id = params.get("wallet")
        problem = _id_problem(wallet_id)
        if problem:
            raise ControlError("invalid", "wallet id %r %s" % (wallet_id, problem))
        try:
            key = bytes.fromhex(params.get("key", ""))
        except (TypeError, ValueError):
            key = b""
        if len(key) != wl.KEY_SIZE:
            raise ControlError("invalid", "key must be %d bytes of hex" % wl.KEY_SIZE)
        values = self._limits(params)
        try:
            values.update(autoconfirm.values(params, values["auto"]))
        except ValueError as e:
            raise ControlError("invalid", str(e)) from None

        self.ledger.transact(self.create_account, wallet_id, key, values)
        return {"wallet": wallet_id, "provider": self.provider_url(wallet_id), "balance": 0, **values}

    def create_account(self, db, wallet_id, key, values):
        """Insert a wallet account (both provisioning paths: HOME and invitation)."""
        if self.wallet(db, wallet_id) is not None:
            raise ControlError("refused", "wallet %s exists already on this provider" % wallet_id)
        db.execute("INSERT INTO wallets (id, key, balance, limit_amount, daily, auto, created) "
                   "VALUES (?, ?, 0, ?, ?, ?, ?)", (wallet_id, key, values["limit"], values["daily"],
                                                    values["auto"], int(self.clock())))
        # (an invitation grants limit, daily and auto: the other auto-confirm limits are the defaults)
        autoconfirm.create(db, wallet_id, autoconfirm.values(values, values["auto"]))

    def rpc_invite(self, params, conn):
        """A one-time invitation code for `amiko wallet provision --provider URL --invite CODE`."""
        from amiko.node import provisioning

        values = self._limits(params)
        ttl = params.get("ttl", provisioning.DEFAULT_TTL)
        if type(ttl) is not int or not 0 < ttl <= provisioning.MAX_TTL:
            raise ControlError("invalid", "ttl must be a whole number of seconds in 1..%d" % provisioning.MAX_TTL)
        code, expires = provisioning.create_invitation(self.ledger, values["limit"], values["daily"],
                                                       values["auto"], ttl, self.clock)
        url = self.provider_url("w-" + os.urandom(4).hex())
        return {"code": provisioning.format_code(code), "expires": expires, "url": url, **values}

    def rpc_topup(self, params, conn):
        wallet_id = params.get("wallet")
        amount = params.get("amount")
        if type(amount) is not int or not 0 < amount <= m.MAX_AMOUNT:
            raise ControlError("invalid", "amount must be a whole number in 1..%d" % m.MAX_AMOUNT)

        def topup(db):
            if self.wallet(db, wallet_id) is None:
                raise ControlError("not_found", "no wallet %r on this provider: provision it first" % (wallet_id,))
            balance = db.execute("SELECT balance FROM wallets WHERE id = ?", (wallet_id,)).fetchone()[0]
            if balance + amount > m.MAX_AMOUNT:
                raise ControlError("invalid", "the balance would exceed %d" % m.MAX_AMOUNT)
            db.execute("UPDATE wallets SET balance = balance + ? WHERE id = ?", (amount, wallet_id))
            return balance + amount

        balance = self.ledger.transact(topup)
        return {"wallet": wallet_id, "amount": amount, "balance": balance}

    def rpc_info(self, params, conn):
        wallet_id = params.get("wallet")
        with self.ledger.read() as db:
            w = self.wallet(db, wallet_id)
            if w is None:
                raise ControlError("not_found", "no wallet %r on this provider" % (wallet_id,))
            rows = db.execute("SELECT %s FROM wallet_payments WHERE wallet = ? ORDER BY created DESC LIMIT 100"
                              % ", ".join(_COLS), (wallet_id,)).fetchall()
            held = self.held(db, wallet_id)
            auto = autoconfirm.get(db, wallet_id)
        payments = []
        for row in rows:
            p = dict(zip(_COLS, row))
            p["txid"] = p["txid"].hex()
            p["token"] = p["token"].hex() if p["token"] else None
            payments.append(p)
        return {"wallet": wallet_id, "balance": w["balance"], "available": w["balance"] - held,
                "limit": w["limit"], "daily": w["daily"], "auto": w["auto"], "counter": w["counter"],
                "provider": self.provider_url(wallet_id), "payments": payments,
                "auto_count": auto["auto_count"], "auto_total": auto["auto_total"], "auto_new": auto["auto_new"],
                "since_press": {"count": auto["count"], "total": auto["total"], "new": auto["new"]}}


def _send(stream, frame_bytes):
    try:
        stream.send(frame_bytes)
    except streams.StreamClosed:
        pass  # the terminal went away; the wallet asks again with a fresh Auth (query)


def _id_problem(text):
    from amiko_core.url import id_problem

    return id_problem(text) if isinstance(text, str) else "must be text"
