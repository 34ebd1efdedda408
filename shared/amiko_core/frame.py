"""Transport framing: one frame format for every transport (serial, TCP, BLE, NFC).

A frame carries one message body (CBOR, which this module does not parse):

    offset  size  field
    0       2     magic b"\\xA5\\x4B"
    2       1     protocol version (PROTOCOL_VERSION = 1)
    3       1     message type (0..255)
    4       2     body length N, big-endian
    6       1     header check: CRC-8 (poly 0x07, init 0, no reflection, no final xor)
                  over bytes 0..5
    7       N     body
    7+N     4     CRC-32 (IEEE, as binascii.crc32 / zlib.crc32) over bytes 2 .. 7+N-1,
                  big-endian

Overhead is OVERHEAD = 11 bytes. A whole frame is at most `max_frame` bytes
(DEFAULT_MAX_FRAME = 4096; configurable per call / decoder in
OVERHEAD .. MAX_FRAME_LIMIT, the largest a 16-bit length allows). Splitting frames
into BLE MTUs or NFC APDUs is the transport's job, not the frame's.

The header check lets a decoder refuse a garbage length at once instead of
waiting for up to 64 KiB of a body that never comes.

FrameDecoder is incremental: feed() accepts any chunking (one byte at a time,
several frames in one read) and returns the complete frames found. It scans for
the magic; bytes before it are dropped. A candidate whose header check fails,
whose length exceeds max_frame, or whose CRC-32 fails is refused by dropping
only its first byte and rescanning the buffered bytes, so a valid frame that
follows (or hides inside) garbage is never lost. Accounting invariant: every
byte fed is either in a delivered frame, counted in `dropped_bytes`, or
`pending()`. Memory is one preallocated bytearray of max_frame bytes.

Frames of every version are delivered; the messages layer refuses versions it
does not speak.
"""

from binascii import hexlify

from amiko_core.errors import DecodeError, EncodeError

try:
    from binascii import crc32 as _binascii_crc32
except ImportError:  # a MicroPython port built without MICROPY_PY_BINASCII_CRC32
    _binascii_crc32 = None

PROTOCOL_VERSION = 1
MAGIC = b"\xA5\x4B"
HEADER_SIZE = 7
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
DEFAULT_MAX_FRAME = 4096
MAX_FRAME_LIMIT = OVERHEAD + 0xFFFF
GARBAGE_REASON = "frame: skipped bytes before magic"



def _make_crc8_table():
    table = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table[i] = c
    return bytes(table)


_CRC8_TABLE = _make_crc8_table()
del _make_crc8_table  # import-time only: frees its code on a device


def crc8(data, start=0, end=None):
    """CRC-8 (poly 0x07, init 0) of data[start:end] (any buffer; no copy is made)."""
    if end is None:
        end = len(data)
    c = 0
    table = _CRC8_TABLE
    for i in range(start, end):
        c = table[c ^ data[i]]
    return c


# The fallback CRC-32 keeps the register as two 16-bit halves so that every
# intermediate value stays a small int (no bigint allocation per byte on 32-bit
# MicroPython ports, where small ints are only 31 bits).
_crc32_tables = None


def crc32_py(data, value=0):
    """Pure-Python CRC-32 (IEEE); same result as binascii.crc32(data, value)."""
    global _crc32_tables
    if _crc32_tables is None:
        hi = [0] * 256
        lo = [0] * 256
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            hi[i] = c >> 16
            lo[i] = c & 0xFFFF
        _crc32_tables = hi, lo
    t_hi, t_lo = _crc32_tables
    value ^= 0xFFFFFFFF
    hi = value >> 16
    lo = value & 0xFFFF
    for b in data:
        i = (lo ^ b) & 0xFF
        lo = t_lo[i] ^ (((hi & 0xFF) << 8) | (lo >> 8))
        hi = t_hi[i] ^ (hi >> 8)
    return ((hi << 16) | lo) ^ 0xFFFFFFFF


if _binascii_crc32 is not None:
    crc32 = _binascii_crc32
else:
    crc32 = crc32_py


def _check_max_frame(max_frame):
    if not isinstance(max_frame, int) or not OVERHEAD <= max_frame <= MAX_FRAME_LIMIT:
        raise ValueError("frame: max_frame must be an int in %d..%d, got %r" % (OVERHEAD, MAX_FRAME_LIMIT, max_frame))


class Frame:
    """A decoded frame: version (int), type (int), body (bytes)."""

    def __init__(self, version, type, body):
        self.version = version
        self.type = type
        self.body = body

    def __eq__(self, other):
        return (
            isinstance(other, Frame)
            and self.version == other.version
            and self.type == other.type
            and self.body == other.body
        )

    def __repr__(self):
        return "Frame(version=%d, type=%d, body=%s)" % (self.version, self.type, hexlify(self.body).decode())


def _is_byte(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def encode(mtype, body, version=PROTOCOL_VERSION, max_frame=DEFAULT_MAX_FRAME):
    """Return the complete frame bytes for one message body."""
    _check_max_frame(max_frame)
    if not _is_byte(mtype):
        raise EncodeError("frame: message type must be an int in 0..255, got %r" % (mtype,))
    if not _is_byte(version):
        raise EncodeError("frame: version must be an int in 0..255, got %r" % (version,))
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise EncodeError("frame: body must be bytes, got %s" % type(body).__name__)
    n = len(body)
    total = OVERHEAD + n
    if total > max_frame:
        raise EncodeError("frame: %d-byte body makes a %d-byte frame, over max frame %d" % (n, total, max_frame))
    out = bytearray(total)
    out[0] = 0xA5  # MAGIC
    out[1] = 0x4B
    out[2] = version
    out[3] = mtype
    out[4] = n >> 8
    out[5] = n & 0xFF
    out[6] = crc8(out, 0, 6)
    out[HEADER_SIZE : HEADER_SIZE + n] = body
    mv = memoryview(out)
    out[HEADER_SIZE + n :] = (crc32(mv[2 : HEADER_SIZE + n]) & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(out)


def _header_error(buf, start, max_frame):
    """Reason a header at buf[start:start+7] (magic already matched) is refused, or None."""
    want = crc8(buf, start, start + 6)
    if buf[start + 6] != want:
        return "frame: bad header check 0x%02x, want 0x%02x" % (buf[start + 6], want)
    n = (buf[start + 4] << 8) | buf[start + 5]
    if OVERHEAD + n > max_frame:
        return "frame: body length %d makes a %d-byte frame, over max frame %d" % (n, OVERHEAD + n, max_frame)
    return None


def _crc_error(mv, start, n):
    """Reason the CRC-32 of the complete frame at mv[start:] is refused, or None."""
    end = start + HEADER_SIZE + n
    got = int.from_bytes(mv[end : end + 4], "big")
    want = crc32(mv[start + 2 : end]) & 0xFFFFFFFF
    if got != want:
        return "frame: CRC-32 mismatch 0x%08x, want 0x%08x" % (got, want)
    return None


def decode_one(data, max_frame=DEFAULT_MAX_FRAME):
    """Decode data holding exactly one complete frame; DecodeError says what is wrong."""
    _check_max_frame(max_frame)
    mv = memoryview(data)
    size = len(mv)
    if size < HEADER_SIZE:
        raise DecodeError("frame: truncated header, %d of %d bytes" % (size, HEADER_SIZE))
    if mv[0] != 0xA5 or mv[1] != 0x4B:
        raise DecodeError("frame: bad magic 0x%02x%02x, want 0xa54b" % (mv[0], mv[1]))
    reason = _header_error(mv, 0, max_frame)
    if reason:
        raise DecodeError(reason)
    n = (mv[4] << 8) | mv[5]
    total = OVERHEAD + n
    if size < total:
        raise DecodeError("frame: truncated, %d of %d bytes" % (size, total))
    if size > total:
        raise DecodeError("frame: %d trailing bytes after a %d-byte frame" % (size - total, total))
    reason = _crc_error(mv, 0, n)
    if reason:
        raise DecodeError(reason)
    return Frame(mv[2], mv[3], bytes(mv[HEADER_SIZE : HEADER_SIZE + n]))


class FrameDecoder:
    """Incremental, resynchronising decoder over a byte stream (see the module docstring).

    dropped_bytes: bytes discarded (garbage and the first byte of each refused candidate)
    bad_frames:    candidates refused (bad header check, oversize length, bad CRC-32)
    last_error:    reason the most recent candidate was refused; GARBAGE_REASON while
                   only garbage has been dropped; None while nothing has been dropped.
                   (The rest of a refused candidate is dropped as garbage afterwards, so
                   garbage does not overwrite a refusal reason.)
    """

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        _check_max_frame(max_frame)
        self.max_frame = max_frame
        self._buf = bytearray(max_frame)
        self._mv = memoryview(self._buf)
        self._len = 0
        self.dropped_bytes = 0
        self.bad_frames = 0
        self.last_error = None

    def pending(self):
        """Number of bytes buffered, waiting for the rest of a frame (never over max_frame)."""
        return self._len

    def feed(self, data):
        """Consume data (any bytes-like, any length); return the list of complete frames in it."""
        frames = []
        src = memoryview(data)
        pos = 0
        size = len(src)
        while pos < size:
            take = self.max_frame - self._len
            if take > size - pos:
                take = size - pos
            self._mv[self._len : self._len + take] = src[pos : pos + take]
            self._len += take
            pos += take
            # _parse leaves fewer than max_frame bytes (a candidate that passed its header
            # check is at most max_frame long, so a full buffer always holds all of it),
            # hence the next round has room for at least one more byte.
            self._parse(frames)
        return frames

    def _skip_garbage(self, count):
        self.dropped_bytes += count
        if self.last_error is None:
            self.last_error = GARBAGE_REASON

    def _parse(self, frames):
        buf = self._buf
        mv = self._mv
        end = self._len
        start = 0
        while True:
            i = start
            while i < end and buf[i] != 0xA5:  # MAGIC[0]
                i += 1
            if i + 1 < end and buf[i + 1] != 0x4B:
                i += 1  # a lone 0xA5 is garbage too
                self._skip_garbage(i - start)
                start = i
                continue
            if i > start:
                self._skip_garbage(i - start)
                start = i
            if end - start < HEADER_SIZE:
                break  # empty, a partial magic, or a partial header: wait
            reason = _header_error(buf, start, self.max_frame)
            if reason is None:
                n = (buf[start + 4] << 8) | buf[start + 5]
                total = OVERHEAD + n
                if end - start < total:
                    break  # fits in the buffer (total <= max_frame): wait for the rest
                reason = _crc_error(mv, start, n)
                if reason is None:
                    body = bytes(mv[start + HEADER_SIZE : start + HEADER_SIZE + n])
                    frames.append(Frame(buf[start + 2], buf[start + 3], body))
                    start += total
                    continue
            self.bad_frames += 1  # refused: drop its first byte, rescan
            self.dropped_bytes += 1
            self.last_error = reason
            start += 1
        if start:
            mv[0 : end - start] = mv[start:end]
            self._len = end - start
