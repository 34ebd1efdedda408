"""amiko_core.cbor on CPython: shared vectors, agreement with cbor2 (canonical=True),
hostile input (fuzz, mutations, huge declared lengths, deep nesting)."""

import array
import json
import time
import tracemalloc
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amiko_core import cbor
from amiko_core.errors import AmikoError, DecodeError, EncodeError
from mptest import from_json, strict_eq  # the vectors' helpers, shared with the MicroPython tests

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "cbor.json").read_text(encoding="utf-8"))
LIFTED = {"max_size": 1 << 20, "max_depth": 1000, "max_items": 1 << 20, "max_str": 1 << 20}
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _id(v):
    return v.get("why", v["hex"][:40]) + ":" + v["hex"][:16]


# ---- vectors ----

@pytest.mark.parametrize("vec", VECTORS["valid"], ids=_id)
def test_valid_vector(vec):
    data = bytes.fromhex(vec["hex"])
    value = from_json(vec["value"])
    assert strict_eq(cbor.loads(data, **vec.get("limits", {})), value)
    assert cbor.dumps(value) == data
    assert cbor2.dumps(value, canonical=True) == data  # the vector itself is right


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=_id)
def test_invalid_vector(vec):
    data = bytes.fromhex(vec["hex"])
    with pytest.raises(DecodeError) as info:
        cbor.loads(data, **vec.get("limits", {}))
    assert vec["reason"] in info.value.reason
    assert info.value.reason.startswith("cbor: ")


def test_vectors_cover_every_rejection_class():
    reasons = {v["reason"] for v in VECTORS["invalid"]}
    for r in ["float", "tag", "simple value", "undefined", "indefinite length", "non-shortest",
              "reserved additional info", "break", "duplicate map key", "out of canonical order",
              "map key must be", "UTF-8", "truncated", "trailing", "max_size", "max_depth", "max_items", "max_str"]:
        assert r in reasons


# ---- agreement with cbor2 ----

ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
edge_ints = st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
                             -1, -24, -25, -256, -257, -65537, -(2**32), -(2**32) - 1, -(2**64)])
scalars = st.none() | st.booleans() | ints | edge_ints | st.binary(max_size=300) | st.text(max_size=30)
keys = ints | edge_ints | st.text(max_size=8)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(keys, inner, max_size=6), max_leaves=40
)


@FUZZ
@given(values)
def test_agrees_with_cbor2(obj):
    ours = cbor.dumps(obj)
    theirs = cbor2.dumps(obj, canonical=True)
    assert ours == theirs
    assert strict_eq(cbor2.loads(ours), obj)
    assert strict_eq(cbor.loads(theirs, **LIFTED), obj)


@FUZZ
@given(st.dictionaries(keys, st.integers(0, 3), max_size=20))
def test_map_key_order_matches_cbor2(d):
    assert cbor.dumps(d) == cbor2.dumps(d, canonical=True)
    assert strict_eq(cbor.loads(cbor.dumps(d)), d)


def test_tuple_and_bytearray_encode_like_cbor2():
    obj = (1, bytearray(b"ab"), [()])
    assert cbor.dumps(obj) == cbor2.dumps(obj, canonical=True) == bytes.fromhex("83 01 42 6162 81 80")


# ---- encoder errors ----

def _cyclic():
    x = []
    x.append(x)
    return x


def _nested(levels):
    x = []
    for _ in range(levels - 1):
        x = [x]
    return x


@pytest.mark.parametrize(
    "obj",
    [1.0, float("nan"), 2**64, -(2**64) - 1, [2**70], {1: 2**64}, set(), object(), b"x".decode,
     {True: 1}, {1.0: 1}, {(1,): 1}, {b"k": 1}, {None: 1}, "\ud800", {"\udfff": 1}, _cyclic(),
     _nested(cbor.MAX_ENCODE_DEPTH + 1)],
    ids=lambda obj: type(obj).__name__ if type(obj) in (object, type(b"x".decode)) else repr(obj)[:60],
)
def test_encode_rejects(obj):
    with pytest.raises(EncodeError) as info:
        cbor.dumps(obj)
    assert info.value.reason.startswith("cbor: ")


def test_encode_depth_limit_edge():
    deep = _nested(cbor.MAX_ENCODE_DEPTH)
    assert cbor.dumps(deep) == b"\x81" * (cbor.MAX_ENCODE_DEPTH - 1) + b"\x80"
    assert cbor.dumps({"a": deep[0]}) == b"\xa1\x61\x61" + b"\x81" * (cbor.MAX_ENCODE_DEPTH - 2) + b"\x80"
    with pytest.raises(EncodeError):
        cbor.dumps({"a": deep})


def test_errors_are_value_errors():
    assert issubclass(DecodeError, AmikoError) and issubclass(DecodeError, ValueError)
    with pytest.raises(ValueError):
        cbor.loads(b"\xf9\x00\x00")


# ---- decoder input handling and limits ----

def test_bytes_like_inputs():
    assert cbor.loads(bytearray(b"\x82\x01\x41\x02")) == [1, b"\x02"]
    assert cbor.loads(memoryview(b"xx\x63abc")[2:]) == "abc"
    for bad in ["00", 0, None, [0], memoryview(array.array("H", [0x81, 0xFF00]))]:
        with pytest.raises(DecodeError):
            cbor.loads(bad)


HOSTILE = [
    "5b ffffffffffffffff", "7b ffffffffffffffff", "9b ffffffffffffffff", "bb ffffffffffffffff",
    "5b 7fffffffffffffff 00", "7a ffffffff 61", "9a ffffffff 00", "ba 7fffffff 0000",
    "81 9b ffffffffffffffff", "a1 61 61 bb 0000000100000000",
]


@pytest.mark.parametrize("hexs", HOSTILE)
@pytest.mark.parametrize("limits", [{}, {"max_str": 2**70, "max_items": 2**70, "max_size": 2**70}], ids=["default", "lifted"])
def test_huge_declared_lengths_fail_fast_without_allocation(hexs, limits):
    data = bytes.fromhex(hexs.replace(" ", ""))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DecodeError):
            cbor.loads(data, **limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 0.5
    assert peak < 64 * 1024


def test_deep_nesting():
    data = b"\x81" * 100000 + b"\x00"
    with pytest.raises(DecodeError, match="max_depth 16 at offset 16"):
        cbor.loads(data, max_size=len(data))
    # iterative: deep documents within the limits decode without recursion errors
    value = cbor.loads(data, max_size=len(data), max_depth=100000, max_items=100000)
    for _ in range(100000):
        assert type(value) is list and len(value) == 1
        value = value[0]
    assert value == 0


def test_many_items():
    many = b"\x9a\x00\x01\x00\x00" + b"\x00" * 65536
    with pytest.raises(DecodeError, match="max_items"):
        cbor.loads(many, max_size=len(many))
    assert cbor.loads(many, max_size=len(many), max_items=65536) == [0] * 65536
    # items are counted over the whole document, nested containers included
    nested = cbor.dumps([[0] * 100, {i: i for i in range(100)}, [[0]] * 27])
    assert cbor.loads(nested, max_items=3 + 100 + 100 + 27 + 27)
    with pytest.raises(DecodeError, match="max_items"):
        cbor.loads(nested, max_items=3 + 100 + 100 + 27 + 26)


def test_limits_edges():
    s = cbor.dumps("x" * 100)
    assert cbor.loads(s, max_str=100, max_size=len(s)) == "x" * 100
    with pytest.raises(DecodeError, match="max_str"):
        cbor.loads(s, max_str=99)
    with pytest.raises(DecodeError, match="max_size"):
        cbor.loads(s, max_size=len(s) - 1)


@FUZZ
@given(st.lists(st.integers(0x80, 0xFF) | st.integers(0, 0xFF) | st.sampled_from([0xC2, 0xE0, 0xED, 0xF0, 0xF4]), max_size=12))
def test_utf8_validation_agrees_with_cpython(byte_list):
    raw = bytes(byte_list)
    as_bytes = cbor.dumps(raw)
    data = bytes([as_bytes[0] ^ 0x40 ^ 0x60]) + as_bytes[1:]  # byte string head -> text string head
    try:
        want = raw.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(DecodeError, match="UTF-8"):
            cbor.loads(data)
    else:
        assert cbor.loads(data) == want


# ---- fuzzing: the only outcomes are a value or DecodeError ----

def _check_decoder(data, **limits):
    """Value or DecodeError; an accepted input is exactly the canonical encoding of its value."""
    try:
        value = cbor.loads(data, **limits)
    except DecodeError as e:
        assert e.reason.startswith("cbor: ")
        return None
    assert cbor.dumps(value) == bytes(data)
    assert strict_eq(cbor2.loads(bytes(data)), value)
    return value


@FUZZ
@given(st.binary(max_size=80))
def test_fuzz_random_bytes(data):
    _check_decoder(data)


# bytes that start interesting heads: small ints, 1..8-byte arguments, strings, containers, simple values
HEAD_BYTES = [0x00, 0x01, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x20, 0x38, 0x40, 0x41, 0x58, 0x60, 0x61, 0x62, 0x78,
              0x80, 0x81, 0x82, 0x98, 0xA0, 0xA1, 0xA2, 0xB8, 0xC0, 0xF4, 0xF5, 0xF6, 0xF7, 0xF9, 0xFF,
              0xC3, 0xE6, 0xED, 0xF0, 0xF4, 0x7F, 0x9F]


@FUZZ
@given(st.lists(st.sampled_from(HEAD_BYTES) | st.integers(0, 255), max_size=40))
def test_fuzz_head_soup(byte_list):
    _check_decoder(bytes(byte_list), max_depth=4, max_items=20, max_str=30)


@FUZZ
@given(values, st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_mutated_encodings(obj, mutations):
    data = bytearray(cbor.dumps(obj))
    for op, where, byte in mutations:
        i = where % (len(data) + 1)
        if op == 0 and i < len(data):
            data[i] = byte
        elif op == 1 and i < len(data):
            data[i] ^= 1 << (byte % 8)
        elif op == 2:
            data.insert(i, byte)
        elif op == 3:
            del data[i:]
    _check_decoder(data, **LIFTED)
    _check_decoder(data)
