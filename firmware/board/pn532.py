"""PN532 driver: the chip's host-link frames and the target-mode commands the wallet card needs.

Frames (PN532 User Manual 6.2.1), both directions:
    information  00 00 FF LEN LCS TFI PD0..PDn DCS 00
                 LEN = len(TFI + PD), LCS = -LEN & 0xFF (LEN + LCS = 0 mod 256),
                 DCS = -(TFI + sum(PD)) & 0xFF; TFI D4 host -> chip, D5 chip -> host;
                 PD0 is the command code, the answer's is command + 1.
    extended     00 00 FF FF FF LENM LENL LCS TFI PD.. DCS 00   (LCS over LENM + LENL)
    ACK          00 00 FF 00 FF 00     (the chip accepted a command)
    NACK         00 00 FF FF 00 00     (host asks the chip to resend its last answer)
    error        00 00 FF 01 FF 7F 81 00  (the chip could not parse the host's frame)
The chip answers every command frame with ACK and, later, with the answer frame.

FrameDecoder.feed(bytes) -> list of ("ack", None) / ("nack", None) / ("error", None) /
("frame", (tfi, data)); garbage before a preamble is skipped and counted in `.dropped`;
a frame with a bad LCS or DCS or a missing postamble is dropped (counted in `.bad`), never
raised; LEN is bounded by MAX_DATA, so a hostile length never allocates more.

Commands used (User Manual 7.2.10, 7.3.14, 7.3.16, 7.3.18):
    SAMConfiguration 14 mode=01 (normal) timeout irq           -> 15
    TgInitAsTarget   8C mode Mifare(6) FeliCa(18) NFCID3t(10) LEN Gt LEN Tk -> 8D mode cmd..
                     mode 04 = PICC only: the chip answers anticollision and RATS itself
                     (SEL_RES bit 0x20: ISO/IEC 14443-4 compliant), the answer carries the RATS
    TgGetData        86                                         -> 87 status data..  (an APDU, or
                     a part of it with status bit MI: TgGetData again for the rest)
    TgSetData        8E data..                                  -> 8F status         (an R-APDU, or
                     its last part)
    TgSetMetaData    94 data..                                  -> 95 status         (a part of an
                     R-APDU, sent chained; TgSetData sends the last part)
status: 00 ok; bit 0x40 MI (more ISO-DEP chained data follows); 0x29 the initiator released
us (DESELECT), 0x01 time-out, 0x13/0x25 RF field gone or invalid state: all end the contact.

Bus classes (raw frame bytes in and out, non-blocking `read_into`):
    UARTBus(uart)        machine.UART (115200 8N1; the chip needs a wake-up 55 55 00..00 first)
    SPIBus(spi, cs)      DW 01 / SR 02 / DR 03 prefixes, LSB first (bits reversed in software
                         when the port has no firstbit=LSB), status byte bit 0 = ready
    I2CBus(i2c, addr)    address 0x24, each read starts with the ready byte (bit 0)
    FileBus(path|file)   a tty or pty as a file (the virtual board's simulated PN532: _vboard.pn532)

PN532 is non-blocking: send(cmd, params) writes the frame; poll() returns None until the
answer is there, then (cmd, data); ACK/NACK are consumed internally. The chip can have only
one command in flight.
"""

PREAMBLE = b"\x00\x00\xff"
ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
HOST_TFI = 0xD4
CHIP_TFI = 0xD5
MAX_DATA = 264  # TFI + command + status + 261 bytes: the chip's largest extended frame

SAM_CONFIGURATION = 0x14
TG_INIT_AS_TARGET = 0x8C
TG_GET_DATA = 0x86
TG_SET_DATA = 0x8E
TG_SET_META_DATA = 0x94
GET_FIRMWARE_VERSION = 0x02

MODE_PICC_ONLY = 0x04
STATUS_OK = 0x00
STATUS_MI = 0x40
STATUS_RELEASED = 0x29


def checksum(data, start=0):
    s = start
    for b in data:
        s += b
    return (-s) & 0xFF


def encode_frame(tfi, data):
    """One information frame (normal if TFI + data fit 255 bytes, extended up to MAX_DATA)."""
    n = len(data) + 1
    if n > MAX_DATA:
        raise ValueError("pn532: frame data of %d bytes exceeds %d" % (n, MAX_DATA))
    if n <= 255:
        head = bytes((0, 0, 0xFF, n, (-n) & 0xFF))
    else:
        head = bytes((0, 0, 0xFF, 0xFF, 0xFF, n >> 8, n & 0xFF, (-(n >> 8) - (n & 0xFF)) & 0xFF))
    out = bytearray(head)
    out.append(tfi)
    out.extend(data)
    out.append(checksum(data, tfi))
    out.append(0)
    return bytes(out)


class FrameDecoder:
    """Incremental decoder of the chip's frames (either direction); see the module docstring."""

    def __init__(self):
        self.buf = bytearray()
        self.dropped = 0
        self.bad = 0

    def feed(self, data):
        self.buf.extend(data)
        out = []
        while True:
            item = self._one()
            if item is None:
                return out
            if item != "bad":
                out.append(item)

    def _one(self):
        b = self.buf
        i = b.find(PREAMBLE)
        if i < 0:
            keep = 2 if len(b) >= 2 else len(b)
            self.dropped += len(b) - keep
            self.buf = b[len(b) - keep:]
            return None
        if i:
            self.dropped += i
            self.buf = b = b[i:]
        if len(b) < 5:
            return None
        ln, lcs = b[3], b[4]
        if ln == 0x00 and lcs == 0xFF:
            if len(b) < 6:
                return None
            self.buf = b[6:]
            return ("ack", None)
        if ln == 0xFF and lcs == 0x00:
            if len(b) < 6:
                return None
            self.buf = b[6:]
            return ("nack", None)
        if ln == 0xFF and lcs == 0xFF:  # extended frame
            if len(b) < 8:
                return None
            n = (b[5] << 8) | b[6]
            if (b[5] + b[6] + b[7]) & 0xFF or n < 1 or n > MAX_DATA:
                return self._bad(3)
            start = 8
        else:
            n = ln
            if (ln + lcs) & 0xFF or n < 1:
                return self._bad(3)
            start = 5
        end = start + n + 2
        if len(b) < end:
            return None
        body = b[start:start + n]
        if checksum(body) != b[start + n] or b[end - 1] != 0:
            return self._bad(3)
        self.buf = b[end:]
        if n == 1 and body[0] == 0x7F:
            return ("error", None)
        return ("frame", (body[0], bytes(body[1:])))

    def _bad(self, skip):
        self.bad += 1
        self.buf = self.buf[skip:]
        return "bad"


class FileBus:
    """A tty/pty opened as a file: the virtual board's UART to its simulated PN532."""

    def __init__(self, path_or_file):
        import select

        self.f = open(path_or_file, "r+b") if isinstance(path_or_file, str) else path_or_file
        self.poll = select.poll()
        self.poll.register(self.f, select.POLLIN)
        self.one = bytearray(1)

    def read_into(self, buf):
        n = 0
        while n < len(buf) and self.poll.poll(0):
            if self.f.readinto(self.one) != 1:
                break
            buf[n] = self.one[0]
            n += 1
        return n

    def write(self, data):
        self.f.write(data)  # unbuffered on MicroPython (flush() would fsync: EINVAL on a tty)


class UARTBus:
    def __init__(self, uart):
        self.uart = uart
        uart.write(b"\x55\x55" + bytes(14))  # HSU wake-up from power-down

    def read_into(self, buf):
        if not self.uart.any():
            return 0
        return self.uart.readinto(buf) or 0

    def write(self, data):
        self.uart.write(data)


def _reverse_bits(data):
    out = bytearray(len(data))
    for i, b in enumerate(data):
        r = 0
        for _ in range(8):
            r = (r << 1) | (b & 1)
            b >>= 1
        out[i] = r
    return out


class SPIBus:
    """SPI mode 0, LSB first. lsb=True if the SPI object was built with firstbit=SPI.LSB."""
    DW, SR, DR = 0x01, 0x02, 0x03

    def __init__(self, spi, cs, lsb=False):
        self.spi, self.cs, self.lsb = spi, cs, lsb
        cs.value(1)

    def _x(self, data):
        return data if self.lsb else _reverse_bits(data)

    def _ready(self):
        self.cs.value(0)
        try:
            self.spi.write(self._x(bytes((self.SR,))))
            status = self._x(self.spi.read(1))[0]
        finally:
            self.cs.value(1)
        return status & 1

    def read_into(self, buf):
        """One whole frame per chip-select (the chip restarts its answer on the next DR)."""
        if not self._ready():
            return 0
        self.cs.value(0)
        try:
            self.spi.write(self._x(bytes((self.DR,))))
            data = bytearray(self._x(self.spi.read(5)))
            if data[3] in (0x00, 0xFF) and (data[3] + data[4]) & 0xFF == 0xFF:
                data.extend(self._x(self.spi.read(1)))  # ACK / NACK: 6 bytes
            elif data[3] == 0xFF and data[4] == 0xFF:  # extended: LENM LENL LCS, then TFI..DCS 00
                data.extend(self._x(self.spi.read(3)))
                n = (data[5] << 8) | data[6]
                data.extend(self._x(self.spi.read(min(n, MAX_DATA) + 2)))
            else:
                data.extend(self._x(self.spi.read(data[3] + 2)))
        finally:
            self.cs.value(1)
        n = min(len(data), len(buf))
        buf[:n] = data[:n]
        return n

    def write(self, data):
        self.cs.value(0)
        try:
            self.spi.write(self._x(bytes((self.DW,)) + bytes(data)))
        finally:
            self.cs.value(1)


class I2CBus:
    ADDR = 0x24

    def __init__(self, i2c, addr=ADDR):
        self.i2c, self.addr = i2c, addr

    def read_into(self, buf):
        """Status byte first (bit 0: an answer is ready), then the frame; the bytes after the frame's
        postamble in the same read are filler the decoder skips."""
        if not self.i2c.readfrom(self.addr, 1)[0] & 1:
            return 0
        data = self.i2c.readfrom(self.addr, len(buf) + 1)
        n = len(data) - 1
        buf[:n] = data[1:]
        return n

    def write(self, data):
        self.i2c.writeto(self.addr, data)


try:
    from time import ticks_ms, ticks_diff
except ImportError:  # CPython (the tests)
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

ACK_TIMEOUT_MS = 200  # the chip ACKs a command within ~1 ms; no ACK: the frame was lost, send it again


class PN532:
    """One command in flight at a time; see the module docstring. A command the chip did not ACK
    within ACK_TIMEOUT_MS is sent again (a frame lost or garbled on the bus); the answer itself
    may take as long as the RF side needs (TgInitAsTarget waits for a reader)."""

    def __init__(self, bus):
        self.bus = bus
        self.dec = FrameDecoder()
        self.sent_at = 0
        self.resent = 0
        self.rx = bytearray(MAX_DATA + 12)  # a whole extended frame: SPI/I2C read one frame per transaction
        self.pending = None  # command code awaiting its answer
        self.acked = False
        self.last_frame = None
        self.chip_errors = 0

    def send(self, cmd, params=b""):
        if self.pending is not None:
            raise ValueError("pn532: command %02x still in flight" % self.pending)
        self.last_frame = encode_frame(HOST_TFI, bytes((cmd,)) + bytes(params))
        self.bus.write(self.last_frame)
        self.pending = cmd
        self.acked = False
        self.sent_at = ticks_ms()

    def abort(self):
        """Start clean: an ACK makes the chip drop a command a previous run left in flight, and
        whatever the chip had sent that nobody read is discarded (it could be half a frame)."""
        self.bus.write(ACK)
        self.pending = None
        self.dec = FrameDecoder()
        for _ in range(64):
            if not self.bus.read_into(self.rx):
                break

    def poll(self):
        """None, or (cmd, answer data without TFI and code) once the answer to `cmd` is in."""
        n = self.bus.read_into(self.rx)
        if not n:
            if self.pending is not None and not self.acked and \
                    ticks_diff(ticks_ms(), self.sent_at) > ACK_TIMEOUT_MS:
                self.resent += 1
                self.dec = FrameDecoder()  # a half frame from before must not swallow the answer
                self.bus.write(self.last_frame)
                self.sent_at = ticks_ms()
            return None
        result = None
        for kind, body in self.dec.feed(memoryview(self.rx)[:n]):
            if kind == "ack":
                self.acked = True
            elif kind == "nack" and self.last_frame:
                self.bus.write(self.last_frame)
            elif kind == "error":
                self.chip_errors += 1
                if self.last_frame:
                    self.bus.write(self.last_frame)
            elif kind == "frame" and self.pending is not None:
                tfi, data = body
                if tfi == CHIP_TFI and data and data[0] == self.pending + 1:
                    result = (self.pending, data[1:])
                    self.pending = None
        return result

    # command parameter builders (the answers are parsed by the caller)
    @staticmethod
    def sam_configuration():
        return SAM_CONFIGURATION, b"\x01\x14\x00"  # normal mode, 1 s timeout, no IRQ

    @staticmethod
    def tg_init_as_target(uid3, sens_res=b"\x04\x00", sel_res=0x20):
        """PICC-only ISO 14443-4A target; uid3 = NFCID1t (3 bytes, the chip prefixes 08)."""
        p = bytearray((MODE_PICC_ONLY,))
        p.extend(sens_res)
        p.extend(uid3)
        p.append(sel_res)
        p.extend(bytes(18))  # FeliCa params: unused in PICC-only mode
        p.extend(bytes(10))  # NFCID3t: unused
        p.append(0)  # no general bytes
        p.append(0)  # no historical bytes
        return TG_INIT_AS_TARGET, bytes(p)
