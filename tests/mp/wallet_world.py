"""A fake board and a scripted world (payee + provider) for the wallet tests.

Runs on MicroPython and CPython. The world speaks frames: world.from_wallet(frame bytes)
returns the frames to give back to the wallet. The payee is a real PayeeSession; the
provider is a small simulation of host/amiko/node/provider.py's rules (MAC, counters,
balance, states, the payee's Receipt bound into every Auth). `tamper` hooks let a test play
the hostile terminal.

The payee signs its Receipt with a stand-in for secp256k1 (fake_sign: MicroPython has no
curve library; the wallet never verifies signatures, its provider does): the simulated
provider checks it with fake_verify. The real provider (host/amiko/node/provider.py) is
tested with real signatures in tests/wallet/test_vouch.py.
"""

import os

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.paylink import PayeeSession
from amiko_core.hashing import sha256
from amiko_core.token import transaction_id

KEY = bytes(range(1, 33))
WALLET = "w-test"
PROVIDER_URL = "amikolink://127.0.0.1:4000/w-test"
TOKEN = bytes([9]) * 32
TXID = transaction_id(TOKEN)
PAYEE_KEY = b"\x02" + bytes([7]) * 32
OTHER_PAYEE_KEY = b"\x03" + bytes([8]) * 32


def fake_sign(payee_key):
    def sign(data):
        return sha256(payee_key + data) + sha256(data + payee_key)

    return sign


def fake_verify(payee_key, data, sig):
    return sig == fake_sign(payee_key)(data)


class FakeSerial:
    def __init__(self):
        self.inbox = bytearray()
        self.sent = []

    def read_into(self, buf):
        n = min(len(buf), len(self.inbox))
        if n:
            buf[:n] = self.inbox[:n]
            self.inbox = self.inbox[n:]
        return n

    def write(self, data):
        self.sent.append(bytes(data))


class FakeDisplay:
    def __init__(self):
        self.lines = []

    def show(self, lines):
        self.lines = list(lines)


class FakeButtons:
    def __init__(self):
        self.events = []

    def poll(self):
        return self.events.pop(0) if self.events else None


class FakeLed:
    def __init__(self):
        self.state = None

    def set(self, state):
        self.state = state


class FakeBoard:
    def __init__(self, root, display=True, buttons=True):
        self.serial = FakeSerial()
        self.transports = [self.serial]
        self.display = FakeDisplay() if display else None
        self.buttons = FakeButtons() if buttons else None
        self.led = FakeLed()
        self.storage_root = root
        self.ms = 1000
        self.info = {"id": "fake", "transports": ["usb_serial"]}

    def ticks_ms(self):
        return self.ms

    def sleep_ms(self, ms):
        self.ms += ms

    def random(self, n):
        return os.urandom(n)


def rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        os.remove(path + "/" + name)
    os.rmdir(path)


def provision_msg(limit=5000, daily=20000, auto=100, auto_count=5, auto_total=50000, auto_new=5):
    return m.Message(wl.PROVISION, wallet=WALLET, key=KEY, provider=PROVIDER_URL, limit=limit, daily=daily, auto=auto,
                     auto_count=auto_count, auto_total=auto_total, auto_new=auto_new)


class Provider:
    """Provider rules: MAC, strictly increasing counter, balance with holds, idempotent actions."""

    def __init__(self, balance=10000, time=1764000000):
        self.balance = balance
        self.counter = 0  # last wallet counter accepted
        self.pcounter = 0
        self.time = time
        self.pays = {}  # txid -> dict(state, amount, mp, token)
        self.refusals = []
        self.routed = True  # the network finds a route
        self.world = None

    def handle(self, msg):
        if msg.wallet != WALLET or not wl.verify(KEY, msg):
            self.refusals.append("mac")
            return None
        if msg.counter <= self.counter:
            self.refusals.append("counter")
            return None
        self.counter = msg.counter
        p = self.pays.get(msg.txid)
        if p is not None and (p["amount"] != msg.amount or p["mp"] != msg.meeting_point):
            return self._status(msg, wl.REFUSED, "authorisation differs from the route")
        if p is not None and (p["payee_key"] != msg.payee_key or p["rhash"] != msg.receipt_hash):
            return self._status(msg, wl.REFUSED, "authorisation differs from the route")
        a = msg.action
        if a == wl.ROUTE:
            if p is None:
                problem = self.receipt_problem(msg)
                if problem:
                    self.refusals.append(problem)
                    return self._status(msg, wl.REFUSED, problem)
                if msg.amount > self.available():
                    return self._status(msg, wl.REFUSED, "balance too low")
                p = {"state": wl.ROUTED if self.routed else wl.CANCELLED, "amount": msg.amount,
                     "mp": msg.meeting_point, "token": None, "payee_key": msg.payee_key,
                     "rhash": msg.receipt_hash, "confirm": msg.confirm}
                self.pays[msg.txid] = p
        elif p is None:
            return self._status(msg, wl.CANCELLED, "no such payment")
        elif a == wl.LOCK:
            if p["state"] == wl.ROUTED:
                p["state"] = wl.LOCKED
                if self.world is not None:
                    self.world.on_locked()
        elif a == wl.CANCEL:
            if p["state"] in (wl.ROUTING, wl.ROUTED):
                p["state"] = wl.CANCELLED
        elif a == wl.COMMIT:
            self.settle(msg.txid, msg.token)
        return self._status(msg, p["state"], None)

    def receipt_problem(self, msg):
        if msg.receipt is None:
            return "no receipt"
        r = m.decode(m.RECEIPT, msg.receipt)
        if wl.receipt_hash(r) != msg.receipt_hash:
            return "receipt hash does not match"
        if r.payee_key != msg.payee_key or r.txid != msg.txid or r.amount != msg.amount:
            return "receipt is for another payment"
        if not fake_verify(r.payee_key, m.receipt_signed_bytes(r), r.signature):
            return "receipt signature does not verify"
        return None

    def settle(self, txid, token):
        p = self.pays[txid]
        if p["state"] == wl.LOCKED and transaction_id(token) == txid:
            p["state"] = wl.COMMITTED
            p["token"] = token
            self.balance -= p["amount"]

    def available(self):
        held = 0
        for p in self.pays.values():
            if p["state"] in (wl.ROUTING, wl.ROUTED, wl.LOCKED):
                held += p["amount"]
        return self.balance - held

    def _status(self, msg, state, reason):
        self.pcounter += 1
        p = self.pays.get(msg.txid) or {}
        return wl.status(KEY, WALLET, self.pcounter, msg.counter, msg.txid, state, msg.amount,
                         msg.meeting_point, self.balance, self.time,
                         token=p.get("token") if state == wl.COMMITTED else None, reason=reason)


class World:
    def __init__(self, amount=500, receipt="coffee", mps=("mp-1",), provider=None, payee_routes=True,
                 release=True, token=TOKEN, payment_id="pay-1", settle=True, payee_key=PAYEE_KEY,
                 payee_name="Corner cafe", sign=None):
        """sign: the payee's signing function (default fake_sign(payee_key); a forger's
        to make a bad signature); payee_key None: an unsigned Receipt."""
        self.provider = provider or Provider()
        self.provider.world = self
        if payee_key is not None and sign is None:
            sign = fake_sign(payee_key)
        self.payee = PayeeSession(payment_id, amount, receipt, token, list(mps), payee_key=payee_key, sign=sign,
                                  payee_name=payee_name)
        self.payee_routes = payee_routes
        self.release = release  # the payee sends Commit once locked
        self.settle = settle  # the network brings the token back to the provider at once
        self.to_wallet = []
        self.log = []  # (direction, Message)
        self.errors = []  # Error messages from the wallet
        self.done = []
        self.hello = []
        self.tamper_to_wallet = None  # fn(Message) -> Message | bytes | None
        self.tamper_from_wallet = None
        self.decoder = frame.FrameDecoder(4096)

    def _to_wallet(self, msg):
        if self.tamper_to_wallet is not None:
            msg = self.tamper_to_wallet(msg)
            if msg is None:
                return
        self.log.append(("in", msg))
        self.to_wallet.append(msg if isinstance(msg, bytes) else m.to_frame(msg))

    def _payee_effects(self, effects):
        for e in effects:
            if e.kind == "send":
                self._to_wallet(e.message)
            elif e.kind == "route" and self.payee_routes:
                self._payee_effects(self.payee.handle("route_found"))

    def on_locked(self):
        if self.payee.state == "waiting_lock":
            token = self.payee.token
            effects = self.payee.handle("locked")
            if self.release:
                self._payee_effects(effects)
            if self.settle:
                self.provider.settle(self.payee.txid, token)

    def from_wallet(self, data):
        """Feed bytes the wallet wrote; returns nothing (answers pile up in to_wallet)."""
        for fr in self.decoder.feed(data):
            msg = m.from_frame(fr)
            if self.tamper_from_wallet is not None:
                msg = self.tamper_from_wallet(msg)
                if msg is None:
                    continue
            self.log.append(("out", msg))
            if msg.type in (m.PAY, m.CONFIRM, m.CANCEL):
                try:
                    self._payee_effects(self.payee.receive(msg))
                except Exception as e:  # the payee refuses: as a node would, it says nothing
                    self.errors.append(("payee", str(e)))
            elif msg.type == wl.AUTH:
                st = self.provider.handle(msg)
                if st is not None:
                    self._to_wallet(st)
            elif msg.type == wl.REFUSED_MSG:
                self.errors.append(msg.reason)
            elif msg.type == wl.DONE:
                self.done.append(msg)
            elif msg.type == wl.HELLO:
                self.hello.append(msg)

    def take(self):
        out = self.to_wallet
        self.to_wallet = []
        return out
