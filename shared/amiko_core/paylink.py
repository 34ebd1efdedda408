"""Sans-IO state machines for the two endpoints of the payment link (seeds/004).

The machines do no I/O and read no clock. There are two inputs, and each returns a list of
Effect objects for the I/O layer to carry out, in order:
  receive(message)      a message from the other endpoint
  handle(name, arg)     a local input (names below), with at most one argument
Each machine's RULES hold every transition, one row each: (input, handler, states). A local input is accepted in every state: where the rules have
none for it now (or the session is done) it returns no effects and changes nothing, so a
driver hands every event on without looking at the state (accepts(name) tells whether one
would do anything). A message the rules do not allow is the other endpoint breaking the
protocol: receive() raises errors.ProtocolError and leaves the session unchanged.

Local inputs:
  payer: start, confirm(meeting point or None), decline(reason), route_found, route_failed(reason),
         settled(token or None), rolled_back(reason), abandon(reason), abort(reason), timeout
  payee: cancel(reason), route_found, route_failed(reason), locked, rolled_back(reason),
         abandon(reason), abort(reason), timeout
  abandon: the other endpoint or the user went away before the payer confirmed.
  abort: this side's network cannot go on (the engine refused a route or a lock, the wallet's
  provider cancelled): the ending the state allows (declined, route failed, rolled back).
  rolled_back: the network returned this side's half (a route withdrawn, a lock rolled back).

Effects (Effect.kind, and the attributes it carries):
  SEND          message          send to the other endpoint over the payment link
  STATE         state            the session entered this state
  ASK_USER      amount, text     payer: show amount and receipt text, ask the user
  ROUTE         meeting_point, amount, txid
                                 start routing this side's half toward the meeting point
  LOCK          txid             payer: both halves routed, start locking on the first hop
  CANCEL_ROUTE  txid             withdraw this side's half (routing had started)
  TIMER         seconds          (re)arm the single phase timer (None: disarm); when it fires
                                 the I/O layer hands in "timeout"
  DONE          outcome, reason  "committed" or "cancelled", emitted exactly once

Payer states: new -> waiting_receipt -> confirming -> routing -> locking
  [-> lock_timeout] -> committed; cancelled from any state before locking.
Payee states: waiting_pay -> waiting_confirm -> routing -> waiting_lock ->
  committed; cancelled from any state before committed.

Rules common to both sides:
- A message equal to the last accepted one is a duplicate: ignored, no effects (also after the
  session is done). Any other message after the session is done, or for another payment id,
  raises ProtocolError.
- Cancel is possible in either direction until the payer locks. Once the payer has locked, its
  funds sit in the network: a Cancel from the payee is refused ("cannot cancel after lock"),
  and the lock timeout only moves the payer to state lock_timeout (no DONE): the outcome is
  then decided by the network (HTLC deadlines), reported with settled or rolled_back.
- The payee may cancel while waiting for the lock: it erases the token, so a lock arriving
  later can never be committed and is rolled back by the network.
- The payer accepts Commit (and settled with a token) only when the token hashes to the
  transaction id (token.token_matches); a bad token raises ProtocolError and changes nothing;
  so does confirm with a meeting point that was not offered.

Timeouts (seconds) per phase, overridable by the `timeouts` dict:
  receipt (payer waits for Receipt), confirm (waiting for the user's answer on the payer, for
  Confirm on the payee), routing (both halves / own half found), locking (payer: the network
  outcome; payee: the lock).
"""

from amiko_core import messages as m
from amiko_core.errors import AmikoError, ProtocolError
from amiko_core.token import token_matches, transaction_id

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

DEFAULT_TIMEOUTS = {"receipt": 10, "confirm": 60, "routing": 20, "locking": 20}

COMMITTED = "committed"
CANCELLED = "cancelled"

SEND = "send"
STATE = "state"
ASK_USER = "ask_user"
ROUTE = "route"
LOCK = "lock"
CANCEL_ROUTE = "cancel_route"
TIMER = "timer"
DONE = "done"

# The live states of both endpoints, one bit each in the rules' state masks (const: on a device
# these names cost nothing at run time).
LIVE_STATES = ("new", "waiting_receipt", "confirming", "routing", "locking", "lock_timeout",
               "waiting_pay", "waiting_confirm", "waiting_lock")
_NEW = const(1)
_WAITING_RECEIPT = const(2)
_CONFIRMING = const(4)
_ROUTING = const(8)
_LOCKING = const(16)
_LOCK_TIMEOUT = const(32)
_WAITING_PAY = const(64)
_WAITING_CONFIRM = const(128)
_WAITING_LOCK = const(256)
_ASKED = const(2 | 4)  # payer: waiting_receipt, confirming
_BEFORE_LOCK = const(2 | 4 | 8)  # payer: waiting_receipt, confirming, routing
_LOCKED = const(16 | 32)  # payer: locking, lock_timeout
_PAID = const(128 | 8 | 256)  # payee: after Pay, before the end

# What each kind carries, in order (Effect(kind, a, b, c)).
FIELDS = {SEND: ("message",), STATE: ("state",), ASK_USER: ("amount", "text"),
          ROUTE: ("meeting_point", "amount", "txid"), LOCK: ("txid",), CANCEL_ROUTE: ("txid",),
          TIMER: ("seconds",), DONE: ("outcome", "reason")}


class Effect:
    """One thing for the I/O layer to do: kind (SEND, STATE, ...) and the attributes FIELDS
    names for it, given in that order; the others read None. (One small class for all kinds:
    an instance holds only what was set, one small block on a device heap.)"""

    message = state = amount = text = meeting_point = txid = seconds = outcome = reason = None

    def __init__(self, kind, a=None, b=None, c=None):
        self.kind = kind
        names = FIELDS[kind]
        setattr(self, names[0], a)
        if len(names) > 1:
            setattr(self, names[1], b)
            if len(names) > 2:
                setattr(self, names[2], c)


class _Session:
    """What both endpoints share: the rules walk, duplicate and id checks, phase timer, finishing.

    RULES: one row per transition, (input, handler method, states): the input in any of those
    states (a mask of bits, one per entry of LIVE_STATES, in order) goes to the handler; an input is a
    message type or a local input's name. (A flat tuple, not a dict of tuples: a few hundred
    bytes on a device heap; tests/core/test_paylink.py checks that no input has two rules in
    one state.) HANDLERS: the message types the endpoint takes at all. _WAITING: timer phase -> what
    a timeout in it was waiting for (the cancel reason is "timeout waiting for " + that)."""

    # Until set, these read as the class's defaults: an instance only holds what has been
    # set, which keeps its attribute table small (one contiguous block on a device heap).
    txid = None
    amount = None
    meeting_point = None
    outcome = None
    reason = None
    last_message = None  # the last message accepted (duplicates of it are ignored)
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

    def _handler(self, name):
        bit = 1 << LIVE_STATES.index(self.state)
        rules = self.RULES
        for i in range(0, len(rules), 3):
            if rules[i] == name and rules[i + 2] & bit:
                return rules[i + 1]
        return None

    def accepts(self, name):
        """Would the local input name (e.g. "decline") do anything now?"""
        return self.outcome is None and self._handler(name) is not None

    def handle(self, name, arg=None):
        """The local input name with its argument: its handler's effects, or none where the
        rules have none for it now."""
        if self.outcome is None:
            handler = self._handler(name)
            if handler is not None:
                return getattr(self, handler)(arg)
        return []

    def receive(self, msg):
        """A message from the other endpoint arrived."""
        if self.last_message is not None and msg == self.last_message:
            return []
        if self.outcome is not None:
            raise ProtocolError("%s: %s after the payment was %s" % (self.ROLE, msg.name, self.outcome))
        if msg.type not in self.HANDLERS:
            raise ProtocolError("%s: unexpected %s message" % (self.ROLE, msg.name))
        msg_id = msg.fields.get("id")
        if msg_id is not None and msg_id != self.payment_id:
            raise ProtocolError(
                "%s: %s is for payment %r, this session is payment %r"
                % (self.ROLE, msg.name, msg_id, self.payment_id)
            )
        handler = self._handler(msg.type)
        if handler is None:
            raise ProtocolError("%s: unexpected %s in state %s" % (self.ROLE, msg.name, self.state))
        effects = getattr(self, handler)(msg)
        self.last_message = msg
        return effects

    # -- handlers common to both sides (msg or the local input's argument)

    def _on_timeout(self, _):
        phase = self._timer
        if phase is None:
            return []
        return self._cancel("timeout waiting for " + self._WAITING[phase], True)

    def _on_route_failed(self, reason):
        return self._cancel(reason or self.ROLE + " route failed", True)

    def _on_peer_cancel(self, msg):
        return self._cancel(msg.reason or "cancelled by " + self._OTHER, False)

    # -- helpers

    def _enter(self, state, phase):
        self.state = state
        self._timer = phase
        return [Effect(STATE, state), Effect(TIMER, self.timeouts[phase])]

    def _finish(self, effects, outcome, reason):
        if outcome == CANCELLED:
            self.token = None  # a cancelled payee must never release its token
        self.state = outcome
        self.outcome = outcome
        if reason is not None:  # (set once: a session finishes once; None is the class default)
            self.reason = reason
        self._timer = None
        effects += [Effect(STATE, outcome), Effect(TIMER, None), Effect(DONE, outcome, reason)]
        return effects

    def _cancel(self, reason, send):
        """Cancel before lock: optionally tell the peer, withdraw a started route."""
        effects = []
        if send:
            fields = {"id": self.payment_id}
            if reason:
                fields["reason"] = m.cut_reason(reason)
            effects.append(Effect(SEND, m.Message(m.CANCEL, fields)))
        if self.state in ("routing", "waiting_lock"):
            effects.append(Effect(CANCEL_ROUTE, self.txid))
        return self._finish(effects, CANCELLED, reason)


class PayerSession(_Session):
    """The payer endpoint: opens the link with Pay and locks once both halves are routed."""

    ROLE = "payer"
    _OTHER = "payee"
    HANDLERS = (m.RECEIPT, m.CANCEL, m.HAVE_PAYEE_ROUTE, m.COMMIT)
    _WAITING = {"receipt": "receipt", "confirm": "user confirmation", "routing": "routes"}
    STATES = ("new", "waiting_receipt", "confirming", "routing", "locking", "lock_timeout", COMMITTED, CANCELLED)
    RULES = (
        "start", "_on_start", _NEW,
        m.RECEIPT, "_on_receipt", _WAITING_RECEIPT,
        "confirm", "_on_confirm", _CONFIRMING,
        m.HAVE_PAYEE_ROUTE, "_on_payee_route", _ROUTING,
        "route_found", "_on_route_found", _ROUTING,
        m.COMMIT, "_on_commit", _LOCKED,
        "settled", "_on_commit", _LOCKED,
        m.CANCEL, "_on_peer_cancel", _BEFORE_LOCK,
        m.CANCEL, "_refuse_cancel", _LOCKED,
        "decline", "_on_decline", _BEFORE_LOCK,
        "abandon", "_on_decline", _ASKED,
        "route_failed", "_on_route_failed", _ROUTING,
        "rolled_back", "_on_route_failed", _ROUTING,
        "rolled_back", "_on_rolled_back", _LOCKED,
        "abort", "_on_decline", _ASKED,
        "abort", "_on_route_failed", _ROUTING,
        "abort", "_on_rolled_back", _LOCKED,
        "timeout", "_on_timeout", _BEFORE_LOCK,
        "timeout", "_on_lock_timeout", _LOCKING,
    )

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

    # -- handlers

    def _on_start(self, _):
        return [Effect(SEND, m.Message(m.PAY, {"id": self.payment_id}))] + self._enter("waiting_receipt", "receipt")

    def _on_receipt(self, msg):
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
        return [Effect(ASK_USER, amount, msg.receipt)] + self._enter("confirming", "confirm")

    def _on_confirm(self, meeting_point):
        """None picks the first offered meeting point the payer accepts."""
        if meeting_point is None:
            meeting_point = self._usable()[0]
        elif meeting_point not in self._usable():
            raise ProtocolError("payer: meeting point %r was not offered or is not acceptable" % meeting_point)
        msg = m.Message(m.CONFIRM, {"id": self.payment_id, "meeting_point": meeting_point})
        self.meeting_point = meeting_point
        effects = [Effect(SEND, msg), Effect(ROUTE, meeting_point, self.amount, self.txid)]
        return effects + self._enter("routing", "routing")

    def _on_decline(self, reason):
        return self._cancel(reason or "declined by payer", True)

    def _on_route_found(self, _):
        if self._own_route:
            return []
        self._own_route = True
        return self._maybe_lock()

    def _on_payee_route(self, msg):
        if msg.txid != self.txid:
            raise ProtocolError("payer: HavePayeeRoute for another transaction id")
        if self._payee_route:
            raise ProtocolError("payer: HavePayeeRoute twice")
        self._payee_route = True
        return self._maybe_lock()

    def _on_commit(self, msg_or_token):
        """Commit{token} from the payee, or settled: the network commit reached the payer
        (with the token, or None on the network's word)."""
        token = msg_or_token.token if isinstance(msg_or_token, m.Message) else msg_or_token
        if token is not None:
            if not token_matches(token, self.txid):
                raise ProtocolError("payer: commit token does not hash to the transaction id")
            self.token = token
        return self._finish([], COMMITTED, None)

    def _on_rolled_back(self, reason):
        return self._finish([], CANCELLED, reason or "lock rolled back by the network")

    def _on_lock_timeout(self, _):
        # Funds are locked: no cancel is possible, the network decides.
        self.state = "lock_timeout"
        self._timer = None
        return [Effect(STATE, "lock_timeout"), Effect(TIMER, None)]

    def _refuse_cancel(self, msg):
        raise ProtocolError("payer: cannot cancel after lock")

    def _maybe_lock(self):
        if not (self._own_route and self._payee_route):
            return []
        return [Effect(LOCK, self.txid)] + self._enter("locking", "locking")


class PayeeSession(_Session):
    """The payee endpoint: holds the commit token and releases it once the lock arrives."""

    ROLE = "payee"
    _OTHER = "payer"
    HANDLERS = (m.PAY, m.CONFIRM, m.CANCEL)
    _WAITING = {"confirm": "confirm", "routing": "payee route", "locking": "lock"}
    STATES = ("waiting_pay", "waiting_confirm", "routing", "waiting_lock", COMMITTED, CANCELLED)
    RULES = (
        m.PAY, "_on_pay", _WAITING_PAY,
        m.CONFIRM, "_on_confirm", _WAITING_CONFIRM,
        "route_found", "_on_route_found", _ROUTING,
        "locked", "_on_locked", _WAITING_LOCK,
        m.CANCEL, "_on_peer_cancel", _PAID,
        "cancel", "_on_cancel", _WAITING_PAY | _PAID,
        "abandon", "_on_cancel", _WAITING_PAY | _WAITING_CONFIRM,
        "route_failed", "_on_route_failed", _ROUTING,
        "rolled_back", "_on_rolled_back", _ROUTING | _WAITING_LOCK,
        "abort", "_on_route_failed", _ROUTING,
        "abort", "_on_rolled_back", _WAITING_LOCK,
        "timeout", "_on_timeout", _PAID,
    )

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

    # -- handlers

    def _on_pay(self, msg):
        return [Effect(SEND, self.receipt_message)] + self._enter("waiting_confirm", "confirm")

    def _on_confirm(self, msg):
        if msg.meeting_point not in self.meeting_points:
            raise ProtocolError("payee: meeting point %r was not offered" % msg.meeting_point)
        self.meeting_point = msg.meeting_point
        return [Effect(ROUTE, self.meeting_point, self.amount, self.txid)] + self._enter("routing", "routing")

    def _on_route_found(self, _):
        msg = m.Message(m.HAVE_PAYEE_ROUTE, {"id": self.payment_id, "txid": self.txid})
        return [Effect(SEND, msg)] + self._enter("waiting_lock", "locking")

    def _on_locked(self, _):
        msg = m.Message(m.COMMIT, {"id": self.payment_id, "token": self.token})
        return self._finish([Effect(SEND, msg)], COMMITTED, None)

    def _on_cancel(self, reason):
        """The payee's user (or the shop) cancels, or the payer went away; before Pay nothing is sent."""
        return self._cancel(reason or "cancelled by payee", self.state != "waiting_pay")

    def _on_rolled_back(self, reason):
        return self._cancel(reason or "rolled back", True)
