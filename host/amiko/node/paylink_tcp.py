"""The payment link (seeds/004) over BOLT 8, driving amiko_core.paylink and the engine.

Wire: one amiko.wire.stream.Stream (BOLT 8, one frame of at most 4096 bytes per message)
carrying payment-link messages, one payment per connection. The payee side is served on the
node's port: the listener hands over an authenticated stream whose first frame is Pay
(serve_payee). The payer side (`amiko pay`) connects to the host:port of the amikopay URL
with this node's identity, pinned to the URL's ?key= (the payee node's key): a URL without a
key is refused, a node that does not hold the key fails the handshake, and a Receipt that is
not signed by that same key is declined ("receipt not signed by the payee key in the URL").

A payment id belongs to the payer whose session is in progress: a second Pay for it gets a
Cancel on its own connection and changes nothing else. A payer that goes away, declines or
times out BEFORE it confirmed ends only its own attempt: the request stays open (a bystander
who saw the QR code and sends Pay then disconnects or Cancel cannot call off the sale). The
request itself is cancelled only by the shop (`amiko cancel` / control `cancel`) or when a
session that was confirmed (routing started) ends cancelled.

Effects of the paylink state machines are carried out here:
  send -> a frame on the connection (dropped, with a log line, once it is closed)
  route -> engine.start_route(db, txid, side, amount, meeting_point) (side 0 payer, 1 payee)
  lock -> engine.lock(db, txid)               timer -> one asyncio timer per session
  cancel_route -> engine.cancel_route(db, txid, side) when the engine has it (issue 4)
  done -> the payments table row (engine.update_payment), and the waiting `amiko pay`
Engine events for (txid, side) reach the session through PaymentLinks.on_event as the session's
input of the same name (the session's rules decide whether it applies in its state):
  route_found, route_failed(reason), rolled_back(reason), settled(token), and
  locked (payee side): Commit{token} to the payer if it is still connected. The engine itself
  released the token to the network (auto_release) when the request is open, even if the payer
  has gone or this node restarted: the lock is the payer's promise.
A payee session that ends cancelled cancels its request (endpoints.cancel_request), so a lock
arriving later never releases the token. A payer that gets Commit{token} calls
engine.release_token (commits its own hop; the engine ignores a token it settled already).

Outcome reasons (issue 4): a payer whose payee sent Cancel reports "payee cancelled: REASON";
a lock the engine refuses (the payer's half ended meanwhile, e.g. its lock timer fired) ends
the payer's session as rolled back with the reason stored for the payment.

Developer options (only with `amiko node --developer`, as Core Lightning's dev- options; they
make the node misbehave on purpose for the failure scenario tests, never use them in production):
  --dev-withhold-token          as payee, never release the token (neither to the network
                                nor to the payer): the commit deadlines pass, rollback follows
  --dev-lock-delay S            as payer, lock S seconds after both halves are routed
                                ("never": do not lock at all)
  (--developer itself)          adds the control method debug_drop_link {link}: drops the
                                link's connection as a network failure would (developer_methods)

Bounds: one frame at a time of at most 4096 bytes (the stream's max_frame); the session's
phase timers end a silent peer; at most MAX_SESSIONS payment links at once.
"""

import asyncio
import logging
import os

from amiko_core import codes
from amiko_core import messages as m
from amiko_core import paylink
from amiko_core.errors import AmikoError, DecodeError, ProtocolError, URLError
from amiko_core.url import parse_pay

from amiko.node import events
from amiko.node import identity as identities
from amiko.node.events import Event
from amiko.wire import stream as streams

log = logging.getLogger("amiko.paylink")

CONNECT_TIMEOUT = 10
MAX_SESSIONS = 1000
PAYER, PAYEE = 0, 1

# A session effect's kind -> the _Run method that carries it out.
_EFFECTS = {paylink.SEND: "_send_effect", paylink.STATE: "_state_effect", paylink.ROUTE: "_route_effect",
            paylink.LOCK: "_lock_effect", paylink.CANCEL_ROUTE: "_cancel_route_effect",
            paylink.TIMER: "_timer_effect", paylink.DONE: "_done_effect", paylink.ASK_USER: "_ask_user_effect"}


def parse_lock_delay(text):
    """The value of --dev-lock-delay: "never" or seconds (ValueError otherwise)."""
    if text == "never":
        return "never"
    delay = float(text)
    if not delay >= 0:
        raise ValueError("lock delay must be >= 0 or never: %r" % text)
    return delay


def developer_methods(links):
    """The developer control methods of payment links (see the module doc)."""

    def drop_link(params, conn):
        link = params.get("link")
        log.warning("DEVELOPER: dropping the connection of link %s", link)
        connected = links.is_connected(link)
        links.disconnect(link)
        return {"link": link, "was_connected": connected}

    return {"debug_drop_link": drop_link}


class PayError(AmikoError):
    """`amiko pay` cannot go on; the reason says what to do."""

    def __init__(self, reason, code="refused"):
        super().__init__(reason)
        self.code = code


def error_frame(code, reason, ref_type=None):
    fields = {"code": code, "reason": m.cut_reason(reason, 200)}
    if ref_type is not None:
        fields["ref_type"] = ref_type
    return m.to_frame(m.Message(m.ERROR, fields))


def _hex(b):
    return b.hex() if isinstance(b, (bytes, bytearray)) else b


def payee_key(url):
    """The payee's node key pinned by an amikopay URL's ?key= (33 bytes); PayError if absent or bad."""
    text = url.query.get("key")
    if text is None:
        raise PayError("the payment URL carries no payee key (?key=...): ask the payee for a current URL "
                       "(`amiko request` prints amikopay://HOST:PORT/ID?key=HEX)", "invalid")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if not identities.valid_pubkey(key):
        raise PayError("the payment URL's key= is not a compressed secp256k1 public key (66 hex digits)", "invalid")
    return key


class _Run:
    """One payment-link session: its connection, timer and the effects it causes."""

    side = None

    def __init__(self, links, session):
        self.links = links
        self.ledger = links.ledger
        self.engine = links.engine
        self.session = session
        self.stream = None  # amiko.wire.stream.Stream
        self.timer = None
        self.done = asyncio.get_running_loop().create_future()
        self.reader_task = None
        self.registered = False

    # -- effects

    def apply(self, effects):
        queue = list(effects)
        while queue:
            effect = queue.pop(0)
            try:
                more = self._effect(effect)
            except AmikoError as e:
                more = self._effect_failed(effect, e)
            if more:
                queue[0:0] = more

    def _effect(self, effect):
        getattr(self, _EFFECTS[effect.kind])(effect)

    def _send_effect(self, e):
        self.send(e.message)

    def _state_effect(self, e):
        log.debug("%s %s: %s", self.session.ROLE, self.session.payment_id, e.state)

    def _route_effect(self, e):
        self._register(e.txid)
        self.ledger.transact(self._start_route, e.txid, e.amount, e.meeting_point)

    def _lock_effect(self, e):
        self._lock(e.txid)

    def _cancel_route_effect(self, e):
        self.ledger.transact(self.engine.cancel_route, e.txid, self.side,
                           self._reason(self.session.reason) or "cancelled")

    def _timer_effect(self, e):
        self._arm(e.seconds)

    def _done_effect(self, e):
        self._done(e.outcome, e.reason)

    def _ask_user_effect(self, e):
        self.on_ask_user(e.amount, e.text)

    def _effect_failed(self, effect, error):
        """An engine call refused (e.g. no channel can carry the amount): end the payment."""
        log.warning("%s %s: %s failed: %s", self.session.ROLE, self.session.payment_id, effect.kind, error.reason)
        if effect.kind == paylink.LOCK:
            return self.session.handle("abort", self._stored_reason() or error.reason)
        return self.session.handle("abort", error.reason)

    def _stored_reason(self):
        """The reason the engine stored when it ended this payment, if it did."""
        with self.ledger.read() as db:
            row = self.engine.payment(db, self.session.txid, self.session.ROLE)
        return row["reason"] if row and row["state"] == "cancelled" else None

    def _reason(self, reason):
        return reason

    def _lock(self, txid):
        delay = self.links.knobs.get("lock_delay")
        if delay is None:
            self.ledger.transact(self.engine.lock, txid)
        elif delay == "never":
            log.warning("DEVELOPER --dev-lock-delay never: payer does not lock %s", _hex(txid))
        else:
            log.warning("DEVELOPER --dev-lock-delay: payer locks %s in %s s", _hex(txid), delay)
            asyncio.get_running_loop().call_later(delay, self._late_lock, txid)

    def _late_lock(self, txid):
        if self.session.outcome is not None:
            return
        try:
            self.ledger.transact(self.engine.lock, txid)
        except AmikoError as e:
            self.apply(self.session.handle("abort", self._stored_reason() or e.reason))

    def _start_route(self, db, txid, amount, mp):
        self.record(db, txid, amount)
        return self.engine.start_route(db, txid, self.side, amount, mp, payment_id=self.session.payment_id)

    def record(self, db, txid, amount):
        pass

    def _register(self, txid):
        key = (bytes(txid), self.side)
        self.links.by_tx[key] = self
        self.registered = True

    def _arm(self, seconds):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if seconds is not None:
            self.timer = asyncio.get_running_loop().call_later(seconds, self._timeout)

    def _timeout(self):
        self.timer = None
        self.apply(self.session.handle("timeout"))

    def _done(self, outcome, reason):
        reason = self._reason(reason)
        log.info("%s %s (%s): %s%s", self.session.ROLE, self.session.payment_id,
                 _hex(self.session.txid), outcome, ": " + reason if reason else "")
        if self.session.txid is not None:
            self.ledger.transact(self._record_outcome, outcome, reason)
        if not self.done.done():
            self.done.set_result((outcome, reason))
        asyncio.get_running_loop().call_soon(self.close)

    def _record_outcome(self, db, outcome, reason):
        fields = {"state": outcome, "reason": reason}
        if outcome == paylink.COMMITTED and self.session.token is not None:
            fields["token"] = bytes(self.session.token)
        try:
            self.engine.update_payment(db, self.session.txid, self.session.ROLE, **fields)
        except AmikoError as e:
            log.debug("update_payment: %s", e.reason)

    # -- connection

    def send(self, msg):
        if self.stream is None or self.stream.is_closing():
            log.info("%s %s: connection closed, %s not sent", self.session.ROLE, self.session.payment_id, msg.name)
            return
        try:
            self.stream.send_message(msg)
        except streams.StreamClosed:
            log.info("%s %s: connection closed, %s not sent", self.session.ROLE, self.session.payment_id, msg.name)

    async def read_loop(self):
        try:
            while True:
                msg = await self.stream.recv_message()
                if msg.type not in self.session.HANDLERS:
                    raise DecodeError("%s is not a payment-link message" % msg.name)
                try:
                    self.apply(self.session.receive(msg))
                except ProtocolError as e:
                    if self.session.outcome is not None:
                        continue  # late message for a finished payment (e.g. Commit after settle)
                    log.warning("%s %s: refused %s: %s", self.session.ROLE, self.session.payment_id, msg.name, e.reason)
        except (streams.StreamClosed, ConnectionError):
            pass
        except (streams.StreamError, DecodeError) as e:
            log.warning("%s %s: closing the payment link: %s", self.session.ROLE, self.session.payment_id, e.reason)
        except asyncio.CancelledError:
            raise
        finally:
            self.close_connection()
            self.on_disconnect()

    def close_connection(self):
        if self.stream is not None and not self.stream.is_closing():
            self.stream.close()

    def close(self):
        """Drop the connection; the session stays registered until it is done."""
        self.close_connection()
        if self.session.outcome is not None:
            self._arm(None)
            self.unregister()

    def unregister(self):
        if self.registered and self.session.txid is not None:
            key = (bytes(self.session.txid), self.side)
            if self.links.by_tx.get(key) is self:
                del self.links.by_tx[key]
        self.registered = False
        self.links.sessions.discard(self)

    def on_disconnect(self):
        pass

    def on_ask_user(self, amount, text):
        pass

    # -- engine events

    def on_event(self, event):
        """An engine event about this session's half: the session's input of that name."""
        s = self.session
        if event.kind == events.SETTLED:
            if s.accepts("settled"):
                self.apply(s.handle("settled", self.links.payments.token(s.txid)))
        elif event.kind in (events.ROUTE_FOUND, events.ROUTE_FAILED, events.ROLLED_BACK):
            self.apply(s.handle(event.kind, event.reason))


class PayeeRun(_Run):
    side = PAYEE
    shop_cancel = False  # the shop (`amiko cancel`) ended this session: the request goes too

    def routed(self):
        """Did this payer confirm (the payee's half was started)? Only then is the sale its own."""
        return self.session.meeting_point is not None

    def record(self, db, txid, amount):
        r = self.session.receipt_message
        self.engine.update_payment(db, bytes(txid), "payee", state="confirmed",
                                        meeting_point=self.session.meeting_point, payee_key=r.payee_key,
                                        signature=r.signature)

    def on_disconnect(self):
        self.apply(self.session.handle("abandon", "payer disconnected"))

    def _done(self, outcome, reason):
        if outcome == paylink.CANCELLED and not self.routed() and not self.shop_cancel:
            # This payer's attempt ended before it confirmed (it went away, declined or timed out):
            # the request stays open for its payer; nothing was routed, nothing to record.
            log.info("payee %s: an attempt ended before the payer confirmed (%s): the request stays open",
                     self.session.payment_id, reason)
            if not self.done.done():
                self.done.set_result((outcome, reason))
            self.links.active_payees.pop(self.session.payment_id, None)
            asyncio.get_running_loop().call_soon(self.close)
            return
        super()._done(outcome, reason)
        self.links.active_payees.pop(self.session.payment_id, None)
        if outcome == paylink.CANCELLED:
            self.ledger.transact(self._cancel_request, reason)

    def _cancel_request(self, db, reason):
        # A cancelled request never releases its token, even if a lock arrives later.
        self.links.payments.cancel_request(db, self.session.payment_id)


class PayerRun(_Run):
    side = PAYER

    def __init__(self, links, session, url):
        super().__init__(links, session)
        self.url = url
        self.offer = asyncio.get_running_loop().create_future()
        self.handle = os.urandom(8).hex()

    def record(self, db, txid, amount):
        r = self.session.receipt
        self.engine.record_payment(
            db, txid=bytes(txid), role="payer", payment_id=self.session.payment_id, amount=amount,
            receipt=r.receipt, state="confirmed", payee_key=r.payee_key, signature=r.signature,
            signed_receipt=m.receipt_signed_bytes(r), meeting_point=self.session.meeting_point)

    def _reason(self, reason):
        last = self.session.last_message  # the message being handled, when a Cancel from the payee ends it
        if reason and last is not None and last.type == m.CANCEL and not reason.startswith("payee cancelled"):
            return "payee cancelled: " + reason
        return reason

    def on_ask_user(self, amount, text):
        r = self.session.receipt
        problem = self._check_receipt(r)
        if problem:
            self.apply(self.session.handle("decline", problem))
            return
        if not self.offer.done():
            self.offer.set_result({
                "handle": self.handle, "amount": amount, "receipt": text, "txid": r.txid.hex(),
                "payment_id": self.session.payment_id, "meeting_points": list(r.meeting_points),
                "payee_key": _hex(r.payee_key), "signed": r.signature is not None,
            })

    def _check_receipt(self, r):
        """Why this Receipt is refused, or None: it must be signed by the key the URL pins (the
        key this stream's handshake authenticated)."""
        wanted = self.stream.remote_key if self.stream is not None else payee_key(self.url)
        if r.payee_key is None or r.signature is None:
            return "receipt not signed by the payee key in the URL (it carries no signature)"
        if bytes(r.payee_key) != bytes(wanted):
            return "receipt not signed by the payee key in the URL (signed for key %s)" % bytes(r.payee_key).hex()[:16]
        if not identities.verify(r.payee_key, m.receipt_signed_bytes(r), r.signature):
            return "receipt not signed by the payee key in the URL (the signature does not verify)"
        return None

    def _done(self, outcome, reason):
        super()._done(outcome, reason)
        self.links.payers.pop(self.handle, None)  # callers waiting hold the run itself
        if not self.offer.done():
            self.offer.set_result({"result": outcome, "reason": reason, "payment_id": self.session.payment_id})
        if outcome == paylink.COMMITTED and self.session.token is not None:
            # The payer learned the token: commit its own channel (idempotent in the engine).
            self.ledger.transact(self.engine.release_token, self.session.txid, self.session.token)

    def on_disconnect(self):
        self.apply(self.session.handle("abandon", "payee disconnected"))

    def result(self):
        outcome, reason = self.done.result()
        s = self.session
        return {"result": outcome, "reason": reason, "payment_id": s.payment_id, "txid": _hex(s.txid),
                "amount": s.amount, "receipt": s.receipt.receipt if s.receipt is not None else None,
                "meeting_point": s.meeting_point, "meeting_points": s.meeting_points,
                "token": _hex(s.token) if outcome == paylink.COMMITTED else None,
                "payee_key": _hex(s.receipt.payee_key) if s.receipt is not None else None,
                "signature": _hex(s.receipt.signature) if s.receipt is not None else None,
                "payee": s.receipt.payee if s.receipt is not None else None}


class PaymentLinks:
    """All payment-link sessions of a node (amiko.node.ports: ledger, payments)."""

    def __init__(self, ledger, engine, payments, identity, config, dev_options=None):
        self.ledger = ledger
        self.engine = engine
        self.payments = payments
        self.identity = identity
        self.config = config
        self.by_tx = {}  # (txid, side) -> _Run
        self.active_payees = {}  # payment id -> PayeeRun
        self.payers = {}  # handle -> PayerRun (between pay_start and the outcome)
        self.sessions = set()
        self.knobs = dict(dev_options or {})  # developer options: withhold_token, lock_delay
        if self.knobs:
            log.warning("DEVELOPER options active: %s", self.knobs)
        if self.knobs.get("withhold_token"):
            engine.cfg.auto_release = False

    def timeouts(self):
        c = self.config
        return {"receipt": CONNECT_TIMEOUT, "confirm": 120, "routing": 3 * c.route_timeout,
                "locking": 3 * c.lock_timeout + 8 * c.timeout_increment}

    # -- payee

    async def serve_payee(self, stream, first_frame):
        """An authenticated stream whose first frame is Pay: run the payee session until it ends.
        A Pay for a payment id with a session in progress gets a Cancel on this stream only."""
        try:
            pay = m.from_frame(first_frame)
        except DecodeError as e:
            log.info("payee: bad Pay from %s: %s", stream.peer, e.reason)
            await _send_close(stream, error_frame(codes.PROTOCOL, e.reason, first_frame.type))
            return
        payment_id = pay.id
        refusal = None
        request = None
        if len(self.sessions) >= MAX_SESSIONS:
            refusal = "payee busy: too many payments at once, try again"
        elif payment_id in self.active_payees:
            refusal = "payment %s is already in progress with another payer" % payment_id
        else:
            request = self.payments.request(payment_id)
            if request is None:
                refusal = "unknown payment id %s" % payment_id
            elif request["state"] != "open":
                refusal = "payment %s is %s" % (payment_id, request["state"])
            elif request["payment_state"] not in (None, "requested"):
                refusal = "payment %s is %s already" % (payment_id, request["payment_state"])
        if refusal is not None:
            log.info("payee: refused Pay{%s} from %s: %s", payment_id, stream.peer, refusal)
            await _send_close(stream, m.to_frame(m.Message(m.CANCEL, {"id": payment_id, "reason": refusal})))
            return
        identity = self.identity
        session = paylink.PayeeSession(
            payment_id, request["amount"], request["receipt"], request["token"], request["meeting_points"],
            timeouts=self.timeouts(), payee_key=identity.pubkey, sign=identity.sign,
            payee_name=self.config.name)
        run = PayeeRun(self, session)
        run.request = request
        run.stream = stream
        self.active_payees[payment_id] = run
        self.sessions.add(run)
        run.apply(session.receive(pay))
        await run.read_loop()

    # -- payer

    async def start_payer(self, url_text):
        """Connect to the payee and get its receipt: an offer dict (or the cancelled outcome)."""
        try:
            url = parse_pay(url_text)
        except URLError as e:
            raise PayError("bad payment URL: %s" % e.reason, "invalid") from None
        key = payee_key(url)
        if len(self.sessions) >= MAX_SESSIONS:
            raise PayError("too many payments in progress on this node: wait for some to finish", "refused")
        stream = await connect_payee(url, self.identity, key)
        session = paylink.PayerSession(url.path, timeouts=self.timeouts())
        run = PayerRun(self, session, url)
        run.stream = stream
        self.sessions.add(run)
        self.payers[run.handle] = run
        run.reader_task = asyncio.ensure_future(run.read_loop())
        run.apply(session.handle("start"))
        offer = await run.offer
        if "result" in offer:
            self.payers.pop(run.handle, None)
        return offer

    def _payer(self, handle):
        run = self.payers.get(handle)
        if run is None:
            raise PayError("no payment waiting under handle %r: start again with `amiko pay URL`" % handle, "not_found")
        return run

    async def confirm_payer(self, handle, timeout):
        """The user agreed: route, lock, wait for the outcome (or the timeout) -> result dict."""
        run = self._payer(handle)
        s = run.session
        run.apply(s.handle("confirm"))
        try:
            await asyncio.wait_for(asyncio.shield(run.done), timeout)
        except asyncio.TimeoutError:
            run.apply(s.handle("decline", "timed out after %s s" % timeout))
            if s.outcome is None:
                raise PayError("no outcome within %s s; payment %s is locked in the network and still in progress: "
                               "see `amiko status`" % (timeout, _hex(s.txid)), "timeout") from None
        self.payers.pop(handle, None)
        return run.result()

    def decline_payer(self, handle, reason=None):
        run = self._payer(handle)
        run.apply(run.session.handle("decline", reason or "declined by payer"))
        self.payers.pop(handle, None)
        return run.result() if run.done.done() else {"result": "cancelled", "reason": reason or "declined by payer"}

    def cancel(self, ident, reason=None):
        """A user cancels a payment of this endpoint, by payment id or transaction id (hex):
        allowed until the payer locks; refused after lock (the network decides then: committed,
        or rolled back when a commit deadline passes) and after the payment ended."""
        if not isinstance(ident, str) or not ident:
            raise PayError("give the payment id or transaction id to cancel", "invalid")
        runs = [r for r in list(self.sessions)
                if ident in (r.session.payment_id, _hex(r.session.txid) if r.session.txid is not None else None)]
        if not runs:
            return self._cancel_stored(ident, reason)
        results = []
        for run in runs:
            s = run.session
            if s.outcome is not None:
                raise PayError("payment %s has ended already: %s" % (ident, s.outcome), "refused")
            if (run.side == PAYER and not s.accepts("decline")) or (
                    run.side == PAYEE and self._stored_state(s.txid) == "locked"):
                raise PayError("payment %s is locked: it can no longer be cancelled; the network decides "
                               "(committed, or rolled back when its commit deadline passes)" % ident, "refused")
            if run.side == PAYER:
                run.apply(s.handle("decline", reason or "cancelled by payer"))
            else:
                run.shop_cancel = True
                run.apply(s.handle("cancel", reason or "cancelled by payee"))
            results.append({"role": s.ROLE, "result": s.outcome, "reason": s.reason})
        return results[0] if len(results) == 1 else {"result": "cancelled", "sessions": results}

    def _stored_state(self, txid):
        with self.ledger.read() as db:
            row = self.engine.payment(db, txid, "payee")
        return row["state"] if row else None

    def _cancel_stored(self, ident, reason):
        """No session: an open request nobody is paying yet can still be cancelled."""
        from amiko.node import endpoints

        with self.ledger.read() as db:
            req = endpoints.get_request(db, payment_id=ident)
            if req is None and len(ident) == 40:
                try:
                    req = endpoints.get_request(db, txid=bytes.fromhex(ident))
                except ValueError:
                    req = None
            row = self.engine.payment(db, req["txid"], "payee") if req is not None else None
        if req is None:
            raise PayError("no payment %s in progress at this node (see `amiko status`)" % ident, "not_found")
        if req["state"] != "open" or (row is not None and row["state"] != "requested"):
            state = row["state"] if row is not None and row["state"] != "requested" else req["state"]
            if state == "locked":
                raise PayError("payment %s is locked: it can no longer be cancelled; the network decides "
                               "(committed, or rolled back when its commit deadline passes)" % ident, "refused")
            raise PayError("payment %s is %s: nothing to cancel" % (ident, state), "refused")
        why = reason or "cancelled by payee"

        def cancel(db):
            endpoints.cancel_request(db, req["payment_id"])
            self.engine.update_payment(db, req["txid"], "payee", state="cancelled", reason=why)

        self.ledger.transact(cancel)
        return {"role": "payee", "result": "cancelled", "reason": why}

    def abandon_payer(self, handle):
        """The `amiko pay` that started this went away before confirming: cancel."""
        run = self.payers.get(handle)
        if run is not None:
            run.apply(run.session.handle("abandon", "payer went away"))
            self.payers.pop(handle, None)  # what is confirmed goes on; the outcome is in the history

    # -- engine events (called by the daemon, outside any transaction)

    def on_event(self, event):
        if not isinstance(event, Event):
            return  # not about a payment (PeerError)
        if event.kind == events.LOCKED and event.side == PAYEE:
            self._payee_locked(event.txid)
            return
        run = self.by_tx.get((event.txid, event.side))
        if run is not None:
            run.on_event(event)

    def _payee_locked(self, txid):
        """The lock reached this payee. The engine released the token to the network already
        (auto_release, for an open request); tell the payer with Commit{token}."""
        run = self.by_tx.get((txid, PAYEE))
        if self.knobs.get("withhold_token"):
            log.warning("DEVELOPER --dev-withhold-token: payee withholds the token of %s", txid.hex())
            return
        if run is not None:
            effects = run.session.handle("locked")
            if not effects:
                log.warning("payee: lock for %s arrived in session state %s", txid.hex(), run.session.state)
            run.apply(effects)

    async def close(self):
        for run in list(self.sessions):
            run._arm(None)
            run.close_connection()
            if run.reader_task is not None:
                run.reader_task.cancel()
        self.sessions.clear()


async def connect_payee(url, identity, key, timeout=CONNECT_TIMEOUT):
    """A BOLT 8 stream to the payee of a parsed amikopay URL, pinned to its key; PayError otherwise."""
    where = "%s:%d" % (url.host, url.port)
    try:
        return await streams.connect(url.host, url.port, identity, key, timeout=timeout)
    except streams.StreamError as e:
        if e.code == "auth":
            raise PayError("the node at %s does not hold the payee key of the URL (BOLT 8 handshake failed: %s): "
                           "the URL is wrong or someone else answers at that address" % (where, e.reason),
                           "refused") from None
        raise PayError("cannot reach the payee at %s (%s): check the URL and that the payee's node is running"
                       % (where, e.reason), "unreachable") from None
    except (OSError, asyncio.TimeoutError) as e:
        raise PayError("cannot reach the payee at %s (%s): check the URL and that the payee's node is running"
                       % (where, getattr(e, "strerror", None) or type(e).__name__), "unreachable") from None


async def _send_close(stream, frame_bytes):
    """Send one last frame, flush it (at most 5 s), close."""
    try:
        stream.send(frame_bytes)
        await asyncio.wait_for(stream.drain(), 5)
    except (streams.StreamError, ConnectionError, asyncio.TimeoutError):
        pass
    stream.close()
