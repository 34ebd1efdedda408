"""The wallet: payer endpoint of seeds/004 with one link, an IOU channel at its provider.

Wallet(board, storage) takes decoded messages (on_message), bad frames (on_bad_frame) and
the passing of time (poll(now_ms)); what it sends is queued as frame bytes (take_output).
The terminal relays: payment-link messages (1..6) to the payee's node, Auth to the
provider named in Hello. The terminal is not trusted; see amiko_core.walletlink. Refusals go out as walletlink.Refused
(code ERR_*, reason, ref_type).

Flow of one payment:
  Tap{url} -> Hello, Pay -> Receipt -> the payee (signed Receipt; its payee_key is the key
  the URL names, if it names one) -> limits (per payment, per day) -> confirmation
  (automatic within the auto-confirm rules below, else the confirm button; the display
  shows amount, payee name and receipt)
  -> Confirm to the payee and Auth{route, Receipt} to the provider, which verifies the
  payee's signature before it routes (walletlink) -> Status{routed} and
  HavePayeeRoute -> Auth{lock} -> Commit{token} with hash160(token) == txid: paid (proof
  stored in history) -> Auth{commit, token} -> Status{committed, balance}: done.

Persistent state (record "state", storage.Storage): counter (last Auth counter used), climit
(counters up to it may have been used: after a boot counting goes on above it), pcounter (last
provider Status counter accepted), balance, time (provider's clock, last authenticated),
day/spent (daily limit), hist (number of history entries written), pay (the payment in progress
or None), acount/atotal/anew and payees (auto-confirm, below). pay.phase is one of:
  route  - Auth{route} may have left; the provider may be routing
  lock   - Auth{lock} may have left; the funds may be locked
  cancel - we asked the provider to drop the route
  done   - final outcome known (pay.outcome): written with its history entry, pay cleared
After a restart (or contact lost) the payment link to the payee is gone; the payment is
resolved with the provider alone at the next contact: route -> cancel; lock -> query (a
provider that has not locked is asked to cancel; locked ones are settled by the network,
the provider's Status{committed} carries the token); cancel -> cancel again.
No new payment starts while one is unresolved.

Flash writes (each one storage write: a power cut leaves all of it or none). A payment makes two:
  1. the point of no return, before Confirm and Auth{route} leave: pay (phase route), the
     counter reserved up to climit = counter + COUNTER_RESERVE, spent, auto-confirm counts;
  2. the token: its history entry (the proof) and the cleared payment, in one group, before
     Done and Auth{commit} leave (a cancelled payment: its history entry and the cleared
     payment, once the provider says so).
Everything else stays in RAM until the next write, as a cut may lose it: the Auths of a payment
take counters from the reserved range (one more write only when it runs out); phase `lock`
(a cut leaves `route`: the resume asks to cancel, and a provider that has locked says so); the
provider's Status (pcounter, time, balance: a Status is accepted only if it answers the
current Auth, whose counter is never used twice, so a stale pcounter lets no old one in); the
Auth{commit} after write 2 (`paid`: the provider learns the token from the network too; it is
told again while in contact). balance on flash is the last Status's, less the payment's amount
when write 2 comes before the provider's Status{committed}.

Auto-confirm (config from Provision: auto, auto_count, auto_total, auto_new): a payment is
confirmed without the button only if amount <= auto, and with it the payments confirmed so
since the last button press stay within auto_count payments (acount) and auto_total in sum
(atotal), and those to payees not in `payees` within auto_new (anew). `payees` holds the
walletlink.payee_tag of the last MAX_PAYEES payees confirmed by the button (newest last). A
button press resets the three counters and puts the payee in `payees`. Counted when the
route is authorised, never given back (a cancelled payment counts): the provider counts the
same from the Auth's confirm field and refuses an auto-confirmed route beyond the limits.

History: write-once files h<N> (N = 0, 1, ...), the last MAX_HISTORY kept; each holds the
Receipt fields (incl. payee key and signature), the meeting point, state, token.
"""

from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.errors import DecodeError, ProtocolError
from amiko_core import paylink as pl
from amiko_core.paylink import PayerSession
from amiko_core.token import token_matches
from amiko_core.walletlink import ERR_BAD_FRAME, ERR_BUSY, ERR_INTERNAL, ERR_REFUSED

MAX_HISTORY = 32
MAX_PAYEES = 16
DISPLAY_COLUMNS = 21  # a display without `columns`
AUTH_RETRY_MS = 1500  # no answer at all: send the Auth again (with a new counter)
WAIT_RETRY_MS = 7500  # an answer that says "in progress": ask again after this
CONTACT_MS = 15000
DAY = 86400
COUNTER_RESERVE = 16  # Auth counters a state write reserves (a payment takes 3, retries more)

_PAY_TYPES = (m.RECEIPT, m.CANCEL, m.HAVE_PAYEE_ROUTE, m.COMMIT)
# decoded at all (anything else is refused by its type code, before its body is looked at)
_ACCEPTED = _PAY_TYPES + (wl.TAP, wl.STATUS, wl.PROVISION, wl.GET_HISTORY)
_RECEIPT_KEYS = ("id", "amount", "receipt", "txid", "meeting_points", "payee_key", "signature", "expires",
                 "payee")


def _new_state():
    return {"counter": 0, "climit": 0, "pcounter": 0, "balance": 0, "time": 0, "day": 0, "spent": 0, "hist": 0, "pay": None,
            "acount": 0, "atotal": 0, "anew": 0, "payees": []}


def printable(text, n=DISPLAY_COLUMNS):
    """text as the display may show it: printable ASCII only (anything else, a look-alike
    letter or a control, becomes ?), at most n characters."""
    text = text[:n]
    try:
        b = text.encode()
    except UnicodeError:  # (CPython: a lone surrogate)
        b = b"\x00"
    if not b or (min(b) >= 0x20 and max(b) <= 0x7E):  # printable ASCII already (min/max run in C)
        return text
    out = []
    for ch in text:
        out.append(ch if " " <= ch <= "~" else "?")
    return "".join(out)


def payee_line(receipt):
    """Who is paid: "to " and the Receipt's payee name, or the start of its key."""
    name = receipt.get("payee")
    if name:
        return printable("to " + name)
    key = receipt.get("payee_key")
    return "to key " + "".join("%02x" % b for b in key[1:6]) if key else "to ?"


class Wallet:
    def __init__(self, board, storage, timeouts=None):
        self.board = board
        self.store = storage
        self.timeouts = timeouts
        self.out = []
        self.session = None
        self.config = storage.load("config")
        self.state = self._load_state()
        self.now = board.ticks_ms()
        self.timer_at = None  # ticks of the payer session's phase timer
        self.retry_at = None  # ticks to resend the outstanding Auth
        self.last_rx = None  # ticks of the last frame from a terminal
        self.asking = False  # waiting for the user's button
        self.pressed = False  # the payment being confirmed was confirmed by the button
        self.url_key = None  # the payee key the Tap's URL names
        self.paid = None  # a payment paid and cleared from flash whose provider is told (Auth{commit})
        self._effect_handlers = self._effects()
        self._recover()

    # ---------------------------------------------------------------- output

    def send(self, msg):
        self.out.append(m.to_frame(msg))

    def take_output(self):
        out = self.out
        self.out = []
        return out

    def error(self, code, reason, ref_type=None):
        fields = {"code": code, "reason": m.cut_reason(reason, 200)}
        if ref_type is not None:
            fields["ref_type"] = ref_type
        self.send(m.Message(wl.REFUSED_MSG, fields))

    def show(self, *lines):
        d = self.board.display
        if d is not None:
            n = getattr(d, "columns", DISPLAY_COLUMNS)
            d.show([printable(str(x), n) for x in lines][:4])

    def led(self, state):
        if self.board.led is not None:
            self.board.led.set(state)

    # ---------------------------------------------------------------- state

    def save(self):
        st = self.state
        st["climit"] = max(st["climit"], st["counter"] + COUNTER_RESERVE)
        self.store.save("state", st)

    def _load_state(self):
        st = self.store.load("state")
        if st is None:
            return _new_state()
        fresh = _new_state()
        for k in fresh:  # (a state written by an older firmware lacks the auto-confirm keys)
            if k not in st:
                st[k] = fresh[k]
        st["counter"] = max(st["counter"], st["climit"])
        return st

    def _recover(self):
        """After boot: finish what the storage says was in progress (no terminal needed)."""
        pay = self.state["pay"]
        if pay is None:
            self.show("Amiko wallet", "ready")
            return
        if pay["phase"] in ("paid", "done"):  # (written by an older firmware)
            self._finish(pay)
            if pay["phase"] == "paid":
                self.paid = pay
            self.show("Amiko wallet", "ready")
            return
        self.show("resolving", pay["id"])

    def provisioned(self):
        return self.config is not None

    def _day_of(self, t):
        return t // DAY

    def _spent_today(self):
        if self.state["day"] != self._day_of(self.state["time"]):
            return 0
        return self.state["spent"]

    # ---------------------------------------------------------------- input

    def on_bad_frame(self, reason):
        self.error(ERR_BAD_FRAME, reason)

    def on_frame(self, fr):
        self.last_rx = self.now
        if fr.type not in _ACCEPTED:
            self.error(ERR_REFUSED, "wallet does not accept message type %d" % fr.type, fr.type)
            return
        try:
            msg = m.from_frame(fr)
        except DecodeError as e:
            self.error(ERR_BAD_FRAME, e.reason, fr.type)
            return
        try:
            self.on_message(msg)
        except (ProtocolError, DecodeError) as e:
            self.error(ERR_REFUSED, e.reason, msg.type)
        except Exception as e:  # a bug must not take the wallet down: back to what flash says
            self.error(ERR_INTERNAL, "internal error on %s: %r" % (msg.name, e), msg.type)
            self.state = self._load_state()
            self.paid = None
            self.session = None
            self.timer_at = None
            self.asking = False

    def on_message(self, msg):
        t = msg.type
        if t == wl.PROVISION:
            return self._on_provision(msg)
        if t == wl.GET_HISTORY:
            return self._on_get_history(msg)
        if not self.provisioned():
            raise ProtocolError("wallet is not provisioned: run `amiko wallet provision`")
        if t == wl.TAP:
            return self._on_tap(msg)
        if t == wl.STATUS:
            return self._on_status(msg)
        if t in _PAY_TYPES:
            if self.session is None:
                raise ProtocolError("no payment in progress for %s" % msg.name)
            return self._apply(self.session.receive(msg))
        raise ProtocolError("wallet does not accept %s" % msg.name)

    # ---------------------------------------------------------------- provisioning, history

    def _on_provision(self, msg):
        if self.provisioned():
            raise ProtocolError("wallet is provisioned already: erase its flash to provision it again")
        cfg = {"wallet": msg.wallet, "key": msg.key, "provider": msg.provider,
               "limit": msg.limit, "daily": msg.daily, "auto": msg.auto,
               "auto_count": msg.auto_count, "auto_total": msg.auto_total, "auto_new": msg.auto_new}
        self.store.save("config", cfg)
        self.config = cfg
        self.send(wl.provision_ack(msg.key, msg.wallet))
        self.show("provisioned", msg.wallet)

    def _history_name(self, index):
        return "h%d" % index

    def _on_get_history(self, msg):
        count = min(self.state["hist"], MAX_HISTORY)
        if msg.index >= count:
            raise ProtocolError("no history entry %d (%d stored)" % (msg.index, count))
        rec = self.store.get_once(self._history_name(self.state["hist"] - 1 - msg.index))
        if type(rec) is not dict:
            raise ProtocolError("history entry %d is damaged" % msg.index)
        fields = {"index": msg.index, "count": count}
        for k in rec:
            fields[k] = rec[k]
        self.send(m.Message(wl.HISTORY_ENTRY, fields))

    def _write_history(self, pay):
        rec = {}
        for k in _RECEIPT_KEYS:
            if pay.get(k) is not None:
                rec[k] = pay[k]
        rec["meeting_point"] = pay["mp"]
        if pay["phase"] == "paid" or pay.get("outcome") == wl.COMMITTED:
            rec["state"] = wl.COMMITTED
            rec["token"] = pay["token"]
        else:
            rec["state"] = wl.CANCELLED
            if pay.get("reason"):
                rec["reason"] = m.cut_reason(pay["reason"])
        n = self.state["hist"]
        self.store.put_once(self._history_name(n), rec)
        if n >= MAX_HISTORY:
            self.store.drop_once(self._history_name(n - MAX_HISTORY))

    def _finish(self, pay):
        """The payment's history entry and the cleared payment: one flash write."""
        self.store.begin()
        self._write_history(pay)
        self.state["pay"] = None
        self.state["hist"] += 1
        self.save()
        self.store.commit()
        self.retry_at = None

    def _outstanding(self):
        """The payment the provider is being asked about: the one in progress, or the one paid."""
        pay = self.state["pay"]
        return self.paid if pay is None else pay

    # ---------------------------------------------------------------- tap

    def _hello(self):
        cfg = self.config
        fields = {"wallet": cfg["wallet"], "provider": cfg["provider"]}
        if self.state["pay"] is not None:
            fields["pending"] = self.state["pay"]["txid"]
        self.send(m.Message(wl.HELLO, fields))

    def _on_tap(self, msg):
        self._hello()
        if self.state["pay"] is not None:
            if self.session is None:
                self._resume()
            if msg.url is not None:
                self.error(ERR_BUSY, "wallet busy: payment %s is not resolved yet" % self.state["pay"]["id"], wl.TAP)
            return
        if msg.url is None:
            if self.paid is not None and self.session is None:
                self._send_auth(wl.COMMIT)
            return
        if self.session is not None and self.session.outcome is None:
            self.error(ERR_BUSY, "wallet busy: a payment is in progress", wl.TAP)
            return
        pid = wl.payment_id_of(msg.url)
        self.url_key = wl.payee_key_of(msg.url)
        self.pressed = False
        self.session = PayerSession(pid, timeouts=self.timeouts)
        self.led("busy")
        self._apply(self.session.handle("start"))

    # ---------------------------------------------------------------- payer session effects

    def _apply(self, effects):
        handlers = self._effect_handlers
        for e in effects:
            handlers[e.kind](e)

    def _effects(self):
        """The payer session's effects, by kind (made once: the payment path allocates none)."""
        return {
            pl.SEND: lambda e: self.send(e.message),
            pl.TIMER: self._on_timer_effect,
            pl.STATE: lambda e: self._on_state(e.state),
            pl.ASK_USER: lambda e: self._ask_user(e.amount, e.text),
            pl.ROUTE: lambda e: self._start_pay(e.meeting_point, e.amount, e.txid),
            pl.LOCK: lambda e: self._set_phase("lock"),
            pl.CANCEL_ROUTE: self._on_cancel_route,
            pl.DONE: lambda e: self._session_done(e.outcome, e.reason),
        }

    def _on_timer_effect(self, e):
        self.timer_at = None if e.seconds is None else self.now + int(e.seconds * 1000)

    def _on_cancel_route(self, e):
        pay = self.state["pay"]
        if pay is not None and pay["phase"] == "route":
            self._set_phase("cancel")

    def _on_state(self, name):
        if name == "lock_timeout" and self.state["pay"] is not None:
            self._send_auth(wl.QUERY)

    def _ask_user(self, amount, text):
        s = self.session
        cfg = self.config
        problem = None  # (the balance is the provider's to check: a top-up since our last Status counts)
        r = s.receipt
        expires = r.expires
        if r.payee_key is None or r.signature is None:
            problem = "the payee did not sign its receipt: cannot vouch for it"
        elif self.url_key is not None and r.payee_key != self.url_key:
            problem = "the receipt is signed by another key than the payment URL names"
        elif len(m.encode(r)) > wl.MAX_RECEIPT:
            problem = "receipt over %d bytes: too large to vouch for" % wl.MAX_RECEIPT
        elif amount > cfg["limit"]:
            problem = "amount %d is over the per-payment limit %d" % (amount, cfg["limit"])
        elif self._spent_today() + amount > cfg["daily"]:
            problem = "amount %d is over today's remaining limit %d" % (amount, cfg["daily"] - self._spent_today())
        elif expires is not None and self.state["time"] and expires < self.state["time"]:
            problem = "payment request expired"
        if problem:
            self.show("DECLINED", problem)
            self.led("error")
            self._apply(s.handle("decline", problem))
            return
        why = self._needs_press(amount, wl.payee_tag(r.payee_key))
        if why is None:
            self._apply(s.handle("confirm"))
            return
        self.asking = True
        self.show("Pay %d ?" % amount, payee_line(r.fields), text[:21], why)

    def _needs_press(self, amount, tag):
        """None if the auto-confirm rules let this payment go without the button, else what
        the display says."""
        cfg = self.config
        st = self.state
        if amount > cfg["auto"]:
            return "OK=confirm"
        if st["acount"] + 1 > cfg.get("auto_count", 0) or st["atotal"] + amount > cfg.get("auto_total", 0):
            return "auto limit: OK"
        if tag not in st["payees"] and st["anew"] + 1 > cfg.get("auto_new", 0):
            return "new payee: OK"
        return None

    def _count_confirmation(self, pay, amount):
        st = self.state
        tag = wl.payee_tag(pay["payee_key"])
        if self.pressed:
            pay["confirm"] = wl.BUTTON
            st["acount"] = st["atotal"] = st["anew"] = 0
            payees = [t for t in st["payees"] if t != tag]
            payees.append(tag)
            st["payees"] = payees[-MAX_PAYEES:]
        else:
            pay["confirm"] = wl.AUTO
            st["acount"] += 1
            st["atotal"] += amount
            if tag not in st["payees"]:
                st["anew"] += 1

    def _start_pay(self, mp, amount, txid):
        r = self.session.receipt
        pay = {"phase": "route", "mp": mp, "token": None}
        for k in _RECEIPT_KEYS:
            pay[k] = r.fields.get(k)
        pay["rhash"] = wl.receipt_hash(r)
        self._count_confirmation(pay, amount)
        st = self.state
        today = self._day_of(st["time"])
        if st["day"] != today:
            st["day"] = today
            st["spent"] = 0
        st["spent"] += amount
        st["pay"] = pay
        self.paid = None  # (its provider learns the token from the network)
        self.save()  # the point of no return: before Confirm and Auth{route} leave
        self._send_auth(wl.ROUTE)
        self.show("Paying %d" % amount, payee_line(pay), "routing...")

    def _set_phase(self, phase):
        self.state["pay"]["phase"] = phase
        self._send_auth(_PHASE_ACTION[phase])

    def _send_auth(self, action):
        """Send the Auth with the next counter (reserved on flash: a write only when the
        reserved range is used up)."""
        pay = self._outstanding()
        cfg = self.config
        st = self.state
        st["counter"] += 1
        if st["counter"] > st["climit"]:
            self.save()
        token = pay["token"] if action == wl.COMMIT else None
        receipt = None
        if action == wl.ROUTE:  # the provider verifies the payee's signature before it routes
            fields = {}
            for k in _RECEIPT_KEYS:
                fields[k] = pay.get(k)
            receipt = m.encode(m.Message(m.RECEIPT, fields))
        self.send(wl.auth(cfg["key"], cfg["wallet"], self.state["counter"], action, pay["txid"],
                          pay["amount"], pay["mp"], pay["payee_key"], pay["rhash"], pay["confirm"], token,
                          receipt))
        self.retry_at = self.now + AUTH_RETRY_MS

    def _resume(self):
        pay = self.state["pay"]
        phase = pay["phase"]
        if phase == "route":
            pay["phase"] = "cancel"
            phase = "cancel"
        self._send_auth(wl.QUERY if phase == "lock" else _PHASE_ACTION[phase])

    def _session_done(self, outcome, reason):
        s = self.session
        pay = self.state["pay"]
        if outcome == "committed":
            pay["token"] = s.token
            pay["phase"] = "paid"
            if not pay.get("settled"):
                self.state["balance"] = max(0, self.state["balance"] - pay["amount"])
            self._finish(pay)  # the proof, before anything leaves
            self.paid = pay
            self._send_auth(wl.COMMIT)
            self.send(m.Message(wl.DONE, {"id": s.payment_id, "state": wl.COMMITTED}))
            self.show("PAID %d" % pay["amount"], payee_line(pay), (pay.get("receipt") or "")[:21])
            self.led("ok")
        else:
            reason = reason or "cancelled"
            self.send(m.Message(wl.DONE, {"id": s.payment_id, "state": wl.CANCELLED, "reason": m.cut_reason(reason)}))
            self.show("CANCELLED", reason)
            self.led("error")
            if pay is not None and pay["phase"] == "done":
                self._finish(pay)
            elif pay is not None and pay["phase"] == "route":
                self._set_phase("cancel")
        self.session = None
        self.timer_at = None
        self.asking = False

    # ---------------------------------------------------------------- provider answers

    def _on_status(self, msg):
        cfg = self.config
        st = self.state
        pay = self._outstanding()
        if msg.wallet != cfg["wallet"] or not wl.verify(cfg["key"], msg):
            raise ProtocolError("Status refused: not authenticated by the provider")
        if msg.counter <= st["pcounter"]:
            raise ProtocolError("Status refused: provider counter %d is not above %d (replay)" % (msg.counter, st["pcounter"]))
        if pay is None or msg.ref != st["counter"]:
            raise ProtocolError("Status refused: it does not answer the current authorisation")
        if msg.txid != pay["txid"] or msg.amount != pay["amount"] or msg.meeting_point != pay["mp"]:
            raise ProtocolError("Status refused: transaction, amount or meeting point differ")
        state = msg.state
        if state == wl.COMMITTED and not token_matches(msg.token, pay["txid"]):
            raise ProtocolError("Status refused: committed without a token that matches the transaction")
        st["pcounter"] = msg.counter
        day = self._day_of(msg.time)
        if st["time"] and day > st["day"]:
            st["spent"] = 0  # a new day
        st["day"] = day  # (the first time ever known: what was spent counts for today)
        st["time"] = msg.time
        st["balance"] = msg.balance
        self.retry_at = None
        phase = pay["phase"]
        s = self.session
        live = s is not None and s.outcome is None
        if state in (wl.CANCELLED, wl.REFUSED):
            if phase == "paid":
                self.retry_at = self.now + AUTH_RETRY_MS  # the provider lost track; we hold the token: keep asking
                return
            self._mark_done(pay, wl.CANCELLED, msg.reason or "cancelled by the provider")
            if live:
                self._apply(s.handle("abort", pay["reason"]))
            else:
                self.send(m.Message(wl.DONE, {"id": pay["id"], "state": wl.CANCELLED, "reason": pay["reason"]}))
                self._finish(pay)
            return
        if state == wl.COMMITTED:
            if phase == "paid":
                self.paid = None  # told: nothing to write (the proof is on flash, the payment cleared)
                self.retry_at = None
                return
            pay["settled"] = True  # (the balance is the one after the payment)
            effects = s.handle("settled", msg.token) if live else None
            if effects:
                self._apply(effects)  # -> _session_done: paid, Auth{commit}
                return
            pay["token"] = msg.token
            self._mark_done(pay, wl.COMMITTED, None)
            self._finish(pay)
            self.send(m.Message(wl.DONE, {"id": pay["id"], "state": wl.COMMITTED}))
            return
        if phase == "route" and state == wl.ROUTED:
            if live:
                self._apply(s.handle("route_found"))
            else:
                self._set_phase("cancel")
        elif phase == "lock" and state == wl.ROUTED and not live:
            self._set_phase("cancel")  # the lock never reached the provider: drop the route
        elif phase == "cancel" and state == wl.LOCKED:
            pay["phase"] = "lock"  # too late to cancel: the network decides
            self.retry_at = self.now + WAIT_RETRY_MS
        elif phase == "lock" and state == wl.LOCKED and not live:
            self.retry_at = self.now + WAIT_RETRY_MS  # the network decides; ask now and then
        if phase == "paid":
            self.retry_at = self.now + AUTH_RETRY_MS  # keep telling the provider
        elif state == wl.ROUTING:
            self.retry_at = self.now + WAIT_RETRY_MS  # the provider sends another Status when routed
        if state == wl.LOCKED:
            self.show("Paying %d" % pay["amount"], "locked")

    def _mark_done(self, pay, outcome, reason):
        pay["outcome"] = outcome
        if reason:
            pay["reason"] = m.cut_reason(reason)
        if outcome == wl.CANCELLED and self.state["day"] == self._day_of(self.state["time"]):
            self.state["spent"] = max(0, self.state["spent"] - pay["amount"])
        pay["phase"] = "done"

    # ---------------------------------------------------------------- time and buttons

    def in_contact(self):
        return self.last_rx is not None and self.now - self.last_rx < CONTACT_MS

    def poll(self, now):
        self.now = now
        s = self.session
        if self.asking and s is not None and self.board.buttons is not None:
            ev = self.board.buttons.poll()
            if ev == "confirm":
                self.asking = False
                self.pressed = True
                self._apply(s.handle("confirm"))
            elif ev == "cancel":
                self.asking = False
                self._apply(s.handle("decline", "declined by the user"))
        if self.timer_at is not None and now - self.timer_at >= 0 and self.session is not None:
            self.timer_at = None
            self.asking = False
            self._apply(self.session.handle("timeout"))
        if self.retry_at is not None and now - self.retry_at >= 0 and self._outstanding() is not None:
            if self.in_contact():
                pay = self._outstanding()
                self._send_auth(wl.QUERY if pay["phase"] == "lock" else _PHASE_ACTION[pay["phase"]])
            else:
                self.retry_at = None  # resumed at the next contact (Tap)


_PHASE_ACTION = {"route": wl.ROUTE, "lock": wl.LOCK, "cancel": wl.CANCEL, "paid": wl.COMMIT}
