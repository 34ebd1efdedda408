"""amiko_core.hashing on CPython: published vectors, and property tests against
hashlib/OpenSSL, CPython's hmac module and an independent textbook RIPEMD-160."""

import array
import hashlib
import hmac
import json
import tracemalloc
from binascii import unhexlify
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amiko_core import hashing

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "hashing.json").read_text())


def _message(v):
    if "repeat" in v:
        return v["repeat"].encode("ascii") * v["count"]
    return unhexlify(v["message"])


def _hashlib_ripemd160_or_none():
    try:
        if hashlib.new("ripemd160", b"").hexdigest() == "9c1185a5c5e9fc54612808977ee8f548b2258d31":
            return lambda data: hashlib.new("ripemd160", data).digest()
    except ValueError:
        pass
    return None


HASHLIB_RIPEMD160 = _hashlib_ripemd160_or_none()


def _textbook_ripemd160(message):
    """RIPEMD-160 written the way the paper states it (pad everything, one loop
    of 80 steps, f(j, x, y, z) as a function): slow, but shares no structure
    with the module's implementation."""
    mask = 0xFFFFFFFF

    def rol(x, n):
        return ((x << n) | (x >> (32 - n))) & mask

    def f(j, x, y, z):
        if j < 16:
            return x ^ y ^ z
        if j < 32:
            return (x & y) | (~x & z)
        if j < 48:
            return (x | ~y) ^ z
        if j < 64:
            return (x & z) | (y & ~z)
        return x ^ (y | ~z)

    r = [list(range(16)),
         [7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8],
         [3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12],
         [1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2],
         [4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13]]
    r = sum(r, [])
    rp = [5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12,
          6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2,
          15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13,
          8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14,
          12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11]
    s = [11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8,
         7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12,
         11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5,
         11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12,
         9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6]
    sp = [8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6,
          9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11,
          9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5,
          15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8,
          8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11]
    k = [0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E]
    kp = [0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000]

    padded = message + b"\x80" + b"\x00" * ((55 - len(message)) % 64) + (8 * len(message)).to_bytes(8, "little")
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    for block in range(0, len(padded), 64):
        x = [int.from_bytes(padded[block + 4 * i:block + 4 * i + 4], "little") for i in range(16)]
        a, b, c, d, e = h
        ap, bp, cp, dp, ep = h
        for j in range(80):
            t = (rol((a + f(j, b, c, d) + x[r[j]] + k[j // 16]) & mask, s[j]) + e) & mask
            a, e, d, c, b = e, d, rol(c, 10), b, t
            t = (rol((ap + f(79 - j, bp, cp, dp) + x[rp[j]] + kp[j // 16]) & mask, sp[j]) + ep) & mask
            ap, ep, dp, cp, bp = ep, dp, rol(cp, 10), bp, t
        t = (h[1] + c + dp) & mask
        h[1] = (h[2] + d + ep) & mask
        h[2] = (h[3] + e + ap) & mask
        h[3] = (h[4] + a + bp) & mask
        h[4] = (h[0] + b + cp) & mask
        h[0] = t
    return b"".join(w.to_bytes(4, "little") for w in h)


# References the pure implementation is checked against: the textbook version
# always, OpenSSL's as well where this Python's hashlib provides it.
RIPEMD160_REFERENCES = [_textbook_ripemd160] + ([HASHLIB_RIPEMD160] if HASHLIB_RIPEMD160 else [])


def _ids(vs):
    return [v["name"] for v in vs]


@pytest.mark.parametrize("fn", [hashing.ripemd160, hashing.ripemd160_pure], ids=["ripemd160", "pure"])
@pytest.mark.parametrize("v", VECTORS["ripemd160"], ids=_ids(VECTORS["ripemd160"]))
def test_ripemd160_vectors(v, fn):
    assert fn(_message(v)).hex() == v["digest"]


SHORT_RIPEMD160 = [v for v in VECTORS["ripemd160"] if "repeat" not in v]


@pytest.mark.parametrize("wrap", [bytearray, memoryview, lambda b: memoryview(bytearray(b))])
@pytest.mark.parametrize("v", SHORT_RIPEMD160, ids=_ids(SHORT_RIPEMD160))
def test_ripemd160_pure_accepts_bytearray_and_memoryview(v, wrap):
    assert hashing.ripemd160_pure(wrap(_message(v))).hex() == v["digest"]


def test_textbook_reference_is_right():
    # The in-test reference must itself pass the published vectors.
    for v in SHORT_RIPEMD160:
        assert _textbook_ripemd160(_message(v)).hex() == v["digest"], v["name"]


def test_backend_is_hashlib_exactly_when_hashlib_works():
    assert hashing.RIPEMD160_BACKEND == ("hashlib" if HASHLIB_RIPEMD160 else "pure")


def test_no_viper_path_on_cpython():
    # CPython has no micropython module: amiko_core.ripemd160_viper does not import
    assert hashing.ripemd160_viper(b"abc") is None


@pytest.mark.parametrize("v", VECTORS["sha256"], ids=_ids(VECTORS["sha256"]))
def test_sha256_vectors(v):
    assert hashing.sha256(_message(v)).hex() == v["digest"]
    assert hashing.sha256(memoryview(bytearray(_message(v)))).hex() == v["digest"]


@pytest.mark.parametrize("v", VECTORS["hash160"], ids=_ids(VECTORS["hash160"]))
def test_hash160_vectors(v):
    assert hashing.hash160(_message(v)).hex() == v["digest"]
    assert hashing.ripemd160_pure(hashing.sha256(_message(v))).hex() == v["digest"]


@pytest.mark.parametrize("v", VECTORS["hmac_sha256"], ids=_ids(VECTORS["hmac_sha256"]))
def test_hmac_sha256_vectors(v):
    mac = hashing.hmac_sha256(unhexlify(v["key"]), unhexlify(v["data"]))
    assert len(mac) == 32
    n = v.get("truncate", 32)
    assert len(unhexlify(v["mac"])) == n
    assert mac[:n].hex() == v["mac"]


def test_vector_set_is_complete():
    names = " ".join(_ids(VECTORS["hmac_sha256"]))
    for case in range(1, 8):
        assert "RFC 4231 case %d" % case in names
    assert any(v.get("count") == 1000000 for v in VECTORS["ripemd160"])
    # The million-a vector runs on MicroPython too (about 1.5 s there).
    assert not any(v.get("cpython_only") for v in VECTORS["ripemd160"])


@pytest.mark.parametrize("n", range(0, 200))
def test_ripemd160_pure_every_length_around_the_padding_boundaries(n):
    message = bytes((i * 31 + n) & 0xFF for i in range(n))
    want = _textbook_ripemd160(message)
    assert hashing.ripemd160_pure(message) == want
    assert hashing.ripemd160(message) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_ripemd160_pure_matches_references(data):
    got = hashing.ripemd160_pure(data)
    for reference in RIPEMD160_REFERENCES:
        assert got == reference(data)
    assert hashing.ripemd160_pure(bytearray(data)) == got
    assert hashing.ripemd160_pure(memoryview(data)) == got
    assert hashing.ripemd160(data) == got


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 300), st.integers(0, 300))
def test_ripemd160_of_a_memoryview_slice_hashes_only_the_slice(data, i, j):
    assert hashing.ripemd160_pure(memoryview(data)[i:j]) == _textbook_ripemd160(data[i:j])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_hash160_and_sha256_match_hashlib(data):
    digest = hashlib.sha256(data).digest()
    assert hashing.sha256(data) == digest
    assert hashing.hash160(data) == _textbook_ripemd160(digest)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.binary(max_size=200), st.sampled_from([63, 64, 65, 128]).map(lambda n: bytes(range(n)))),
    st.binary(max_size=300),
)
def test_hmac_sha256_matches_python_hmac(key, data):
    want = hmac.new(key, data, hashlib.sha256).digest()
    assert hashing.hmac_sha256(key, data) == want
    assert hashing.hmac_sha256(bytearray(key), memoryview(data)) == want


def test_non_byte_memoryviews_hash_their_bytes():
    words = array.array("I", range(40))
    raw = words.tobytes()
    view = memoryview(words)
    assert hashing.ripemd160_pure(view) == _textbook_ripemd160(raw)
    assert hashing.ripemd160(view) == _textbook_ripemd160(raw)
    assert hashing.sha256(view) == hashlib.sha256(raw).digest()
    assert hashing.hmac_sha256(view, view) == hmac.new(raw, raw, hashlib.sha256).digest()
    gaps = memoryview(bytes(range(100)))[::3]
    assert hashing.ripemd160_pure(gaps) == _textbook_ripemd160(bytes(range(0, 100, 3)))
    assert hashing.sha256(gaps) == hashlib.sha256(bytes(range(0, 100, 3))).digest()
    signed = memoryview(bytes(range(200, 256))).cast("b")
    assert hashing.hmac_sha256(signed, b"x") == hmac.new(bytes(range(200, 256)), b"x", hashlib.sha256).digest()


@pytest.mark.parametrize("bad", ["abc", "", 0, 12345, None, [1, 2, 3], (1,), 1.5, object()])
@pytest.mark.parametrize(
    "fn",
    [
        hashing.sha256,
        hashing.ripemd160,
        hashing.ripemd160_pure,
        hashing.hash160,
        lambda x: hashing.hmac_sha256(x, b"data"),
        lambda x: hashing.hmac_sha256(b"key", x),
    ],
    ids=["sha256", "ripemd160", "ripemd160_pure", "hash160", "hmac_key", "hmac_data"],
)
def test_non_bytes_input_is_a_type_error(fn, bad):
    with pytest.raises(TypeError, match="expected bytes, bytearray or memoryview"):
        fn(bad)


def test_large_input_is_not_copied():
    # Whole blocks are read from the input in place: hashing 16 KiB must not
    # allocate anything near the input's size (tracemalloc makes this slow,
    # hence the small input).
    data = memoryview(bytes(16 * 1024))
    tracemalloc.start()
    try:
        hashing.ripemd160_pure(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024
