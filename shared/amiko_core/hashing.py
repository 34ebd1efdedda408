"""Hash functions of the core: SHA-256, RIPEMD-160, HASH160 and HMAC-SHA256.

Contract (identical on MicroPython and CPython):

- Every function takes `bytes`, `bytearray` or `memoryview` and returns `bytes`.
  Anything else (str, int, None, ...) raises TypeError: hashing a text or a
  number is a programming error, never a property of received data.
  A memoryview is hashed as the bytes it views; on CPython a view whose
  format is not "B" (e.g. of an array of ints), with several dimensions or
  with gaps is hashed as `bytes(view)` (MicroPython memoryviews do not expose
  their format: pass views of bytes or bytearray there).
- sha256(data) -> 32 bytes, FIPS 180-4 (hashlib on both runtimes).
- ripemd160(data) -> 20 bytes, RIPEMD-160 (Dobbertin, Bosselaers, Preneel 1996).
  Uses hashlib's RIPEMD-160 where it really works; MicroPython has none, and
  CPython's comes from OpenSSL's legacy provider, which may be absent. The
  probe runs once at import; RIPEMD160_BACKEND says "hashlib" or "pure".
- ripemd160_pure(data) -> 20 bytes, always this module's own implementation.
- hash160(data) -> 20 bytes, ripemd160(sha256(data)) (Bitcoin's HASH160; the
  payment link's transaction ID is hash160 of the commit token).
- hmac_sha256(key, data) -> 32 bytes, RFC 2104 HMAC with SHA-256 (RFC 4231
  test vectors); keys longer than the 64-byte block are hashed first.
"""

import hashlib
from struct import pack, pack_into, unpack_from

_M = 0xFFFFFFFF

# RIPEMD-160 message word order (r, r'), rotation amounts (s, s') per step
# and additive constants (K, K') per round of 16 steps, from the paper.
# The step tables are one bytes literal (values in decimal in the comments), 80 bytes
# each: a literal is used in place, where bytes((...)) would also keep its 80-int tuple
# (672 bytes on a 64-bit port) in the module's constants; one piece for both the pure
# compression and the viper one (amiko_core.ripemd160_viper).
_TAB = (
    # 0..79: r (message word of each step, left line)
    b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"  # round 1: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
    b"\x07\x04\x0d\x01\x0a\x06\x0f\x03\x0c\x00\x09\x05\x02\x0e\x0b\x08"  # round 2: 7 4 13 1 10 6 15 3 12 0 9 5 2 14 11 8
    b"\x03\x0a\x0e\x04\x09\x0f\x08\x01\x02\x07\x00\x06\x0d\x0b\x05\x0c"  # round 3: 3 10 14 4 9 15 8 1 2 7 0 6 13 11 5 12
    b"\x01\x09\x0b\x0a\x00\x08\x0c\x04\x0d\x03\x07\x0f\x0e\x05\x06\x02"  # round 4: 1 9 11 10 0 8 12 4 13 3 7 15 14 5 6 2
    b"\x04\x00\x05\x09\x07\x0c\x02\x0a\x0e\x01\x03\x08\x0b\x06\x0f\x0d"  # round 5: 4 0 5 9 7 12 2 10 14 1 3 8 11 6 15 13
    # 80..159: r' (right line)
    b"\x05\x0e\x07\x00\x09\x02\x0b\x04\x0d\x06\x0f\x08\x01\x0a\x03\x0c"  # round 1: 5 14 7 0 9 2 11 4 13 6 15 8 1 10 3 12
    b"\x06\x0b\x03\x07\x00\x0d\x05\x0a\x0e\x0f\x08\x0c\x04\x09\x01\x02"  # round 2: 6 11 3 7 0 13 5 10 14 15 8 12 4 9 1 2
    b"\x0f\x05\x01\x03\x07\x0e\x06\x09\x0b\x08\x0c\x02\x0a\x00\x04\x0d"  # round 3: 15 5 1 3 7 14 6 9 11 8 12 2 10 0 4 13
    b"\x08\x06\x04\x01\x03\x0b\x0f\x00\x05\x0c\x02\x0d\x09\x07\x0a\x0e"  # round 4: 8 6 4 1 3 11 15 0 5 12 2 13 9 7 10 14
    b"\x0c\x0f\x0a\x04\x01\x05\x08\x07\x06\x02\x0d\x0e\x00\x03\x09\x0b"  # round 5: 12 15 10 4 1 5 8 7 6 2 13 14 0 3 9 11
    # 160..239: s (rotation, left line)
    b"\x0b\x0e\x0f\x0c\x05\x08\x07\x09\x0b\x0d\x0e\x0f\x06\x07\x09\x08"  # round 1: 11 14 15 12 5 8 7 9 11 13 14 15 6 7 9 8
    b"\x07\x06\x08\x0d\x0b\x09\x07\x0f\x07\x0c\x0f\x09\x0b\x07\x0d\x0c"  # round 2: 7 6 8 13 11 9 7 15 7 12 15 9 11 7 13 12
    b"\x0b\x0d\x06\x07\x0e\x09\x0d\x0f\x0e\x08\x0d\x06\x05\x0c\x07\x05"  # round 3: 11 13 6 7 14 9 13 15 14 8 13 6 5 12 7 5
    b"\x0b\x0c\x0e\x0f\x0e\x0f\x09\x08\x09\x0e\x05\x06\x08\x06\x05\x0c"  # round 4: 11 12 14 15 14 15 9 8 9 14 5 6 8 6 5 12
    b"\x09\x0f\x05\x0b\x06\x08\x0d\x0c\x05\x0c\x0d\x0e\x0b\x08\x05\x06"  # round 5: 9 15 5 11 6 8 13 12 5 12 13 14 11 8 5 6
    # 240..319: s' (right line)
    b"\x08\x09\x09\x0b\x0d\x0f\x0f\x05\x07\x07\x08\x0b\x0e\x0e\x0c\x06"  # round 1: 8 9 9 11 13 15 15 5 7 7 8 11 14 14 12 6
    b"\x09\x0d\x0f\x07\x0c\x08\x09\x0b\x07\x07\x0c\x07\x06\x0f\x0d\x0b"  # round 2: 9 13 15 7 12 8 9 11 7 7 12 7 6 15 13 11
    b"\x09\x07\x0f\x0b\x08\x06\x06\x0e\x0c\x0d\x05\x0e\x0d\x0d\x07\x05"  # round 3: 9 7 15 11 8 6 6 14 12 13 5 14 13 13 7 5
    b"\x0f\x05\x08\x0b\x0e\x0e\x06\x0e\x06\x09\x0c\x09\x0c\x05\x0f\x08"  # round 4: 15 5 8 11 14 14 6 14 6 9 12 9 12 5 15 8
    b"\x08\x05\x0c\x09\x0c\x05\x0e\x06\x08\x0d\x06\x05\x0f\x0d\x0b\x0b"  # round 5: 8 5 12 9 12 5 14 6 8 13 6 5 15 13 11 11
)
_KL = (0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E)
_KR = (0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000)


def _compress(h, x):
    """Apply the compression function to state h (list of 5 words) for block x (16 words).

    Both lines run side by side. The five boolean functions are written out
    per round instead of being called, and "NOT y" is written "y ^ _M":
    a function call per step, or negative numbers, cost far more on MicroPython.
    Left line uses f1..f5 in round order, right line f5..f1.
    """
    al = ar = h[0]
    bl = br = h[1]
    cl = cr = h[2]
    dl = dr = h[3]
    el = er = h[4]
    tab = _TAB  # r at 0, r' at 80, s at 160, s' at 240

    # Round 1: left f1(x, y, z) = x ^ y ^ z, right f5(x, y, z) = x ^ (y | ~z).
    kl = _KL[0]
    kr = _KR[0]
    for j in range(0, 16):
        t = (al + (bl ^ cl ^ dl) + x[tab[j]] + kl) & _M
        s = tab[160 + j]
        t = (((t << s) | (t >> (32 - s))) + el) & _M
        al = el
        el = dl
        dl = ((cl << 10) | (cl >> 22)) & _M
        cl = bl
        bl = t
        t = (ar + (br ^ (cr | (dr ^ _M))) + x[tab[80 + j]] + kr) & _M
        s = tab[240 + j]
        t = (((t << s) | (t >> (32 - s))) + er) & _M
        ar = er
        er = dr
        dr = ((cr << 10) | (cr >> 22)) & _M
        cr = br
        br = t

    # Round 2: left f2(x, y, z) = (x & y) | (~x & z), right f4(x, y, z) = (x & z) | (y & ~z).
    kl = _KL[1]
    kr = _KR[1]
    for j in range(16, 32):
        t = (al + ((bl & cl) | ((bl ^ _M) & dl)) + x[tab[j]] + kl) & _M
        s = tab[160 + j]
        t = (((t << s) | (t >> (32 - s))) + el) & _M
        al = el
        el = dl
        dl = ((cl << 10) | (cl >> 22)) & _M
        cl = bl
        bl = t
        t = (ar + ((br & dr) | (cr & (dr ^ _M))) + x[tab[80 + j]] + kr) & _M
        s = tab[240 + j]
        t = (((t << s) | (t >> (32 - s))) + er) & _M
        ar = er
        er = dr
        dr = ((cr << 10) | (cr >> 22)) & _M
        cr = br
        br = t

    # Round 3: both lines f3(x, y, z) = (x | ~y) ^ z.
    kl = _KL[2]
    kr = _KR[2]
    for j in range(32, 48):
        t = (al + ((bl | (cl ^ _M)) ^ dl) + x[tab[j]] + kl) & _M
        s = tab[160 + j]
        t = (((t << s) | (t >> (32 - s))) + el) & _M
        al = el
        el = dl
        dl = ((cl << 10) | (cl >> 22)) & _M
        cl = bl
        bl = t
        t = (ar + ((br | (cr ^ _M)) ^ dr) + x[tab[80 + j]] + kr) & _M
        s = tab[240 + j]
        t = (((t << s) | (t >> (32 - s))) + er) & _M
        ar = er
        er = dr
        dr = ((cr << 10) | (cr >> 22)) & _M
        cr = br
        br = t

    # Round 4: left f4, right f2.
    kl = _KL[3]
    kr = _KR[3]
    for j in range(48, 64):
        t = (al + ((bl & dl) | (cl & (dl ^ _M))) + x[tab[j]] + kl) & _M
        s = tab[160 + j]
        t = (((t << s) | (t >> (32 - s))) + el) & _M
        al = el
        el = dl
        dl = ((cl << 10) | (cl >> 22)) & _M
        cl = bl
        bl = t
        t = (ar + ((br & cr) | ((br ^ _M) & dr)) + x[tab[80 + j]] + kr) & _M
        s = tab[240 + j]
        t = (((t << s) | (t >> (32 - s))) + er) & _M
        ar = er
        er = dr
        dr = ((cr << 10) | (cr >> 22)) & _M
        cr = br
        br = t

    # Round 5: left f5, right f1.
    kl = _KL[4]
    kr = _KR[4]
    for j in range(64, 80):
        t = (al + (bl ^ (cl | (dl ^ _M))) + x[tab[j]] + kl) & _M
        s = tab[160 + j]
        t = (((t << s) | (t >> (32 - s))) + el) & _M
        al = el
        el = dl
        dl = ((cl << 10) | (cl >> 22)) & _M
        cl = bl
        bl = t
        t = (ar + (br ^ cr ^ dr) + x[tab[80 + j]] + kr) & _M
        s = tab[240 + j]
        t = (((t << s) | (t >> (32 - s))) + er) & _M
        ar = er
        er = dr
        dr = ((cr << 10) | (cr >> 22)) & _M
        cr = br
        br = t

    # Combine both lines into the chaining value (the paper's final step).
    t = (h[1] + cl + dr) & _M
    h[1] = (h[2] + dl + er) & _M
    h[2] = (h[3] + el + ar) & _M
    h[3] = (h[4] + al + br) & _M
    h[4] = (h[0] + bl + cr) & _M
    h[0] = t


def _byte_view(data):
    """data as an object that slices by byte; TypeError if it is not bytes-like."""
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, memoryview):
        # CPython only: these attributes do not exist on MicroPython.
        if (
            getattr(data, "format", "B") != "B"
            or getattr(data, "ndim", 1) != 1
            or not getattr(data, "c_contiguous", True)
        ):
            return bytes(data)
        return data
    raise TypeError("hashing: expected bytes, bytearray or memoryview, got %s" % type(data).__name__)


def ripemd160_pure(data):
    """RIPEMD-160 of data, computed by this module (no hashlib)."""
    data = _byte_view(data)
    n = len(data)
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]  # initial chaining value
    full = n - (n & 63)
    # Whole blocks are read straight from the input; only the tail is copied.
    off = 0
    while off < full:
        _compress(h, unpack_from("<16I", data, off))
        off += 64
    # Padding: 0x80, zeros, then the bit length as 64-bit little-endian,
    # filling one block, or two when fewer than 9 bytes are left in the first.
    tail = bytearray(128)
    rest = n - full
    tail[0:rest] = data[full:n]
    tail[rest] = 0x80
    end = 64 if rest < 56 else 128
    pack_into("<Q", tail, end - 8, (n << 3) & 0xFFFFFFFFFFFFFFFF)
    _compress(h, unpack_from("<16I", tail, 0))
    if end == 128:
        _compress(h, unpack_from("<16I", tail, 64))
    return pack("<5I", h[0], h[1], h[2], h[3], h[4])


try:  # the compression as machine code (MicroPython with the viper emitter for this architecture)
    from amiko_core import ripemd160_viper as _viper
except (ImportError, ValueError, SyntaxError, NotImplementedError):  # CPython; no viper here; .mpy of another arch
    _viper = None
else:
    from array import array

    # (compress, digest, work area, digest buffer), preallocated: 33 words, layout in ripemd160_viper.
    # One global name only: the exchange's modules stay under 300 interned names (test_import_footprint).
    _viper = (_viper._compress, _viper.digest, array("I", (0,) * 21 + _KL + _KR + (_M, 0)), bytearray(20))


def ripemd160_viper(data):
    """RIPEMD-160 of data with the viper compression (MicroPython only; None where it is not
    available). Not reentrant (one preallocated work area): no garbage but the digest."""
    if _viper is None:
        return None
    data = _byte_view(data)
    n = len(data)
    if n >= 1 << 29:  # the viper padding writes a 32-bit bit length
        return ripemd160_pure(data)
    compress, digest, ws, out = _viper
    ws[0] = 0x67452301  # initial chaining value
    ws[1] = 0xEFCDAB89
    ws[2] = 0x98BADCFE
    ws[3] = 0x10325476
    ws[4] = 0xC3D2E1F0
    ws[32] = n
    for off in range(0, ((n + 8) >> 6) + 1 << 6, 64):
        compress(ws, data, off, _TAB)
    digest(ws, out)
    return bytes(out)


# hashlib's RIPEMD-160 constructor if it exists and gives the right answer, else None.
_hashlib_new = getattr(hashlib, "new", None)
try:
    # RIPEMD-160("abc") from the authors' test vectors.
    if _hashlib_new is not None and _hashlib_new("ripemd160", b"abc").digest() != (
        b"\x8e\xb2\x08\xf7\xe0\x5d\x98\x7a\x9b\x04\x4a\x8e\x98\xc6\xb0\x87\xf1\x5a\x0b\xfc"
    ):
        _hashlib_new = None
except Exception:  # ValueError without the OpenSSL legacy provider; anything else: unusable too
    _hashlib_new = None
RIPEMD160_BACKEND = "hashlib" if _hashlib_new is not None else "viper" if _viper is not None else "pure"


def ripemd160(data):
    """RIPEMD-160 of data: hashlib's if it works on this runtime, else the viper one, else
    ripemd160_pure."""
    if _hashlib_new is not None:
        return _hashlib_new("ripemd160", _byte_view(data)).digest()
    if _viper is not None:
        return ripemd160_viper(data)
    return ripemd160_pure(data)


def sha256(data):
    """SHA-256 of data."""
    return hashlib.sha256(_byte_view(data)).digest()


def hash160(data):
    """RIPEMD-160 of the SHA-256 of data."""
    return ripemd160(hashlib.sha256(_byte_view(data)).digest())


def _hmac_pads_of(key):
    global _hmac_pads
    given = bytes(key)
    if len(key) > 64:  # longer than SHA-256's 64-byte block
        key = hashlib.sha256(key).digest()
    inner_key = bytearray(b"\x36" * 64)  # ipad
    for i in range(len(key)):
        inner_key[i] ^= key[i]
    outer_key = bytearray(64)
    for i in range(64):
        # 0x36 ^ 0x5c: turns K ^ ipad into K ^ opad
        outer_key[i] = inner_key[i] ^ 0x6A
    _hmac_pads = (given, bytes(inner_key), bytes(outer_key))
    return _hmac_pads


_hmac_pads = (None, None, None)  # (key, K ^ ipad, K ^ opad) of the last key used


def hmac_sha256(key, data):
    """HMAC-SHA256 (RFC 2104): SHA256((K ^ opad) || SHA256((K ^ ipad) || data))."""
    key = _byte_view(key)
    data = _byte_view(data)
    pads = _hmac_pads
    if pads[0] != key:  # a wallet MACs with one key: its pads are made once
        pads = _hmac_pads_of(key)
    inner_key, outer_key = pads[1], pads[2]
    inner = hashlib.sha256(inner_key)
    inner.update(data)
    outer = hashlib.sha256(outer_key)
    outer.update(inner.digest())
    return outer.digest()
