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

Contact traffic: the terminal's bytes go out in EXCHANGE APDUs (80 E0 P1 00 Lc data 00) of at
most CHUNK bytes, P1 bit 0 set on all but the last block of a write; answers are appended to
what the card has to send, fetched with GET RESPONSE (00 C0 00 00 00) while the card says 61xx.
With nothing to send the reader polls with an empty EXCHANGE every POLL seconds.

NfcTransport (what open_transport returns) is one contact, like a plugged serial port: it
binds to the card in the field (or the next one to arrive); read() returns its bytes, b""
once that card left; write() queues bytes (sent as soon as the card is there); close()
detaches. The next open_transport() gets the next contact (or the same card, if it stayed).
"""

import asyncio
import logging
import threading
import time

from amiko_core import walletlink as wl

log = logging.getLogger("amiko.nfc")

AMIKO_AID = wl.NFC_AID
CHUNK = 240
POLL = 0.01
SENSE_INTERVAL = 0.02
SENS_RES_WAIT = 0.03  # udp link: how long a poll waits for a card's SENS_RES (nfcpy's udp driver waits 1 s)
GONE_CHECKS = 2  # senses without that UID before a non-wallet card counts as gone


class ContactLost(Exception):
    pass


class Contact:
    """One card, from SELECT until it leaves. Thread-safe queues both ways."""

    def __init__(self, uid):
        self.uid = uid
        self.cond = threading.Condition()
        self.inbound = bytearray()
        self.outbound = []  # messages (each one write()), sent whole
        self.gone = False
        self.listeners = []  # callables run (from the reader thread) when bytes arrive or it ends

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
            self.outbound.append(bytes(data))
            self.cond.notify_all()

    def next_message(self, timeout):
        with self.cond:
            if not self.outbound:
                self.cond.wait(timeout)
            return self.outbound.pop(0) if self.outbound else None


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
        apdu = bytes([0x80, 0xE0, 0x01 if more else 0x00, 0x00])
        apdu += (bytes([len(block)]) + block if block else b"") + b"\x00"
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
        r = bytes(transceive(b"\x00\xc0\x00\x00\x00"))


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
        self.stats = {"contacts": 0, "left": 0, "not_wallet": 0, "apdus": 0, "seen": 0}
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
        r = bytes(tag.transceive(select_apdu()))
        self.stats["apdus"] += 1
        if sw_of(r) != b"\x90\x00":
            self._not_wallet(uid, tag, "SELECT answered %s" % sw_of(r).hex())
            return
        contact = Contact(uid)
        self.stats["contacts"] += 1
        with self.cond:
            self.contact = contact
            self.cond.notify_all()
        log.info("nfc: wallet %s in the field", uid.hex())

        def transceive(apdu):
            self.stats["apdus"] += 1
            return tag.transceive(apdu)

        try:
            while not self.stopping:
                msg = contact.next_message(POLL)
                data = exchange_message(transceive, msg or b"")
                if data:
                    contact.deliver(data)
        finally:
            self.stats["left"] += 1
            with self.cond:
                if self.contact is contact:
                    self.contact = None
            contact.end()

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
