"""amiko_core.cbor under MicroPython: shared vectors, round trips, encoder
errors and a seeded mutation fuzz (value or DecodeError, nothing else)."""

from mptest import XorShift32, eq, from_json, raises, strict_eq, unhex, vectors

from amiko_core import cbor
from amiko_core.errors import DecodeError, EncodeError


def _limits(vec):
    return vec.get("limits", {})


def test_valid_vectors():
    for vec in vectors("cbor")["valid"]:
        data = unhex(vec["hex"])
        value = from_json(vec["value"])
        got = cbor.loads(data, **_limits(vec))
        if not strict_eq(got, value):
            raise AssertionError("loads %s: got %r" % (vec["hex"][:40], got))
        eq(cbor.dumps(value), data, "dumps " + vec["hex"][:40])


def test_invalid_vectors():
    n = 0
    for vec in vectors("cbor")["invalid"]:
        e = raises(DecodeError, cbor.loads, unhex(vec["hex"]), **_limits(vec))
        if vec["reason"] not in e.reason or not e.reason.startswith("cbor: "):
            raise AssertionError("%s (%s): reason %r" % (vec["hex"][:40], vec["why"], e.reason))
        n += 1
    if n < 100:
        raise AssertionError("too few invalid vectors: %d" % n)


def test_round_trips():
    samples = [
        0, 1, 23, 24, 255, 256, 65535, 65536, 4294967295, 4294967296, 18446744073709551615,
        -1, -24, -25, -256, -257, -4294967296, -4294967297, -18446744073709551616,
        True, False, None, b"", b"\x00\xff", "", "a\u00fc\u6c34\U00010151", [], {},
        [1, [2, [3, []]], {"k": b"v"}], {10: 1, 100: 2, -1: 3, "z": 4, "aa": 5, "": None},
        {"list": [True, False, None], 7: {"x": -7}}, "x" * 300, b"y" * 5000,
    ]
    for obj in samples:
        data = cbor.dumps(obj)
        got = cbor.loads(data, max_size=8192, max_str=8192)
        if not strict_eq(got, obj):
            raise AssertionError("round trip of %r" % (obj,))
    eq(cbor.dumps((1, bytearray(b"ab"))), unhex("82014261" + "62"), "tuple and bytearray")
    eq(cbor.loads(bytearray(unhex("8201" + "4102"))), [1, b"\x02"], "bytearray input")
    eq(cbor.loads(memoryview(unhex("0063616263"))[1:]), "abc", "memoryview input")


def test_encode_rejects():
    cyclic = []
    cyclic.append(cyclic)
    deep = []
    for _ in range(cbor.MAX_ENCODE_DEPTH):
        deep = [deep]
    for obj in [1.5, 18446744073709551616, -18446744073709551617, {True: 1}, {1.0: 2}, {b"k": 1},
                {None: 1}, {(1,): 1}, object(), set(), cyclic, deep]:
        e = raises(EncodeError, cbor.dumps, obj)
        if not e.reason.startswith("cbor: "):
            raise AssertionError(e.reason)


def test_hostile_lengths_and_depth():
    big = {"max_size": 1 << 70, "max_str": 1 << 70, "max_items": 1 << 70}
    for h in ["5bffffffffffffffff", "7bffffffffffffffff00", "9bffffffffffffffff00", "bbffffffffffffffff0000",
              "9affffffff", "5a7fffffff00", "81bb7fffffffffffffff0000"]:
        raises(DecodeError, cbor.loads, unhex(h))
        raises(DecodeError, cbor.loads, unhex(h), **big)
    deep = b"\x81" * 1000 + b"\x00"
    e = raises(DecodeError, cbor.loads, deep, max_size=len(deep))
    eq(e.reason, "cbor: nesting deeper than max_depth 16 at offset 16", "depth reason")
    value = cbor.loads(deep, max_size=len(deep), max_depth=1000, max_items=1000)
    for _ in range(1000):
        value = value[0]
    eq(value, 0, "deep value")


def _check_decoder(data, **limits):
    """Value or DecodeError; an accepted input is exactly the canonical encoding of its value."""
    try:
        value = cbor.loads(data, **limits)
    except DecodeError:
        return 0
    if cbor.dumps(value) != bytes(data):
        raise AssertionError("accepted a non-canonical input %r" % bytes(data))
    return 1


def test_mutation_fuzz():
    rng = XorShift32(0x2545F491)
    seeds = [unhex(v["hex"]) for v in vectors("cbor")["valid"] if len(v["hex"]) <= 200]
    interesting = [0x00, 0x17, 0x18, 0x1B, 0x1F, 0x3B, 0x40, 0x5B, 0x60, 0x7B, 0x80, 0x9B, 0xA0, 0xBB,
                   0xC0, 0xF4, 0xF6, 0xF7, 0xF9, 0xFF, 0x80, 0xC3, 0xED]
    accepted = 0
    total = 3000
    for _ in range(total):
        data = bytearray(seeds[rng.below(len(seeds))])
        for _ in range(1 + rng.below(3)):
            op = rng.below(4)
            i = rng.below(len(data) + 1)
            byte = interesting[rng.below(len(interesting))] if rng.below(2) else rng.below(256)
            if op == 0 and i < len(data):
                data[i] = byte
            elif op == 1 and i < len(data):
                data[i] ^= 1 << rng.below(8)
            elif op == 2:
                data = data[:i] + bytearray([byte]) + data[i:]
            else:
                data = data[:i]
        accepted += _check_decoder(data)
        _check_decoder(data, max_depth=2, max_items=4, max_str=3)
    # the loop must exercise both outcomes
    if not 0 < accepted < total:
        raise AssertionError("accepted %d of %d mutations" % (accepted, total))
