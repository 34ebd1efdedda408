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
_MAX_REASON_BYTES = 256


def _timeouts(overrides):
    result = dict(DEFAULT_TIMEOUTS)
    for phase in overrides or ():
        value = overrides[phase]
        if phase not in result:
            raise AmikoError("paylink: unknown timeout phase %r" % phase)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise AmikoError("paylink: timeout for %s must be a positive number, got %r" % (phase, value))
        result[phase] = value
    return result


def _short(reason):
    """Cut a reason text to what a Cancel message may carry (256 UTF-8 bytes)."""
    reason = reason[:_MAX_REASON_BYTES]
    while len(reason.encode()) > _MAX_REASON_BYTES:
        reason = reason[:-1]
    return reason


class _Session:
    """What both endpoints share: duplicate and id checks, phase timer, finishing."""

    ROLE = ""
    HANDLERS = {}  # message type code -> name of the handler method
    TIMEOUT_REASONS = {}  # timer phase -> reason of the cancel it causes

    def __init__(self, payment_id, timeouts, state):
        self.payment_id = payment_id
        self.timeouts = _timeouts(timeouts)
        self.state = state
        self.txid = None
        self.amount = None
        self.meeting_point = None
        self.outcome = None
        self.reason = None
        self.token = None
        self._last = None  # last accepted message, for duplicate detection
        self._timer = None  # phase the armed timer guards, None when disarmed

    # -- inputs common to both sides

    def receive(self, msg):
        """A message from the other endpoint arrived."""
        if self._last is not None and msg == self._last:
            return []
        self._check_open(msg.name)
        handler = self.HANDLERS.get(msg.type)
        if handler is None:
            raise ProtocolError("%s: unexpected %s message" % (self.ROLE, msg.name))
        msg_id = msg.fields.get("id")
        if msg_id is not None and msg_id != self.payment_id:
            raise ProtocolError(
                "%s: %s is for payment %r, this session is payment %r"
                % (self.ROLE, msg.name, msg_id, self.payment_id)
            )
        effects = getattr(self, handler)(msg)
        self._last = msg
        return effects

    def timeout(self):
        """The phase timer (last armed by a ("timer", seconds) effect) fired."""
        self._check_open("timeout()")
        if self._timer is None:
            raise ProtocolError("%s: timeout() in state %s but no timer is armed" % (self.ROLE, self.state))
        return self._on_timeout(self._timer)

    def _on_timeout(self, phase):
        return self._cancel(self.TIMEOUT_REASONS[phase], True)

    # -- helpers

    def _check_open(self, what):
        if self.outcome is not None:
            raise ProtocolError("%s: %s after the payment was %s" % (self.ROLE, what, self.outcome))

    def _expect(self, what, states):
        self._check_open(what)
        if self.state not in states:
            raise ProtocolError("%s: unexpected %s in state %s" % (self.ROLE, what, self.state))

    def _enter(self, state, phase):
        self.state = state
        self._timer = phase
        return [("state", state), ("timer", self.timeouts[phase])]

    def _finish(self, effects, outcome, reason):
        self.state = outcome
        self.outcome = outcome
        self.reason = reason
        self._timer = None
        effects.append(("state", outcome))
        effects.append(("timer", None))
        effects.append(("done", outcome, reason))
        return effects

    def _cancel(self, reason, send):
        """Cancel before lock: optionally tell the peer, withdraw a started route."""
        effects = []
        if send:
            fields = {"id": self.payment_id}
            if reason:
                fields["reason"] = _short(reason)
            effects.append(("send", m.Message(m.CANCEL, fields)))
        if self.state in ("routing", "waiting_lock"):
            effects.append(("cancel_route", self.txid))
        return self._finish(effects, CANCELLED, reason)


class PayerSession(_Session):
    """The payer endpoint: opens the link with Pay and locks once both halves are routed."""

    ROLE = "payer"
    HANDLERS = {
        m.RECEIPT: "_on_receipt",
        m.CANCEL: "_on_cancel",
        m.HAVE_PAYEE_ROUTE: "_on_have_payee_route",
        m.COMMIT: "_on_commit",
    }
    TIMEOUT_REASONS = {
        "receipt": "timeout waiting for receipt",
        "confirm": "timeout waiting for user confirmation",
        "routing": "timeout waiting for routes",
    }
    _BEFORE_LOCK = ("waiting_receipt", "confirming", "routing")
    _LOCKED = ("locking", "lock_timeout")

    def __init__(self, payment_id, acceptable_meeting_points=None, timeouts=None):
        super().__init__(payment_id, timeouts, "new")
        self._pay = m.Message(m.PAY, {"id": payment_id})  # validates the payment id now
        self.acceptable_meeting_points = acceptable_meeting_points
        self.meeting_points = None  # offered by the payee's Receipt
        self.receipt = None  # the Receipt message (e.g. to check its signature)
        self._own_route = False
        self._payee_route = False

    def _acceptable(self, meeting_point):
        return self.acceptable_meeting_points is None or meeting_point in self.acceptable_meeting_points

    # -- user and routing inputs

    def start(self):
        """Open the session: sends Pay."""
        self._expect("start()", ("new",))
        return [("send", self._pay)] + self._enter("waiting_receipt", "receipt")

    def confirm(self, meeting_point=None):
        """The user agrees; None picks the first offered meeting point the payer accepts."""
        self._expect("confirm()", ("confirming",))
        if meeting_point is None:
            meeting_point = [mp for mp in self.meeting_points if self._acceptable(mp)][0]
        elif meeting_point not in self.meeting_points or not self._acceptable(meeting_point):
            raise ProtocolError("payer: meeting point %r was not offered or is not acceptable" % meeting_point)
        msg = m.Message(m.CONFIRM, {"id": self.payment_id, "meeting_point": meeting_point})
        self.meeting_point = meeting_point
        effects = [("send", msg), ("route", meeting_point, self.amount, self.txid)]
        return effects + self._enter("routing", "routing")

    def decline(self, reason=None):
        """The user refuses (normally when asked; allowed in any state before lock)."""
        self._expect("decline()", self._BEFORE_LOCK)
        return self._cancel(reason or "declined by payer", True)

    def route_found(self):
        """The payer's own half reached the meeting point."""
        self._expect("route_found()", ("routing",))
        if self._own_route:
            raise ProtocolError("payer: route_found() twice")
        self._own_route = True
        return self._maybe_lock()

    def route_failed(self, reason=None):
        """The payer's own half cannot be routed."""
        self._expect("route_failed()", ("routing",))
        return self._cancel(reason or "payer route failed", True)

    def settled(self, token=None):
        """The network commit reached the payer (possibly before Commit)."""
        self._expect("settled()", self._LOCKED)
        if token is not None:
            self._check_token(token)
            self.token = token
        return self._finish([], COMMITTED, None)

    def rolled_back(self, reason=None):
        """The network returned the locked funds: the payment failed after lock."""
        self._expect("rolled_back()", self._LOCKED)
        return self._finish([], CANCELLED, reason or "lock rolled back by the network")

    # -- messages from the payee

    def _on_receipt(self, msg):
        self._expect("Receipt", ("waiting_receipt",))
        amount = msg.amount
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ProtocolError("payer: Receipt amount must be a positive integer, got %r" % amount)
        if not msg.meeting_points:
            raise ProtocolError("payer: Receipt offers no meeting point")
        self.receipt = msg
        self.amount = amount
        self.txid = msg.txid
        self.meeting_points = list(msg.meeting_points)
        if not [mp for mp in self.meeting_points if self._acceptable(mp)]:
            return self._cancel("no acceptable meeting point", True)
        return [("ask_user", amount, msg.receipt)] + self._enter("confirming", "confirm")

    def _on_cancel(self, msg):
        if self.state in self._LOCKED:
            raise ProtocolError("payer: cannot cancel after lock")
        self._expect("Cancel", self._BEFORE_LOCK)
        return self._cancel(msg.reason or "cancelled by payee", False)

    def _on_have_payee_route(self, msg):
        self._expect("HavePayeeRoute", ("routing",))
        if msg.txid != self.txid:
            raise ProtocolError("payer: HavePayeeRoute for another transaction id")
        if self._payee_route:
            raise ProtocolError("payer: HavePayeeRoute twice")
        self._payee_route = True
        return self._maybe_lock()

    def _on_commit(self, msg):
        self._expect("Commit", self._LOCKED)
        self._check_token(msg.token)
        self.token = msg.token
        return self._finish([], COMMITTED, None)

    # -- helpers

    def _check_token(self, token):
        if not token_matches(token, self.txid):
            raise ProtocolError("payer: commit token does not hash to the transaction id")

    def _maybe_lock(self):
        if not (self._own_route and self._payee_route):
            return []
        return [("lock", self.txid)] + self._enter("locking", "locking")

    def _on_timeout(self, phase):
        if phase == "locking":
            # Funds are locked: no cancel is possible, the network decides.
            self.state = "lock_timeout"
            self._timer = None
            return [("state", "lock_timeout"), ("timer", None)]
        return self._cancel(self.TIMEOUT_REASONS[phase], True)


class PayeeSession(_Session):
    """The payee endpoint: holds the commit token and releases it once the lock arrives."""

    ROLE = "payee"
    HANDLERS = {m.PAY: "_on_pay", m.CONFIRM: "_on_confirm", m.CANCEL: "_on_cancel"}
    TIMEOUT_REASONS = {
        "confirm": "timeout waiting for confirm",
        "routing": "timeout waiting for payee route",
        "locking": "timeout waiting for lock",
    }
    _OPEN = ("waiting_pay", "waiting_confirm", "routing", "waiting_lock")

    def __init__(self, payment_id, amount, receipt, token, meeting_points, timeouts=None, signer=None):
        """signer: optional callable(receipt_signed_bytes) -> (payee_key, signature),
        called twice with the same key (see _signed)."""
        super().__init__(payment_id, timeouts, "waiting_pay")
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
        }
        msg = m.Message(m.RECEIPT, fields)  # validates the request before any Pay arrives
        if signer is not None:
            msg = self._signed(msg, fields, signer)
        self.receipt_message = msg

    @staticmethod
    def _signed(msg, fields, signer):
        # The signed bytes cover payee_key, but the signer only reveals its key
        # with a signature: the first call learns the key (its signature is
        # discarded), the second signs the final content.
        fields["payee_key"] = signer(m.receipt_signed_bytes(msg))[0]
        payee_key, signature = signer(m.receipt_signed_bytes(m.Message(m.RECEIPT, fields)))
        if payee_key != fields["payee_key"]:
            raise AmikoError("paylink: the receipt signer returned two different keys")
        fields["signature"] = signature
        return m.Message(m.RECEIPT, fields)

    # -- user and routing inputs

    def cancel(self, reason=None):
        """The payee's user (or the shop) cancels; before Pay nothing is sent."""
        self._expect("cancel()", self._OPEN)
        return self._cancel(reason or "cancelled by payee", self.state != "waiting_pay")

    def route_found(self):
        """The payee's half reached the meeting point: tell the payer."""
        self._expect("route_found()", ("routing",))
        msg = m.Message(m.HAVE_PAYEE_ROUTE, {"id": self.payment_id, "txid": self.txid})
        return [("send", msg)] + self._enter("waiting_lock", "locking")

    def route_failed(self, reason=None):
        """The payee's half cannot be routed."""
        self._expect("route_failed()", ("routing",))
        return self._cancel(reason or "payee route failed", True)

    def locked(self):
        """The lock reached the payee: release the token to the payer."""
        self._expect("locked()", ("waiting_lock",))
        msg = m.Message(m.COMMIT, {"id": self.payment_id, "token": self.token})
        return self._finish([("send", msg)], COMMITTED, None)

    # -- messages from the payer

    def _on_pay(self, msg):
        self._expect("Pay", ("waiting_pay",))
        return [("send", self.receipt_message)] + self._enter("waiting_confirm", "confirm")

    def _on_confirm(self, msg):
        self._expect("Confirm", ("waiting_confirm",))
        if msg.meeting_point not in self.meeting_points:
            raise ProtocolError("payee: meeting point %r was not offered" % msg.meeting_point)
        self.meeting_point = msg.meeting_point
        return [("route", self.meeting_point, self.amount, self.txid)] + self._enter("routing", "routing")

    def _on_cancel(self, msg):
        self._expect("Cancel", ("waiting_confirm", "routing", "waiting_lock"))
        return self._cancel(msg.reason or "cancelled by payer", False)

    def _finish(self, effects, outcome, reason):
        if outcome == CANCELLED:
            self.token = None  # a cancelled payment must never release its token
        return super()._finish(effects, outcome, reason)
