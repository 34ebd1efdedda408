"""Bluetooth LE transport: the wallet as a GATT peripheral (MicroPython `bluetooth`, ESP32 / Pico W).

GATT layout (the contract with the terminal, host/amiko/transports/ble.py):
    service   AMIKO_SERVICE_UUID       advertised (128-bit UUID and the name as far as it fits
                                       in the advertising data, the full name in the scan
                                       response; names of up to 8 bytes fit whole)
    RX        AMIKO_RX_UUID            write / write without response, encrypted + authenticated
                                       (see Pairing below): terminal -> wallet
    TX        AMIKO_TX_UUID            notify: wallet -> terminal (only on a trusted link)

Framing: there is no chunk header. Each direction carries the raw byte stream of amiko frames
(amiko_core.frame: magic, CRC-checked header with the length, body, CRC); a GATT write or a
notification is just the next piece of that stream, at most ATT_MTU - 3 bytes. The receiver
appends pieces in order and feeds them to its FrameDecoder, which finds frame boundaries by
itself and resynchronises on the next magic after garbage or a lost piece. ATT over one
connection is ordered and reliable, so pieces only go missing when a link drops; then the
half-received frame is discarded by the CRC and the wallet's own protocol finishes the payment
at the next contact.

Receive buffer: writes land in a ring (RxBuffer) that the app drains with read_into(). A write
that does not fit (a terminal ignoring flow, or a write larger than RX_CAPACITY) is refused
whole: nothing already buffered is lost or reordered, the write is counted in
`dropped_writes` and described in `last_error` (e.g. "ble: write of 600 bytes refused: 100
of 4608 bytes free"). The decoder then sees a gap and reports a bad frame, as for garbage.

Pairing and bonding (the contract with the terminal): the wallet's characteristics need an
encrypted link whose key is authenticated (MITM-protected, LE Secure Connections) and bonded.
ble.config(bond=True, le_secure=True, mitm=True, io=DISPLAY_YESNO) on a board with a display
and a confirm button (numeric comparison: the display shows the 6 digits the terminal shows
too, the confirm button accepts, cancel rejects), io=DISPLAY_ONLY on a board with a display
but no buttons (the display shows the passkey, the terminal's operator types it). A central
that cannot do either (just works) gets no bond: the stack refuses the pairing. The RX
characteristic is also flagged write-encrypted + write-authenticated, so the stack itself
refuses writes on a plain link; on top of that the firmware checks every write: a write on a
link that is not encrypted with a bonded, authenticated key is ignored and the link dropped
(counted in `refused_links`, described in `last_error`, logged), and so is a link that does
not reach that state within `pair_timeout_ms` of connecting, or whose encryption update says
it is not authenticated or not bonded (a port whose stack completes a just-works pairing
despite mitm=True still gets no trusted link). MicroPython's API has no callback for a
just-works confirmation and no per-characteristic check of "bonded", hence these checks. Bonds (the stack's secrets,
_IRQ_GET_SECRET / _IRQ_SET_SECRET) are kept in the wallet's power-cut-safe storage
(wallet/storage.py, record "ble_bonds", at most MAX_SECRETS entries, the oldest dropped
first), so a bonded terminal reconnects after a reboot without pairing again.

Also importable on CPython (the unit tests use RxBuffer and chunks); `bluetooth` is imported
only when a BLETransport is built.
"""

import time

from amiko_core.walletlink import RX_UUID as AMIKO_RX_UUID
from amiko_core.walletlink import SERVICE_UUID as AMIKO_SERVICE_UUID
from amiko_core.walletlink import TX_UUID as AMIKO_TX_UUID

RX_CAPACITY = 4608  # one MAX_FRAME (4096) plus room for the next pieces
ATT_MAX_VALUE = 512  # the largest attribute value ATT allows: what the RX characteristic holds
DEFAULT_MTU = 23
WANTED_MTU = 247

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_MTU_EXCHANGED = 21
_IRQ_ENCRYPTION_UPDATE = 28
_IRQ_GET_SECRET = 29
_IRQ_SET_SECRET = 30
_IRQ_PASSKEY_ACTION = 31

_PASSKEY_ACTION_DISPLAY = 3
_PASSKEY_ACTION_NUMERIC_COMPARISON = 4

_IO_DISPLAY_ONLY = 0
_IO_DISPLAY_YESNO = 1
_IO_NO_INPUT_OUTPUT = 3

MAX_SECRETS = 6  # bond entries kept (each a few hundred bytes at most: one storage record)
PAIR_TIMEOUT_MS = 60000  # a link must be paired (or re-encrypted with its bond) by then

_FLAG_WRITE_NO_RESPONSE = 0x0004
_FLAG_WRITE = 0x0008
_FLAG_NOTIFY = 0x0010
_FLAG_WRITE_ENCRYPTED = 0x1000
_FLAG_WRITE_AUTHENTICATED = 0x2000

_ADV_TYPE_FLAGS = 0x01
_ADV_TYPE_SHORT_NAME = 0x08
_ADV_TYPE_NAME = 0x09
_ADV_TYPE_UUID128_COMPLETE = 0x07


class RxBuffer:
    """Byte ring filled by GATT writes (IRQ side), drained by read_into (app side)."""

    def __init__(self, capacity=RX_CAPACITY):
        self.buf = bytearray(capacity)
        self.capacity = capacity
        self.start = 0
        self.size = 0
        self.dropped_writes = 0
        self.last_error = None

    def free(self):
        return self.capacity - self.size

    def put(self, data):
        """Append one write whole, or refuse it whole (False, last_error says why)."""
        n = len(data)
        if n > self.capacity - self.size:
            self.dropped_writes += 1
            self.last_error = "ble: write of %d bytes refused: %d of %d bytes free" % (
                n, self.capacity - self.size, self.capacity)
            return False
        end = (self.start + self.size) % self.capacity
        first = min(n, self.capacity - end)
        self.buf[end:end + first] = data[:first]
        if first < n:
            self.buf[0:n - first] = data[first:]
        self.size += n
        return True

    def read_into(self, out):
        n = min(len(out), self.size)
        first = min(n, self.capacity - self.start)
        out[0:first] = self.buf[self.start:self.start + first]
        if first < n:
            out[first:n] = self.buf[0:n - first]
        self.start = (self.start + n) % self.capacity
        self.size -= n
        return n

    def clear(self):
        self.start = 0
        self.size = 0


def _random(n):
    import os

    return os.urandom(n)


def chunks(data, size):
    """The pieces of `data` of at most `size` bytes, as memoryview slices (no copies)."""
    if size < 1:
        raise ValueError("ble: chunk size must be at least 1, got %d" % size)
    mv = memoryview(data)
    return [mv[i:i + size] for i in range(0, len(data), size)]


def _uuid128_le(uuid_str):
    import binascii

    raw = binascii.unhexlify(uuid_str.replace("-", ""))
    return bytes(reversed(raw))


def advertising_payload(service_uuid, name=""):
    """Flags, the 128-bit service UUID, and the name as far as it fits in 31 bytes (complete,
    else shortened): scanners that do not ask for the scan response still see it (bumble's
    virtual controller answers scan requests with the advertising data)."""
    flags = bytes((2, _ADV_TYPE_FLAGS, 0x06))  # LE general discoverable, BR/EDR not supported
    u = _uuid128_le(service_uuid)
    adv = flags + bytes((len(u) + 1, _ADV_TYPE_UUID128_COMPLETE)) + u
    room = 31 - len(adv) - 2
    n = name.encode()
    if room > 0 and n:
        kind = _ADV_TYPE_NAME if len(n) <= room else _ADV_TYPE_SHORT_NAME
        n = n[:room]
        adv += bytes((len(n) + 1, kind)) + n
    return adv


def scan_response(name):
    n = name.encode()[:29]
    return bytes((len(n) + 1, _ADV_TYPE_NAME)) + n


class BondStore:
    """The BLE stack's secrets (sec_type, key) -> value in one power-cut-safe storage record."""

    RECORD = "ble_bonds"

    def __init__(self, storage):
        self.storage = storage
        self.entries = [list(e) for e in (storage.load(self.RECORD) or [])] if storage is not None else []

    def get(self, sec_type, index, key):
        if key is None:
            found = [e for e in self.entries if e[0] == sec_type]
            return found[index][2] if 0 <= index < len(found) else None
        key = bytes(key)
        for e in self.entries:
            if e[0] == sec_type and e[1] == key:
                return e[2]
        return None

    def set(self, sec_type, key, value):
        key = bytes(key)
        kept = [e for e in self.entries if not (e[0] == sec_type and e[1] == key)]
        if value is not None:
            kept.append([sec_type, key, bytes(value)])
        self.entries = kept[-MAX_SECRETS:]
        if self.storage is not None:
            self.storage.save(self.RECORD, self.entries)
        return True


class BLETransport:
    """The wallet's BLE port: read_into(buf) -> n (non-blocking), write(data) (notifications)."""

    name = "ble"

    def __init__(self, gap_name, interval_us=250000, rx_capacity=RX_CAPACITY, display=None, buttons=None,
                 storage=None, pair_timeout_ms=PAIR_TIMEOUT_MS, log=None):
        import bluetooth

        self.bluetooth = bluetooth
        self.gap_name = gap_name
        self.interval_us = interval_us
        self.rx = RxBuffer(rx_capacity)
        self.conn = None
        self.mtu = DEFAULT_MTU
        self.encrypted = False
        self.trusted = False  # encrypted with a bonded, authenticated key
        self.dropped_notifies = 0
        self.refused_links = 0
        self.pair_error = None
        self.display = display
        self.buttons = buttons
        self.bonds = BondStore(storage)
        self.pair_timeout_ms = pair_timeout_ms
        self.log = log
        self.connected_at = None
        self.prompt = None  # (conn, action, passkey) waiting for the customer
        self.to_drop = None  # a connection the IRQ decided to drop (dropped from read_into)
        ble = bluetooth.BLE()
        self.ble = ble
        ble.active(True)
        for key, value in (("gap_name", gap_name), ("mtu", WANTED_MTU)):
            try:
                ble.config(**{key: value})
            except (ValueError, OSError):
                pass
        if display is not None and buttons is not None:
            io = _IO_DISPLAY_YESNO
        elif display is not None:
            io = _IO_DISPLAY_ONLY
        else:  # nothing to compare a number on: no pairing can be MITM-protected, so none succeeds
            io = _IO_NO_INPUT_OUTPUT
        # pairing: LE Secure Connections, MITM-protected, bonded (see the module docstring); a
        # port whose stack cannot do it raises here: then no central is ever trusted
        ble.config(bond=True, le_secure=True, mitm=True, io=io)
        ble.irq(self._irq)
        rx = (bluetooth.UUID(AMIKO_RX_UUID),
              _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE | _FLAG_WRITE_ENCRYPTED | _FLAG_WRITE_AUTHENTICATED)
        tx = (bluetooth.UUID(AMIKO_TX_UUID), _FLAG_NOTIFY)
        ((self.rx_handle, self.tx_handle),) = ble.gatts_register_services(
            ((bluetooth.UUID(AMIKO_SERVICE_UUID), (rx, tx)),))
        # the default attribute buffer is 20 bytes: longer writes would be cut silently
        ble.gatts_set_buffer(self.rx_handle, ATT_MAX_VALUE)
        self._adv = advertising_payload(AMIKO_SERVICE_UUID, gap_name)
        self._resp = scan_response(gap_name)
        self._advertise()

    @property
    def dropped_writes(self):
        return self.rx.dropped_writes

    @property
    def last_error(self):
        return self.rx.last_error

    def _advertise(self):
        self.ble.gap_advertise(self.interval_us, adv_data=self._adv, resp_data=self._resp)

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            if self.conn is None:
                self.conn = data[0]
                self.mtu = DEFAULT_MTU
                self.encrypted = False
                self.trusted = False
                self.prompt = None
                self.connected_at = time.ticks_ms()
            else:  # one terminal at a time
                self.ble.gap_disconnect(data[0])
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.conn = None
                self.trusted = False
                self.encrypted = False
                if self.prompt is not None:
                    self.prompt = None
                    self._show_pairing(None)
                self.rx.clear()  # a half-received frame from the old link must not prefix the next one
                self._advertise()
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            if conn == self.conn and handle == self.rx_handle:
                value = self.ble.gatts_read(handle)
                if self.trusted:
                    self.rx.put(value)
                else:
                    self._refuse(conn, "ble: write of %d bytes on a link without a bonded, authenticated key "
                                 "ignored; link dropped" % len(value))
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self.conn:
                self.mtu = data[1]
        elif event == _IRQ_ENCRYPTION_UPDATE:
            conn, encrypted, authenticated, bonded = data[0], bool(data[1]), bool(data[2]), bool(data[3])
            if conn == self.conn:
                self.encrypted = encrypted
                self.trusted = encrypted and authenticated and bonded
                if self.prompt is not None:
                    self.prompt = None
                    self._show_pairing(None)
                if self.trusted:
                    self.pair_error = None
                    if self.log is not None:
                        self.log("ble: link trusted (encrypted with a bonded, authenticated key)")
                else:
                    self._refuse(conn, "ble: link %s (encrypted=%s authenticated=%s bonded=%s); dropped"
                                 % ("pairing failed" if not encrypted else "not trusted", encrypted,
                                    authenticated, bonded))
        elif event == _IRQ_PASSKEY_ACTION:
            conn, action, passkey = data
            if conn != self.conn:
                return
            if action == _PASSKEY_ACTION_NUMERIC_COMPARISON and self.buttons is not None:
                self.prompt = (conn, action, passkey)  # read_into shows it and waits for a press
            elif action == _PASSKEY_ACTION_DISPLAY and self.display is not None:
                passkey = int.from_bytes(_random(4), "big") % 1000000
                self.prompt = (conn, action, passkey)
                self.ble.gap_passkey(conn, action, passkey)
            else:  # the wallet cannot take part in this method (no keyboard): refuse
                self.ble.gap_passkey(conn, action, 0)
        elif event == _IRQ_GET_SECRET:
            sec_type, index, key = data
            return self.bonds.get(sec_type, index, key)
        elif event == _IRQ_SET_SECRET:
            sec_type, key, value = data
            return self.bonds.set(sec_type, key, value)

    def _refuse(self, conn, why):
        """Drop a link that must not carry wallet frames (from the IRQ: dropped in read_into)."""
        self.refused_links += 1
        self.pair_error = why
        self.rx.last_error = why
        self.to_drop = conn
        if self.log is not None:
            self.log(why)

    def _show_pairing(self, prompt):
        if self.display is None:
            return
        if prompt is None:
            self.display.show(["BLE pairing", "ended", "", ""])
        elif prompt[1] == _PASSKEY_ACTION_NUMERIC_COMPARISON:
            self.display.show(["BLE pairing", "%06d" % prompt[2], "confirm: pair", "cancel: refuse"])
        else:
            self.display.show(["BLE pairing", "passkey", "%06d" % prompt[2], "type it on terminal"])

    def _housekeeping(self):
        """Pairing prompt on the display and buttons, drops decided in the IRQ, the pairing deadline."""
        conn = self.to_drop
        if conn is not None:
            self.to_drop = None
            self.ble.gap_disconnect(conn)
        prompt = self.prompt
        if prompt is not None:
            if len(prompt) == 3:  # not shown yet
                self._show_pairing(prompt)
                prompt = self.prompt = prompt + (True,)
            if prompt[1] == _PASSKEY_ACTION_NUMERIC_COMPARISON:
                pressed = self.buttons.poll()
                if pressed in ("confirm", "cancel"):
                    self.prompt = None
                    self.ble.gap_passkey(prompt[0], prompt[1], 1 if pressed == "confirm" else 0)
                    self.display.show(["BLE pairing", "accepted" if pressed == "confirm" else "refused", "", ""])
        if (self.conn is not None and not self.trusted and self.connected_at is not None
                and time.ticks_diff(time.ticks_ms(), self.connected_at) > self.pair_timeout_ms):
            conn, self.connected_at = self.conn, None
            self._refuse(conn, "ble: link not paired within %d ms; dropped" % self.pair_timeout_ms)
            self.to_drop = None
            self.ble.gap_disconnect(conn)

    def read_into(self, buf):
        self._housekeeping()
        return self.rx.read_into(buf)

    def write(self, data):
        """Notify `data` in pieces of MTU - 3; dropped (counted) when no terminal is connected."""
        conn = self.conn
        if conn is None or not self.trusted:
            self.dropped_notifies += 1
            return
        for piece in chunks(data, self.mtu - 3):
            for _ in range(50):
                try:
                    self.ble.gatts_notify(conn, self.tx_handle, piece)
                    break
                except OSError:  # the stack's transmit buffers are full: let them drain
                    if self.conn != conn:
                        return
                    time.sleep_ms(10)
            else:
                self.dropped_notifies += 1
                return
