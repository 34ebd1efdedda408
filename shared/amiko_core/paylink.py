"""Sans-IO state machines for the two endpoints of the payment link (seeds/004).

The machines do no I/O and read no clock. Every input is a method call; it
returns a list of effects (plain tuples) for the I/O layer to carry out, in
order, or raises errors.ProtocolError and leaves the session unchanged.

Effects:
  ("send", Message)             send to the other endpoint over the payment link
  ("state", name)               the session entered state `name`
  ("ask_user", amount, text)    payer: show amount and receipt text, ask the user
  ("route", mp, amount, txid)   start routing this side's half toward meeting point mp
  ("lock", txid)                payer: both halves routed, start locking on the first hop
  ("cancel_route", txid)        withdraw this side's half (routing had started)
  ("timer", seconds | None)     (re)arm the single phase timer, or disarm it; when it
                                fires the I/O layer calls timeout()
  ("done", "committed" | "cancelled", reason | None)
                                final outcome, emitted exactly once

Payer states: new -> waiting_receipt -> confirming -> routing -> locking
  [-> lock_timeout] -> committed; cancelled from any state before locking.
Payee states: waiting_pay -> waiting_confirm -> routing -> waiting_lock ->
  committed; cancelled from any state before committed.

Rules common to both sides:
- A message equal to the last accepted one is a duplicate: ignored, no effects
  (also after the session is done).
- A message for another payment id, a message the state does not expect, or
  any other input after the session is done raises ProtocolError.
- Cancel is possible in either direction until the payer locks. Once the payer
  has locked, its funds sit in the network: a Cancel from the payee is refused
  ("cannot cancel after lock"), and the lock timeout only moves the payer to
  state lock_timeout (no "done"): the outcome is then decided by the network
  (HTLC deadlines). The I/O layer reports it with settled() (the network
  commit reached the payer, possibly before the Commit message) or
  rolled_back() (the lock was returned).
- The payee may cancel while waiting for the lock: it erases the token, so a
  lock arriving later can never be committed and is rolled back by the network.
- The payer accepts Commit only when the token hashes to the transaction id
  (token.token_matches); a bad token raises ProtocolError and changes nothing.

Timeouts (seconds) per phase, overridable by the `timeouts` dict:
  receipt (payer waits for Receipt), confirm (waiting for the user's answer on
  the payer, for Confirm on the payee), routing (both halves / own half found),
  locking (payer: the network outcome; payee: the lock).
"""

from amiko_core import messages as m
from amiko_core.errors import AmikoError, ProtocolError
from amiko_core.token import token_matches, transaction_id

DEFAULT_TIMEOUTS = {"receipt": 10, "confirm": 60, "routing": 20, "locking": 20}

COMMITTED = "committed"
CANCELLED = "cancelled"


class _Session:
    """What both endpoints share: duplicate and id checks, phase timer, finishing.

    HANDLERS: the message types the endpoint accepts (_on handles them all).
    _WAITING: timer phase -> what a timeout in it was waiting for (the cancel reason is
    "timeout waiting for " + that)."""

    # Until set, these read as the class's defaults: an instance only holds what has been
    # set, which keeps its attribute table small (one contiguous block on a device heap).
    txid = None
    amount = None
    meeting_point = None
    outcome = None
    reason = None
    _last = None  # last accepted message, for duplicate detection
    _timer = None  # phase the armed timer guards, None when disarmed

    def __init__(self, payment_id, timeouts, state):
        self.payment_id = payment_id
        t = dict(DEFAULT_TIMEOUTS)
        for phase in timeouts or ():
            value = timeouts[phase]
            if phase not in t:
                raise AmikoError("paylink: unknown timeout phase %r" % phase)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise AmikoError("paylink: timeout for %s must be a positive number, got %r" % (phase, value))
            t[phase] = value
        self.timeouts = t
        self.state = state

    # -- inputs common to both sides

    def receive(self, msg):
        """A message from the other endpoint arrived."""
        if self._last is not None and msg == self._last:
            return []
        self._expect(msg)
        if msg.type not in self.HANDLERS:
            raise ProtocolError("%s: unexpected %s message" % (self.ROLE, msg.name))
        msg_id = msg.fields.get("id")
        if msg_id is not None and msg_id != self.payment_id:
            raise ProtocolError(
                "%s: %s is for payment %r, this session is payment %r"
                % (self.ROLE, msg.name, msg_id, self.payment_id)
            )
        effects = self._on(msg)
        self._last = msg
        return effects

    def timeout(self):
        """The phase timer (last armed by a ("timer", seconds) effect) fired."""
        self._expect("timeout")
        phase = self._timer
        if phase is None:
            raise ProtocolError("%s: timeout() in state %s but no timer is armed" % (self.ROLE, self.state))
        if phase == "locking" and self.ROLE == "payer":
            # Funds are locked: no cancel is possible, the network decides.
            self.state = "lock_timeout"
            self._timer = None
            return [("state", "lock_timeout"), ("timer", None)]
        return self._cancel("timeout waiting for " + self._WAITING[phase], True)

    def route_failed(self, reason=None):
        """This side's half cannot be routed."""
        self._expect("route_failed", ("routing",))
        return self._cancel(reason or self.ROLE + " route failed", True)

    # -- helpers

    def _expect(self, what, states=None):
        """Refuse an input once the session is done, or in a state not in states; what is
        the message received or the name of the method called."""
        what = what.name if isinstance(what, m.Message) else what + "()"
        if self.outcome is not None:
            raise ProtocolError("%s: %s after the payment was %s" % (self.ROLE, what, self.outcome))
        if states is not None and self.state not in states:
            raise ProtocolError("%s: unexpected %s in state %s" % (self.ROLE, what, self.state))

    def _enter(self, state, phase):
        self.state = state
        self._timer = phase
        return [("state", state), ("timer", self.timeouts[phase])]

    def _finish(self, effects, outcome, reason):
        if outcome == CANCELLED:
            self.token = None  # a cancelled payee must never release its token
        self.state = outcome
        self.outcome = outcome
        if reason is not None:  # (set once: a session finishes once; None is the class default)
            self.reason = reason
        self._timer = None
        effects += [("state", outcome), ("timer", None), ("done", outcome, reason)]
        return effects

    def _cancel(self, reason, send):
        """Cancel before lock: optionally tell the peer, withdraw a started route."""
        effects = []
        if send:
            fields = {"id": self.payment_id}
            if reason:
                # cut to what a Cancel may carry: 256 UTF-8 bytes
                short = reason[:256]
                while len(short.encode()) > 256:
                    short = short[:-1]
                fields["reason"] = short
            effects.append(("send", m.Message(m.CANCEL, fields)))
        if self.state in ("routing", "waiting_lock"):
            effects.append(("cancel_route", self.txid))
        return self._finish(effects, CANCELLED, reason)


class PayerSession(_Session):
    """The payer endpoint: opens the link with Pay and locks once both halves are routed."""

    ROLE = "payer"
    HANDLERS = (m.RECEIPT, m.CANCEL, m.HAVE_PAYEE_ROUTE, m.COMMIT)
    _WAITING = {"receipt": "receipt", "confirm": "user confirmation", "routing": "routes"}

    def __init__(self, payment_id, acceptable_meeting_points=None, timeouts=None):
        super().__init__(payment_id, timeouts, "new")
        m.Message(m.PAY, {"id": payment_id})  # validates the payment id now
        self.acceptable_meeting_points = acceptable_meeting_points
        self.meeting_points = None  # offered by the payee's Receipt
        self.receipt = None  # the Receipt message (e.g. to check its signature)
        self.token = None  # the commit token, once received
        self._own_route = False
        self._payee_route = False

    def _usable(self):
        """The offered meeting points the payer accepts, in the payee's order."""
        ok = self.acceptable_meeting_points
        out = []
        for mp in self.meeting_points:
            if ok is None or mp in ok:
                out.append(mp)
        return out

    # -- user and routing inputs

    def start(self):
        """Open the session: sends Pay."""
        self._expect("start", ("new",))
        return [("send", m.Message(m.PAY, {"id": self.payment_id}))] + self._enter("waiting_receipt", "receipt")

    def confirm(self, meeting_point=None):
        """The user agrees; None picks the first offered meeting point the payer accepts."""
        self._expect("confirm", ("confirming",))
        if meeting_point is None:
            meeting_point = self._usable()[0]
        elif meeting_point not in self._usable():
            raise ProtocolError("payer: meeting point %r was not offered or is not acceptable" % meeting_point)
        msg = m.Message(m.CONFIRM, {"id": self.payment_id, "meeting_point": meeting_point})
        self.meeting_point = meeting_point
        effects = [("send", msg), ("route", meeting_point, self.amount, self.txid)]
        return effects + self._enter("routing", "routing")

    def decline(self, reason=None):
        """The user refuses (normally when asked; allowed in any state before lock)."""
        self._expect("decline", ("waiting_receipt", "confirming", "routing"))
        return self._cancel(reason or "declined by payer", True)

    def route_found(self):
        """The payer's own half reached the meeting point."""
        self._expect("route_found", ("routing",))
        if self._own_route:
            raise ProtocolError("payer: route_found() twice")
        self._own_route = True
        return self._maybe_lock()

    def settled(self, token=None):
        """The network commit reached the payer (possibly before Commit)."""
        self._expect("settled", ("locking", "lock_timeout"))
        if token is not None:
            self._commit(token)
        return self._finish([], COMMITTED, None)

    def rolled_back(self, reason=None):
        """The network returned the locked funds: the payment failed after lock."""
        self._expect("rolled_back", ("locking", "lock_timeout"))
        return self._finish([], CANCELLED, reason or "lock rolled back by the network")

    # -- messages from the payee

    def _on(self, msg):
        t = msg.type
        if t == m.RECEIPT:
            self._expect(msg, ("waiting_receipt",))
            amount = msg.amount
            if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                raise ProtocolError("payer: Receipt amount must be a positive integer, got %r" % amount)
            if not msg.meeting_points:
                raise ProtocolError("payer: Receipt offers no meeting point")
            self.receipt = msg
            self.amount = amount
            self.txid = msg.txid
            self.meeting_points = list(msg.meeting_points)
            if not self._usable():
                return self._cancel("no acceptable meeting point", True)
            return [("ask_user", amount, msg.receipt)] + self._enter("confirming", "confirm")
        if t == m.CANCEL:
            if self.state in ("locking", "lock_timeout"):
                raise ProtocolError("payer: cannot cancel after lock")
            self._expect(msg, ("waiting_receipt", "confirming", "routing"))
            return self._cancel(msg.reason or "cancelled by payee", False)
        if t == m.COMMIT:
            self._expect(msg, ("locking", "lock_timeout"))
            self._commit(msg.token)
            return self._finish([], COMMITTED, None)
        # HavePayeeRoute
        self._expect(msg, ("routing",))
        if msg.txid != self.txid:
            raise ProtocolError("payer: HavePayeeRoute for another transaction id")
        if self._payee_route:
            raise ProtocolError("payer: HavePayeeRoute twice")
        self._payee_route = True
        return self._maybe_lock()

    # -- helpers

    def _commit(self, token):
        if not token_matches(token, self.txid):
            raise ProtocolError("payer: commit token does not hash to the transaction id")
        self.token = token

    def _maybe_lock(self):
        if not (self._own_route and self._payee_route):
            return []
        return [("lock", self.txid)] + self._enter("locking", "locking")


class PayeeSession(_Session):
    """The payee endpoint: holds the commit token and releases it once the lock arrives."""

    ROLE = "payee"
    HANDLERS = (m.PAY, m.CONFIRM, m.CANCEL)
    _WAITING = {"confirm": "confirm", "routing": "payee route", "locking": "lock"}

    def __init__(self, payment_id, amount, receipt, token, meeting_points, timeouts=None, payee_key=None,
                 sign=None, payee_name=None):
        """payee_key (33 bytes) and sign, given together, make a signed Receipt: sign(data)
        returns the 64-byte signature of data = messages.receipt_signed_bytes(receipt), the
        receipt carrying payee_key (and payee_name, the name a wallet shows); it is called
        exactly once, here."""
        super().__init__(payment_id, timeouts, "waiting_pay")
        if (payee_key is None) != (sign is None):
            raise AmikoError("paylink: payee_key and sign must be given together")
        self.amount = amount
        self.token = token
        self.txid = transaction_id(token)
        self.meeting_points = list(meeting_points)
        fields = {
            "id": payment_id,
            "amount": amount,
            "receipt": receipt,
            "txid": self.txid,
            "meeting_points": self.meeting_points,
            "payee_key": payee_key,
            "payee": payee_name,
        }
        msg = m.Message(m.RECEIPT, fields)  # validates the request before any Pay arrives
        if sign is not None:
            fields["signature"] = sign(m.receipt_signed_bytes(msg))
            msg = m.Message(m.RECEIPT, fields)
        self.receipt_message = msg

    # -- user and routing inputs

    def cancel(self, reason=None):
        """The payee's user (or the shop) cancels; before Pay nothing is sent."""
        self._expect("cancel", ("waiting_pay", "waiting_confirm", "routing", "waiting_lock"))
        return self._cancel(reason or "cancelled by payee", self.state != "waiting_pay")

    def route_found(self):
        """The payee's half reached the meeting point: tell the payer."""
        self._expect("route_found", ("routing",))
        msg = m.Message(m.HAVE_PAYEE_ROUTE, {"id": self.payment_id, "txid": self.txid})
        return [("send", msg)] + self._enter("waiting_lock", "locking")

    def locked(self):
        """The lock reached the payee: release the token to the payer."""
        self._expect("locked", ("waiting_lock",))
        msg = m.Message(m.COMMIT, {"id": self.payment_id, "token": self.token})
        return self._finish([("send", msg)], COMMITTED, None)

    # -- messages from the payer

    def _on(self, msg):
        t = msg.type
        if t == m.PAY:
            self._expect(msg, ("waiting_pay",))
            return [("send", self.receipt_message)] + self._enter("waiting_confirm", "confirm")
        if t == m.CONFIRM:
            self._expect(msg, ("waiting_confirm",))
            if msg.meeting_point not in self.meeting_points:
                raise ProtocolError("payee: meeting point %r was not offered" % msg.meeting_point)
            self.meeting_point = msg.meeting_point
            return [("route", self.meeting_point, self.amount, self.txid)] + self._enter("routing", "routing")
        # Cancel
        self._expect(msg, ("waiting_confirm", "routing", "waiting_lock"))
        return self._cancel(msg.reason or "cancelled by payer", False)
