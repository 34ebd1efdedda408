"""The shop terminal's sale state machine (sans-IO: no sockets, no clock of its own).

One sale at a time. Every input is a method call that takes `now` (seconds, any monotonic
clock) and returns a list of effects for the bridge to carry out; the machine never does
I/O. Phases (PHASES, in order):

    idle        no sale; the reader is armed (a wallet that arrives gets `notice`: no sale pending)
    preparing   asking the shop node for a payment request            (time-out: node)
    waiting     request ready (URL, QR); waiting for a wallet           (time-out: wallet)
    connected   a wallet is connected; the receipt goes to it           (time-out: connected)
    confirming  the customer is asked to confirm on the wallet          (time-out: confirm)
    routing     confirmed: both sides route to the meeting point       (time-out: routing)
    locked      funds are locked along the route; token on its way     (time-out: locked)
    paid        final: the shop node committed the payment
    cancelled   final: with a reason that says what happened

Final phases stay on screen until the cashier dismisses them (-> idle) or starts the next
sale; they have no time-out. Every other phase has one: when it passes, the sale is
cancelled with a reason naming what did not happen in time.

The shop node is the truth about money: node_state(sale_id, state) with the payee row's
state ('requested' | 'confirmed' | 'locked' | 'committed' | 'cancelled') only moves the sale
forward (confirmed -> routing, locked -> locked, committed -> paid, cancelled -> cancelled).
Once the node has the payer's confirmation (routing, locked) the cashier can no longer
cancel (the network finishes or times out the payment; refusing keeps it from being
half-done); a time-out there ends the sale as cancelled but `watch` stays on: if the node
commits it later, node_state() reports it through `late` (see Sale.late).

Effects (tuples):
    ("create_request", sale_id, amount, receipt)   ask the node for a request
    ("offer", sale_id, url)                        arm the transports with this sale's URL
    ("rearm",)                                     the sale is over: re-arm the transports idle
    ("cancel_request", sale_id, payment_id, reason)  tell the node / wallet the sale is off
                                                   (cancel_failed() when the node refuses)
    ("watch", sale_id, txid)                       follow the node's payee row for txid
    ("unwatch", sale_id)                           stop following (the sale reached a final state)
    ("changed",)                                   the snapshot changed: push it to pages

Errors for the caller (bad input, two sales at once, nothing to cancel) raise SaleError with
a message for the cashier; the state is then unchanged.
"""

IDLE = "idle"
PREPARING = "preparing"
WAITING = "waiting"
CONNECTED = "connected"
CONFIRMING = "confirming"
ROUTING = "routing"
LOCKED = "locked"
PAID = "paid"
CANCELLED = "cancelled"

PHASES = (IDLE, PREPARING, WAITING, CONNECTED, CONFIRMING, ROUTING, LOCKED, PAID, CANCELLED)
FINAL = (PAID, CANCELLED)
ACTIVE = (PREPARING, WAITING, CONNECTED, CONFIRMING, ROUTING, LOCKED)
# The cashier may cancel until the payer's confirmation reached the shop node.
CANCELLABLE = (PREPARING, WAITING, CONNECTED, CONFIRMING)
_RANK = {p: i for i, p in enumerate(PHASES)}

# Default time-outs (seconds) per phase; the bridge config may override each.
DEFAULT_TIMEOUTS = {
    PREPARING: 10,
    WAITING: 120,
    CONNECTED: 10,
    CONFIRMING: 60,
    ROUTING: 40,
    LOCKED: 40,
}

# What the page says while in a phase (the page adds the time left).
WAITING_FOR = {
    IDLE: "Enter an amount to start a sale",
    PREPARING: "Asking the shop node for a payment request",
    WAITING: "Tap or connect your wallet",
    CONNECTED: "Wallet connected: sending the receipt",
    CONFIRMING: "Confirm the payment on your wallet",
    ROUTING: "Finding a route through the network",
    LOCKED: "Funds locked: completing the payment",
    PAID: "Paid",
    CANCELLED: "Cancelled",
}

_TIMEOUT_REASON = {
    PREPARING: "the shop node did not answer within %s s (is `amiko node` running?)",
    WAITING: "no wallet connected within %s s",
    CONNECTED: "the wallet did not get the receipt within %s s",
    CONFIRMING: "the customer did not confirm on the wallet within %s s",
    ROUTING: "no route through the network within %s s",
    LOCKED: "the locked payment did not complete within %s s",
}

# Marks in a sale's timeline besides the phases (wallet_mark): what the bridge sees on the
# wallet's line, in the usual order: the wallet's Hello answering this sale's tap (later than
# "connected" when the wallet was there already, e.g. still finishing the previous sale), its
# Confirm to the payee, its provider's Status
# routed, the payee's HavePayeeRoute, the provider's Status locked, the payee's Commit{token},
# the provider's Status committed, the wallet's Done.
MARKS = ("hello", "confirm", "provider_routed", "payee_route", "provider_locked", "token", "provider_committed",
         "wallet_done")
WALLET_DONE = "wallet_done"

_NODE_PHASE = {"confirmed": ROUTING, "locked": LOCKED, "committed": PAID, "cancelled": CANCELLED}
NODE_STATES = ("requested",) + tuple(_NODE_PHASE)

MAX_AMOUNT = 2100000000000000  # amiko_core.messages.MAX_AMOUNT (kept import-free: sans-IO, no deps)
MAX_RECEIPT = 512
MAX_REASON = 300


class SaleError(ValueError):
    """The cashier's request cannot be done now; the message says why and what to do."""


def check_amount(amount):
    if type(amount) is not int or not 0 < amount <= MAX_AMOUNT:
        raise SaleError("amount must be a whole number of base units in 1..%d, got %r" % (MAX_AMOUNT, amount))
    return amount


def check_receipt(receipt):
    if type(receipt) is not str:
        raise SaleError("receipt must be text")
    if len(receipt.encode("utf-8")) > MAX_RECEIPT:
        raise SaleError("receipt is %d bytes of UTF-8, at most %d allowed: shorten it"
                        % (len(receipt.encode("utf-8")), MAX_RECEIPT))
    for c in receipt:
        if (c < " " and c not in "\n\t") or "\x7f" <= c <= "\x9f":
            raise SaleError("receipt contains control character %r: remove it" % c)
    return receipt


def _reason(text):
    text = str(text or "unknown reason")
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


class Sale:
    """One sale's data (the machine's current or last sale)."""

    def __init__(self, sale_id, amount, receipt, now):
        self.id = sale_id
        self.amount = amount
        self.receipt = receipt
        self.url = None
        self.payment_id = None
        self.txid = None
        self.transport = None
        self.reason = None
        self.started = now
        self.times = {PREPARING: now}  # phase -> time it was entered
        self.wallet_at = None  # first contact with a wallet
        self.paid_at = None
        self.late = None  # a final node state that came after the sale had timed out
        self.wallet_left = False  # the wallet's contact ended during the sale
        self.wallet_state = None  # what the wallet said at the end (Done): "committed" | "cancelled"
        self.cancel_failed = False  # the shop node did not cancel the request: it may still be paid

    def tap_to_paid_ms(self):
        if self.wallet_at is None or self.paid_at is None:
            return None
        return int(round((self.paid_at - self.wallet_at) * 1000))


class SaleMachine:
    def __init__(self, timeouts=None):
        self.timeouts = dict(DEFAULT_TIMEOUTS)
        for phase, seconds in (timeouts or {}).items():
            if phase not in DEFAULT_TIMEOUTS:
                raise ValueError("no time-out for phase %r (phases with one: %s)" % (phase, ", ".join(DEFAULT_TIMEOUTS)))
            if type(seconds) not in (int, float) or not 0 < seconds <= 86400:
                raise ValueError("time-out of %s must be 0 < seconds <= 86400, got %r" % (phase, seconds))
            self.timeouts[phase] = seconds
        self.phase = IDLE
        self.sale = None
        self.deadline = None
        self.notice = None  # a message besides the phase (e.g. a wallet arrived with no sale)
        self.wallet_present = None  # transport name of a connected wallet, if any
        self._next_id = 1

    # -- helpers

    def _enter(self, phase, now, effects):
        self.phase = phase
        if self.sale is not None:
            self.sale.times.setdefault(phase, now)
        self.deadline = now + self.timeouts[phase] if phase in self.timeouts else None
        effects.append(("changed",))

    def _finish(self, phase, now, reason, effects, notify_node=True):
        sale = self.sale
        was = self.phase
        sale.reason = _reason(reason) if phase == CANCELLED else None
        if phase == PAID:
            sale.paid_at = now
        if phase == CANCELLED and notify_node and was in CANCELLABLE:
            effects.append(("cancel_request", sale.id, sale.payment_id, sale.reason))
        # After routing/locked time out, the node may still finish: keep watching.
        if not (phase == CANCELLED and was in (ROUTING, LOCKED) and sale.txid is not None and notify_node):
            effects.append(("unwatch", sale.id))
        self._enter(phase, now, effects)
        effects.append(("rearm",))

    def _current(self, sale_id):
        return self.sale is not None and self.sale.id == sale_id

    # -- cashier

    def start(self, amount, receipt, now):
        """A new sale (also dismisses a final one). Refused while another sale is active."""
        check_amount(amount)
        check_receipt(receipt)
        if self.phase in ACTIVE:
            raise SaleError("a sale of %d is in progress (%s): finish or cancel it before starting another"
                            % (self.sale.amount, self.phase))
        effects = []
        if self.sale is not None and self.sale.late is None and self.phase == CANCELLED:
            effects.append(("unwatch", self.sale.id))
        self.sale = Sale(self._next_id, amount, receipt, now)
        self._next_id += 1
        self.notice = None
        effects.append(("create_request", self.sale.id, amount, receipt))
        self._enter(PREPARING, now, effects)
        return effects

    def cancel(self, now, reason="cancelled by the cashier"):
        if self.phase not in ACTIVE:
            raise SaleError("no sale in progress to cancel")
        if self.phase not in CANCELLABLE:
            raise SaleError("the payment is already on its way through the network (%s): it ends paid or "
                            "cancelled within %d s" % (self.phase, max(0, int(self.deadline - now + 0.999))))
        effects = []
        self._finish(CANCELLED, now, reason, effects)
        return effects

    def dismiss(self, now):
        """Clear a final sale from the screen (-> idle)."""
        if self.phase not in FINAL:
            raise SaleError("nothing to dismiss: the sale is %s" % self.phase)
        effects = []
        self.notice = None
        self._enter(IDLE, now, effects)
        return effects

    # -- shop node

    def request_created(self, sale_id, url, payment_id, txid, now):
        if not self._current(sale_id) or self.phase != PREPARING:
            return []
        sale = self.sale
        sale.url, sale.payment_id, sale.txid = url, payment_id, txid
        effects = [("watch", sale.id, txid), ("offer", sale.id, url)]
        self._enter(WAITING, now, effects)
        if self.wallet_present is not None:  # a wallet is already there: it gets this sale at once
            effects += self.wallet_arrived(self.wallet_present, now)
        return effects

    def request_failed(self, sale_id, reason, now):
        if not self._current(sale_id) or self.phase != PREPARING:
            return []
        effects = []
        self._finish(CANCELLED, now, "no payment request from the shop node: %s" % reason, effects, notify_node=False)
        return effects

    def node_state(self, sale_id, state, now, reason=None):
        """The shop node's payee row for the sale moved to state (only forward moves count)."""
        if state not in NODE_STATES:
            raise SaleError("unknown node payment state %r" % (state,))
        if not self._current(sale_id) or state == "requested":
            return []
        target = _NODE_PHASE[state]
        effects = []
        if self.phase in FINAL:
            # A final outcome for a sale that timed out here while the network was finishing it.
            if self.phase == CANCELLED and target in FINAL and self.sale.late is None and (
                    self.sale.times.get(ROUTING) or self.sale.cancel_failed):
                self.sale.late = state
                if state == "committed":
                    self.sale.paid_at = now
                self.notice = ("the network completed this payment after the time-out: it is PAID"
                               if state == "committed" else "the network cancelled this payment too")
                effects += [("unwatch", sale_id), ("changed",)]
            return effects
        if self.phase == PREPARING or _RANK[target] <= _RANK[self.phase]:
            return []
        if target == PAID:
            self._finish(PAID, now, None, effects)
        elif target == CANCELLED:
            why = "the shop node cancelled the payment: %s" % (reason or "no reason given")
            if self.sale.wallet_left and self.phase in (CONNECTED, CONFIRMING):
                why = "the wallet left before the payment was confirmed (%s)" % why
            self._finish(CANCELLED, now, why, effects, notify_node=False)
        else:
            self._enter(target, now, effects)
        return effects

    def cancel_failed(self, sale_id, message, now):
        """The shop node did not cancel the sale's request (its URL may still be paid): say so on
        the page and follow the node's row again, so a late payment shows through `late`."""
        if not self._current(sale_id) or self.phase != CANCELLED:
            return []
        sale = self.sale
        sale.cancel_failed = True
        self.notice = _reason("the shop node did not cancel the payment request (%s): it may still be paid" % message)
        effects = [("changed",)]
        if sale.txid is not None:
            effects.insert(0, ("watch", sale.id, sale.txid))
        return effects

    # -- wallet (relay / transports)

    def wallet_arrived(self, transport, now):
        """A wallet made contact over transport (e.g. "serial:/dev/ttyACM0")."""
        self.wallet_present = transport
        effects = []
        if self.phase == WAITING:
            self.sale.transport = transport
            self.sale.wallet_at = now
            self.sale.wallet_left = False
            self.notice = None
            self._enter(CONNECTED, now, effects)
        elif self.phase in ACTIVE:
            if self.sale.transport not in (None, transport):
                self.notice = "another wallet (%s) connected during this sale: it is ignored" % transport
                effects.append(("changed",))
        else:
            self.notice = "a wallet connected but no sale is pending: enter an amount first"
            effects.append(("changed",))
        return effects

    def wallet_confirming(self, now):
        """The wallet has the receipt and asks its user to confirm."""
        if self.phase != CONNECTED:
            return []
        effects = []
        self._enter(CONFIRMING, now, effects)
        return effects

    def wallet_mark(self, sale_id, mark, now, wallet_state=None):
        """A moment seen on the wallet's line (one of MARKS), kept in the sale's timeline; not a
        phase: it changes neither what the page says nor a time-out. The first time counts."""
        if not self._current(sale_id) or mark not in MARKS or mark in self.sale.times:
            return []
        self.sale.times[mark] = now
        if mark == WALLET_DONE:
            self.sale.wallet_state = wallet_state
            return [("changed",)]
        return []

    def wallet_declined(self, now, reason="the customer declined on the wallet"):
        if self.phase not in (CONNECTED, CONFIRMING):
            return []
        effects = []
        self._finish(CANCELLED, now, reason, effects)
        return effects

    def wallet_left(self, transport, now):
        """The wallet went away (unplugged, out of range)."""
        if self.wallet_present == transport:
            self.wallet_present = None
        effects = []
        if self.phase in (CONNECTED, CONFIRMING) and self.sale.transport == transport:
            # Whether the confirmation got out before the contact ended, only the shop node knows:
            # its payee session ends (payer disconnected: cancelled) or goes on (routing). Keep
            # following it; the phase's time-out is the backstop.
            self.sale.wallet_left = True
            self.notice = "the wallet left before the payment was confirmed: waiting for the shop node's verdict"
            effects.append(("changed",))
        elif self.phase in (ROUTING, LOCKED) and self.sale.transport == transport:
            self.notice = "the wallet left; the payment still completes or times out in the network"
            effects.append(("changed",))
        elif self.phase not in ACTIVE and self.notice and "no sale is pending" in self.notice:
            self.notice = None
            effects.append(("changed",))
        return effects

    # -- time

    def tick(self, now):
        """Time passed: a phase whose time-out expired ends the sale as cancelled."""
        if self.deadline is None or now < self.deadline or self.phase not in self.timeouts:
            return []
        effects = []
        phase = self.phase
        self._finish(CANCELLED, now, "timed out: " + _TIMEOUT_REASON[phase] % _fmt_seconds(self.timeouts[phase]),
                     effects)
        return effects

    # -- view

    def snapshot(self, now):
        """Everything the page shows, JSON-ready."""
        sale = self.sale
        snap = {
            "phase": self.phase,
            "waiting_for": WAITING_FOR[self.phase],
            "notice": self.notice,
            "seconds_left": None if self.deadline is None else max(0, int(self.deadline - now + 0.999)),
            "timeout": self.timeouts.get(self.phase),
            "cancellable": self.phase in CANCELLABLE,
            "dismissable": self.phase in FINAL,
            "wallet_present": self.wallet_present,
            "sale": None,
        }
        if sale is not None:
            snap["sale"] = {
                "id": sale.id, "amount": sale.amount, "receipt": sale.receipt, "url": sale.url,
                "payment_id": sale.payment_id, "txid": sale.txid, "transport": sale.transport,
                "reason": sale.reason, "late": sale.late, "wallet_state": sale.wallet_state,
                "tap_to_paid_ms": sale.tap_to_paid_ms(),
                "timeline_ms": {p: int(round((t - sale.started) * 1000)) for p, t in sale.times.items()},
                "clock_started": sale.started,  # the bridge's clock at the sale's start (to line up timelines)
            }
        return snap


def _fmt_seconds(s):
    return "%d" % s if s == int(s) else "%g" % s
