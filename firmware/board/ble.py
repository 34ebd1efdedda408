"""Bluetooth LE transport: the wallet as a GATT peripheral (MicroPython `bluetooth`, ESP32 / Pico W).

GATT layout (the contract with the terminal, host/amiko/transports/ble.py):
    service   AMIKO_SERVICE_UUID       advertised (128-bit UUID and the name as far as it fits
                                       in the advertising data, the full name in the scan
                                       response; names of up to 8 bytes fit whole)
    RX        AMIKO_RX_UUID            write / write without response: terminal -> wallet
    TX        AMIKO_TX_UUID            notify: wallet -> terminal

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

Pairing: where the port supports it (ESP32 NimBLE, Pico W BTstack) the peripheral asks for
LE Secure Connections "just works" without bonding (no display+keyboard pair to compare a
passkey; bonds would need key storage in flash): the link is encrypted, the wallet's own
HMAC-authenticated protocol (amiko_core.walletlink) is what makes the terminal untrusted.

Also importable on CPython (the unit tests use RxBuffer and chunks); `bluetooth` is imported
only when a BLETransport is built.
"""

import time

AMIKO_SERVICE_UUID = "6a4e0001-7c3b-4d6e-9a15-616d696b6f01"
AMIKO_RX_UUID = "6a4e0002-7c3b-4d6e-9a15-616d696b6f01"
AMIKO_TX_UUID = "6a4e0003-7c3b-4d6e-9a15-616d696b6f01"

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

_FLAG_WRITE_NO_RESPONSE = 0x0004
_FLAG_WRITE = 0x0008
_FLAG_NOTIFY = 0x0010

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


class BLETransport:
    """The wallet's BLE port: read_into(buf) -> n (non-blocking), write(data) (notifications)."""

    name = "ble"

    def __init__(self, gap_name, interval_us=250000, rx_capacity=RX_CAPACITY):
        import bluetooth

        self.bluetooth = bluetooth
        self.gap_name = gap_name
        self.interval_us = interval_us
        self.rx = RxBuffer(rx_capacity)
        self.conn = None
        self.mtu = DEFAULT_MTU
        self.encrypted = False
        self.dropped_notifies = 0
        ble = bluetooth.BLE()
        self.ble = ble
        ble.active(True)
        for key, value in (("gap_name", gap_name), ("mtu", WANTED_MTU)):
            try:
                ble.config(**{key: value})
            except (ValueError, OSError):
                pass
        try:  # pairing: LE Secure Connections, just works, no bonding (see the module docstring)
            ble.config(bond=False, le_secure=True, mitm=False, io=3)
        except (ValueError, OSError, TypeError):
            pass
        ble.irq(self._irq)
        rx = (bluetooth.UUID(AMIKO_RX_UUID), _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE)
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
            else:  # one terminal at a time
                self.ble.gap_disconnect(data[0])
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.conn = None
                self.rx.clear()  # a half-received frame from the old link must not prefix the next one
                self._advertise()
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            if conn == self.conn and handle == self.rx_handle:
                self.rx.put(self.ble.gatts_read(handle))
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self.conn:
                self.mtu = data[1]
        elif event == _IRQ_ENCRYPTION_UPDATE:
            if data[0] == self.conn:
                self.encrypted = bool(data[1])
        elif event == _IRQ_GET_SECRET:
            return None
        elif event == _IRQ_SET_SECRET:
            return False

    def read_into(self, buf):
        return self.rx.read_into(buf)

    def write(self, data):
        """Notify `data` in pieces of MTU - 3; dropped (counted) when no terminal is connected."""
        conn = self.conn
        if conn is None:
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
