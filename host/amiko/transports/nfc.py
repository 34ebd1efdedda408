"""NFC transport: nfcpy as the reader, the wallet as an ISO-DEP card (firmware/board/nfc_card.py).

Specs (open_transport):
    nfc:usb                 the first USB reader nfcpy supports (PN533, RC-S380, ACR122U...)
    nfc:usb:054c:06c3       a USB reader by vendor:product (here Sony RC-S380)
    nfc:tty:USB0:pn532      a PN532 on a serial port (/dev/ttyUSB0)
    nfc:udp:HOST:PORT       nfcpy's simulated RF link (the virtual board's simulated PN532)
The part after "nfc:" is nfcpy's device path.

One Reader per device path, a thread that owns the ContactlessFrontend and re-arms by itself:
    sense ISO 14443-A -> activate (RATS) -> SELECT AMIKO_AID -> contact: EXCHANGE until the card
    leaves -> RF off -> sense again.
A target that is not ISO-DEP, or that answers the SELECT with anything but 9000, is "not a
wallet": counted, left alone (presence checks with the field on) until it leaves the field,
never selected again meanwhile. Any exchange error (time-out after nfcpy's ISO-DEP retries, protocol
error, a status word other than 9000/61xx) ends the contact: the card "left".
Two cards in the field: the reader's anticollision selects one; a contact is bound to that
card's UID, and a different UID is always a new contact (no bytes of one card reach the other).

Contact traffic: the terminal's bytes go out in extended-length EXCHANGE APDUs (80 E0 P1 00 00
Lc1 Lc2 data 00 00) of at most CHUNK bytes, P1 bit 0 set on all but the last block of a message
(ISO-DEP chains each APDU over the air, the PN532 hands it to the card's firmware in parts);
the answer carries up to the card's MAX_ANSWER bytes, the rest is fetched with GET RESPONSE
(00 C0 00 00 00 00 00) while the card says 61xx. A poll is 80 E0 00 00 00 00 00.
Everything written while the reader was busy goes out as one message. The card answers the
last block of a message once the wallet has handled it (the chip asks for waiting time
meanwhile), so that answer is the wallet's reply: no poll is needed to fetch it. With nothing
to send the reader polls with an empty EXCHANGE after IDLE_POLL seconds of quiet (the wallet
speaking on its own: a button press, a retry).
Frames that the wallet answers nothing to by themselves during a payment (the provider's
Status routing / locked, the first of HavePayeeRoute and Status routed: see WalletBound) wait
up to COALESCE seconds for the next frame, so that they share its EXCHANGE.

NfcTransport (what open_transport returns) is one contact, like a plugged serial port: it
binds to the card in the field (or the next one to arrive); read() returns its bytes, b""
once that card left; write() queues bytes (sent as soon as the card is there); close()
detaches. The next open_transport() gets the next contact (or the same card, if it stayed).
"""

import asyncio
import logging
import threading
import time

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.errors import DecodeError

log = logging.getLogger("amiko.nfc")

AMIKO_AID = wl.NFC_AID
CHUNK = 1024  # bytes of a message per EXCHANGE (the card takes up to 4096 per message)
IDLE_POLL = 0.5  # longer than the network's gaps within a payment: a poll finds nothing there
COALESCE = 0.3
SENSE_INTERVAL = 0.02
SENS_RES_WAIT = 0.03  # udp link: how long a poll waits for a card's SENS_RES (nfcpy's udp driver waits 1 s)
GONE_CHECKS = 2  # senses without that UID before a non-wallet card counts as gone


class ContactLost(Exception):
    pass


class WalletBound:
    """Says which frames for the wallet may wait for the next one: during a payment (after a Tap
    with a URL), the provider's Status routing and locked (the wallet answers them nothing; the
    next Status or the payee's Commit follows), and the first of the two route halves
    (HavePayeeRoute, Status routed: the wallet locks once it has both). Anything else, and any
    frame of a contact without a payment, goes at once."""

    def __init__(self):
        self.decoder = frame.FrameDecoder(4096)
        self.paying = False
        self.halves = set()  # (txid, "payee" | "provider") sent so far

    def can_wait(self, data):
        frames = self.decoder.feed(data)
        waits = bool(frames)
        for fr in frames:
            if not self._can_wait(fr):
                waits = False
        return waits

    def _half(self, txid, side, other):
        if (txid, other) in self.halves:
            return False
        self.halves.add((txid, side))
        return True

    def _can_wait(self, fr):
        try:
            msg = m.from_frame(fr)
        except DecodeError:
            return False
        if msg.type == wl.TAP:
            self.paying = msg.url is not None
            return False
        if not self.paying:
            return False
        if msg.type == wl.STATUS:
            if msg.state in (wl.ROUTING, wl.LOCKED):
                return True
            return msg.state == wl.ROUTED and self._half(msg.txid, "provider", "payee")
        if msg.type == m.HAVE_PAYEE_ROUTE:
            return self._half(msg.txid, "payee", "provider")
        return False


class Contact:
    """One card, from SELECT until it leaves. Thread-safe queues both ways; stats: its APDUs,
    bytes_out (C-APDU bytes to the card) and bytes_in (R-APDU bytes from it), SELECT included."""

    def __init__(self, uid):
        self.uid = uid
        self.cond = threading.Condition()
        self.inbound = bytearray()
        self.outbound = []  # (bytes of one write(), monotonic time it must go by)
        self.bound = WalletBound()
        self.gone = False
        self.listeners = []  # callables run (from the reader thread) when bytes arrive or it ends
        self.stats = {"apdus": 0, "bytes_out": 0, "bytes_in": 0}

    def _notify(self):
        for fn in list(self.listeners):
            fn()
        self.cond.notify_all()

    def deliver(self, data):
        with self.cond:
            self.inbound.extend(data)
            self._notify()

    def end(self):
        with self.cond:
            self.gone = True
            self._notify()

    def take(self):
        with self.cond:
            data = bytes(self.inbound)
            self.inbound.clear()
            return data

    def send(self, data):
        with self.cond:
            now = time.monotonic()
            self.outbound.append((bytes(data), now + COALESCE if self.bound.can_wait(data) else now))
            self.cond.notify_all()

    def next_message(self, timeout):
        """Everything queued, as one message, once something is due; after `timeout` of quiet
        whatever is queued (b"": a poll)."""
        with self.cond:
            end = time.monotonic() + timeout
            while True:
                now = time.monotonic()
                due = min([t for _, t in self.outbound] + [end])
                if due <= now:
                    data = b"".join(d for d, _ in self.outbound)
                    self.outbound = []
                    return data
                self.cond.wait(due - now)


def sw_of(rapdu):
    return bytes(rapdu[-2:]) if len(rapdu) >= 2 else b""


def exchange_message(transceive, msg):
    """Send msg (b"" = poll) in EXCHANGE blocks and return every byte the card had to send.
    transceive(apdu) -> R-APDU with SW. Raises ContactLost on any status word but 9000/61xx."""
    blocks = [msg[i:i + CHUNK] for i in range(0, len(msg), CHUNK)] or [b""]
    out = bytearray()
    r = b""
    for i, block in enumerate(blocks):
        more = i < len(blocks) - 1
        apdu = bytes([0x80, 0xE0, 0x01 if more else 0x00, 0x00, 0x00])
        apdu += (bytes([len(block) >> 8, len(block) & 0xFF]) + block if block else b"") + b"\x00\x00"
        r = bytes(transceive(apdu))
        sw = sw_of(r)
        if more:
            if sw != b"\x90\x00" or len(r) != 2:
                raise ContactLost("EXCHANGE chaining answered %s" % sw.hex())
    while True:
        sw = sw_of(r)
        if sw == b"\x90\x00" or sw[:1] == b"\x61":
            out.extend(r[:-2])
        else:
            raise ContactLost("EXCHANGE answered %s" % (sw.hex() or "nothing"))
        if sw[:1] != b"\x61":
            return bytes(out)
        r = bytes(transceive(b"\x00\xc0\x00\x00\x00\x00\x00"))


def select_apdu(aid=AMIKO_AID):
    return bytes([0x00, 0xA4, 0x04, 0x00, len(aid)]) + aid + b"\x00"


def _short_polls(device):
    """On nfcpy's udp link, a poll (SENS_REQ) that no card answers waits SENS_RES_WAIT instead of
    the driver's 1 s: a card entering the field during that second was only found at the next
    poll, which made the arrival about 1 s. A real reader's poll times out in about a millisecond
    (ISO 14443-3: FDT of a few hundred us); the rest of the anticollision keeps the driver's waits."""
    from nfc.clf import udp

    if not isinstance(device, udp.Device):
        return
    sense_tta, recv = device.sense_tta, device._recv_data
    first = []

    def short_recv(timeout, *brty):
        if first:
            first.pop()
            timeout = min(timeout, SENS_RES_WAIT)
        return recv(timeout, *brty)

    def short_sense(target):
        first[:] = [True]  # the SENS_REQ's answer is the first thing sense_tta waits for
        try:
            return sense_tta(target)
        finally:
            first.clear()

    device._recv_data, device.sense_tta = short_recv, short_sense


class Reader:
    """The reader thread of one nfcpy device path (shared by the transports of that path)."""

    _readers = {}
    _lock = threading.Lock()

    @classmethod
    def get(cls, path):
        with cls._lock:
            r = cls._readers.get(path)
            if r is None or not r.thread.is_alive():
                r = cls._readers[path] = cls(path)
            return r

    def __init__(self, path):
        import nfc

        self.path = path
        self.clf = nfc.ContactlessFrontend()
        try:
            ok = self.clf.open(path)
        except IOError as e:
            raise OSError("nfc: cannot open reader %r: %s" % (path, e)) from None
        if not ok:
            raise OSError("nfc: no reader at %r" % path)
        _short_polls(self.clf.device)
        self.cond = threading.Condition()
        self.contact = None
        self.stopping = False
        self.failed = None
        self.stats = {"contacts": 0, "left": 0, "not_wallet": 0, "apdus": 0, "seen": 0, "bytes_out": 0,
                      "bytes_in": 0}
        self.thread = threading.Thread(target=self._run, name="nfc-reader %s" % path, daemon=True)
        self.thread.start()

    def close(self, wait=5.0):
        """Stop the reader thread; it closes the device itself when its exchange in flight ends."""
        self.stopping = True
        with self.cond:
            self.cond.notify_all()
        self.thread.join(wait)

    # ---- the reader thread ----
    def _sense(self):
        import nfc.clf

        try:
            t = self.clf.sense(nfc.clf.RemoteTarget("106A"), iterations=1, interval=SENSE_INTERVAL)
        except nfc.clf.CommunicationError:
            return None
        if t is not None:
            self.stats["seen"] += 1
        return t

    def _run(self):
        try:
            self._loop()
        except Exception as e:  # the reader itself failed (unplugged: IOError ENODEV...): transports see OSError
            log.warning("nfc: reader %s failed: %s", self.path, e)
            self.failed = "%s" % (e,)
        finally:
            self.stopping = True
            with self.cond:
                self.cond.notify_all()

    def _loop(self):
        while not self.stopping:
            target = self._sense()
            if target is None:
                time.sleep(SENSE_INTERVAL)
                continue
            uid = bytes(target.sdd_res or b"")
            try:
                self._contact(target, uid)
            except Exception as e:  # any reader error ends this contact; the loop re-arms
                log.info("nfc: contact with %s ended: %s", uid.hex(), e)
            finally:
                try:
                    self.clf.device.mute()  # RF off: the card resets its ISO-DEP state
                except Exception:
                    pass
        try:
            self.clf.close()
        except Exception:  # nfcpy's device close may fail on an unplugged reader
            pass

    def _contact(self, target, uid):
        import nfc.tag

        tag = nfc.tag.activate(self.clf, target) if (target.sel_res and target.sel_res[0] & 0x20) else None
        if tag is None or not hasattr(tag, "transceive"):
            self._not_wallet(uid, tag, "not ISO-DEP")
            return
        select = select_apdu()
        r = bytes(tag.transceive(select))
        self._count(self.stats, select, r)
        if sw_of(r) != b"\x90\x00":
            self._not_wallet(uid, tag, "SELECT answered %s" % sw_of(r).hex())
            return
        contact = Contact(uid)
        self._count(contact.stats, select, r)
        self.stats["contacts"] += 1
        with self.cond:
            self.contact = contact
            self.cond.notify_all()
        log.info("nfc: wallet %s in the field", uid.hex())

        def transceive(apdu):
            r = bytes(tag.transceive(apdu))
            self._count(contact.stats, apdu, r)
            self._count(self.stats, apdu, r)
            return r

        try:
            while not self.stopping:
                msg = contact.next_message(IDLE_POLL)
                data = exchange_message(transceive, msg)
                if data:
                    contact.deliver(data)
        finally:
            self.stats["left"] += 1
            with self.cond:
                if self.contact is contact:
                    self.contact = None
            contact.end()

    @staticmethod
    def _count(stats, apdu, rapdu):
        for key, n in (("apdus", 1), ("bytes_out", len(apdu)), ("bytes_in", len(rapdu))):
            stats[key] = stats.get(key, 0) + n

    def _not_wallet(self, uid, tag, why):
        """Leave a card that is not a wallet alone until it leaves the field: presence checks with
        the field on (an ISO-DEP R(NAK) for type 4, a read for others), so it is neither powered
        down nor selected again; without an activated tag, until its UID stops answering."""
        self.stats["not_wallet"] += 1
        log.info("nfc: card %s is not a wallet (%s)", uid.hex(), why)
        misses = 0
        while misses < GONE_CHECKS and not self.stopping:
            time.sleep(SENSE_INTERVAL)
            if tag is not None:
                try:
                    present = tag.is_present
                except Exception:  # nfcpy raises from some tag types' presence check
                    present = False
                if present:
                    self.stats["seen"] += 1
                    continue
                return
            try:
                self.clf.device.mute()
            except Exception:
                pass
            t = self._sense()
            misses = misses + 1 if t is None or bytes(t.sdd_res or b"") != uid else 0

    def wait_contact(self, timeout=None):
        with self.cond:
            self.cond.wait_for(lambda: self.contact is not None or self.stopping, timeout)
            return self.contact


class NfcTransport:
    def __init__(self, reader):
        self.reader = reader
        self.contact = None
        self.pending = []
        self.closed = False
        self._wake = None
        self._loop = None
        self._lock = threading.Lock()
        self._binder = None

    @classmethod
    def from_spec(cls, spec):
        path = spec[len("nfc:"):]
        if not path:
            raise ValueError("nfc transport needs a device path: nfc:usb, nfc:udp:HOST:PORT ...")
        return cls(Reader.get(path))

    def _bind(self, timeout):
        if self.contact is None:
            c = self.reader.wait_contact(timeout)
            if c is not None and not c.gone:
                with self._lock:
                    self.contact = c
                    c.listeners.append(self._poke)
                    for msg in self.pending:
                        c.send(msg)
                    self.pending = []
        return self.contact

    @property
    def present(self):
        """A wallet is in the field: this transport's contact, or the reader's next one."""
        c = self.contact if self.contact is not None else self.reader.contact
        return c is not None and not c.gone

    def _poke(self):
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def read(self):
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not self.closed:
            if self.contact is None:
                if self.reader.stopping:
                    raise OSError("nfc: reader %s gone: %s" % (self.reader.path, self.reader.failed or "closed"))
                await self._loop.run_in_executor(None, self._bind, 0.2)
                continue
            data = self.contact.take()
            if data:
                return data
            if self.contact.gone:
                return b""
            self._wake.clear()
            data = self.contact.take()
            if data:
                return data
            if self.contact.gone:
                return b""
            try:
                await asyncio.wait_for(self._wake.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return b""

    def read_blocking(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self._bind(max(0.0, deadline - time.monotonic()))
            if c is None:
                if self.reader.stopping:
                    raise OSError("nfc: reader %s gone: %s" % (self.reader.path, self.reader.failed or "closed"))
                continue
            data = c.take()
            if data or c.gone:
                return data
            with c.cond:
                c.cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        return b""

    def write(self, data):
        with self._lock:
            if self.contact is None:
                self.pending.append(bytes(data))
                return
        if self.contact.gone:
            raise OSError("nfc: the wallet left the field")
        self.contact.send(data)

    def close(self):
        self.closed = True
        if self._wake is not None and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass
        if self.contact is not None:
            try:
                self.contact.listeners.remove(self._poke)
            except ValueError:
                pass
