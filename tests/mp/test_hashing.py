"""amiko_core.hashing on MicroPython: the same vectors as tests/core/test_hashing.py."""

import time

from amiko_core import hashing
from mptest import eq, raises, unhex, vectors

V = vectors("hashing")


def _message(v):
    if "repeat" in v:
        return v["repeat"].encode() * v["count"]
    return unhex(v["message"])


def _hex(b):
    from binascii import hexlify

    return hexlify(b).decode()


def test_ripemd160_vectors():
    for v in V["ripemd160"]:
        if "repeat" in v:
            continue  # test_ripemd160_million_a
        m = _message(v)
        eq(_hex(hashing.ripemd160(m)), v["digest"], v["name"])
        eq(_hex(hashing.ripemd160_pure(m)), v["digest"], v["name"] + " (pure)")
        eq(_hex(hashing.ripemd160_pure(bytearray(m))), v["digest"], v["name"] + " (bytearray)")
        eq(_hex(hashing.ripemd160_pure(memoryview(m))), v["digest"], v["name"] + " (memoryview)")
        if _VIPER:
            eq(_hex(hashing.ripemd160_viper(m)), v["digest"], v["name"] + " (viper)")
            eq(_hex(hashing.ripemd160_viper(bytearray(m))), v["digest"], v["name"] + " (viper, bytearray)")
            eq(_hex(hashing.ripemd160_viper(memoryview(b"x" + m)[1:])), v["digest"], v["name"] + " (viper, unaligned)")


def test_ripemd160_million_a():
    # Only the pure implementation exists here; about 1.5 s on the unix port.
    found = 0
    for v in V["ripemd160"]:
        if "repeat" not in v or v.get("cpython_only"):
            continue
        found += 1
        m = _message(v)
        start = time.ticks_ms()
        eq(_hex(hashing.ripemd160_pure(m)), v["digest"], v["name"])
        elapsed = time.ticks_diff(time.ticks_ms(), start)
        if elapsed > 20000:
            raise AssertionError("%s took %d ms" % (v["name"], elapsed))
    eq(found, 1, "million-a vectors run")


def _viper_emitter():
    try:
        exec("import micropython\n@micropython.viper\ndef f(x: int) -> int:\n    return x\n")
        return True
    except Exception:  # SyntaxError (no viper emitter on this port)
        return False


_VIPER = _viper_emitter()


def test_ripemd160_backend_is_viper_where_the_port_has_it():
    # MicroPython has no hashlib RIPEMD-160; with the viper emitter the machine-code compression
    # must be the one in use (a silent fallback to the pure one would pass every vector).
    eq(hashing.RIPEMD160_BACKEND, "viper" if _VIPER else "pure", "backend")
    if not _VIPER:
        eq(hashing.ripemd160_viper(b"abc"), None, "no viper path")


def test_ripemd160_viper_million_a_and_reuse():
    if not _VIPER:
        return
    for v in V["ripemd160"]:
        if "repeat" in v and not v.get("cpython_only"):
            eq(_hex(hashing.ripemd160_viper(_message(v))), v["digest"], v["name"] + " (viper)")
    # the work area is reused: a long message, then a short one, then the long one again
    abc = V["ripemd160"][2]
    eq(abc["name"], "abc", "vector order")
    long = V["ripemd160"][-1]
    eq(_hex(hashing.ripemd160_viper(_message(long))), long["digest"], "long")
    eq(_hex(hashing.ripemd160_viper(b"abc")), abc["digest"], "after a long one")
    eq(_hex(hashing.ripemd160(_message(long))), long["digest"], "long again")


def test_memoryview_slice_hashes_only_the_slice():
    v = V["ripemd160"][2]  # "abc"
    eq(v["name"], "abc", "vector order")
    eq(_hex(hashing.ripemd160_pure(memoryview(b"xxabcyy")[2:5])), v["digest"], "slice")


def test_sha256_vectors():
    for v in V["sha256"]:
        m = _message(v)
        eq(_hex(hashing.sha256(m)), v["digest"], v["name"])
        eq(_hex(hashing.sha256(memoryview(bytearray(m)))), v["digest"], v["name"] + " (memoryview)")


def test_hash160_vectors():
    for v in V["hash160"]:
        m = _message(v)
        eq(_hex(hashing.hash160(m)), v["digest"], v["name"])
        eq(_hex(hashing.hash160(bytearray(m))), v["digest"], v["name"] + " (bytearray)")


def test_hmac_sha256_vectors():
    cases = 0
    for v in V["hmac_sha256"]:
        key = unhex(v["key"])
        data = unhex(v["data"])
        mac = hashing.hmac_sha256(key, data)
        eq(len(mac), 32, v["name"] + " length")
        n = v.get("truncate", 32)
        eq(_hex(mac[:n]), v["mac"], v["name"])
        eq(hashing.hmac_sha256(bytearray(key), memoryview(data)), mac, v["name"] + " (bytearray/memoryview)")
        if v["name"].startswith("RFC 4231 case"):
            cases += 1
    eq(cases, 7, "RFC 4231 cases")


def test_non_bytes_input_is_a_type_error():
    fns = (
        hashing.sha256,
        hashing.ripemd160,
        hashing.ripemd160_pure,
        hashing.hash160,
        lambda x: hashing.hmac_sha256(x, b"data"),
        lambda x: hashing.hmac_sha256(b"key", x),
    )
    for bad in ("abc", "", 0, None, [1, 2, 3], 1.5):
        for fn in fns:
            e = raises(TypeError, fn, bad)
            if "expected bytes, bytearray or memoryview" not in str(e):
                raise AssertionError("unexpected message: %s" % e)


def test_ripemd160_viper_equals_pure_at_every_length_to_three_blocks():
    if not _VIPER:
        return
    data = bytes([(i * 7 + 3) & 0xFF for i in range(193)])
    for n in range(len(data) + 1):
        eq(hashing.ripemd160_viper(data[:n]), hashing.ripemd160_pure(data[:n]), "length %d" % n)
