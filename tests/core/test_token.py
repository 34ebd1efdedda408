"""amiko_core.token on CPython: token -> txid vectors, matching, malformed input."""

import hashlib
import json
from binascii import unhexlify
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amiko_core import token
from amiko_core.errors import AmikoError, DecodeError
from amiko_core.hashing import ripemd160_pure

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "token.json").read_text())
PAIRS = VECTORS["pairs"]
NON_MATCHING = VECTORS["non_matching"]


def _ids(vs):
    return [v["name"] for v in vs]


def test_sizes():
    assert token.TOKEN_SIZE == 32
    assert token.TXID_SIZE == 20


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("v", PAIRS, ids=_ids(PAIRS))
def test_transaction_id_vectors(v, wrap):
    t = unhexlify(v["token"])
    txid = token.transaction_id(wrap(t))
    assert type(txid) is bytes
    assert txid.hex() == v["txid"]
    assert txid == ripemd160_pure(hashlib.sha256(t).digest())


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("v", PAIRS, ids=_ids(PAIRS))
def test_token_matches_its_txid(v, wrap):
    assert token.token_matches(wrap(unhexlify(v["token"])), wrap(unhexlify(v["txid"]))) is True


@pytest.mark.parametrize("v", NON_MATCHING, ids=_ids(NON_MATCHING))
def test_non_matching_vectors(v):
    assert token.token_matches(unhexlify(v["token"]), unhexlify(v["txid"])) is False
    assert token.token_matches(memoryview(unhexlify(v["token"])), bytearray(unhexlify(v["txid"]))) is False


@pytest.mark.parametrize("bad", VECTORS["bad_tokens"])
def test_transaction_id_rejects_wrong_lengths(bad):
    with pytest.raises(DecodeError) as info:
        token.transaction_id(unhexlify(bad))
    assert isinstance(info.value, AmikoError) and isinstance(info.value, ValueError)
    assert info.value.reason == "token: expected 32 bytes, got %d bytes" % (len(bad) // 2)


@pytest.mark.parametrize("bad", ["x" * 32, "", 0, 2**255, None, list(range(32)), tuple(range(32)), 1.0, object()])
def test_transaction_id_rejects_wrong_types(bad):
    with pytest.raises(DecodeError, match="^token: expected 32 bytes, got [A-Za-z]+$"):
        token.transaction_id(bad)


def test_transaction_id_counts_bytes_of_a_non_byte_memoryview():
    # 8 items of 4 bytes = 32 bytes: accepted as the 32 bytes it views.
    raw = bytes(range(32))
    words = memoryview(raw).cast("I")
    assert len(words) == 8
    assert token.transaction_id(words) == token.transaction_id(raw)
    # 32 items of 4 bytes = 128 bytes: not a token.
    with pytest.raises(DecodeError, match="got 128 bytes"):
        token.transaction_id(memoryview(bytes(128)).cast("I"))


WRONG = ["x" * 32, "x" * 20, None, 0, 12345, list(range(32)), list(range(20)), 1.0, object()]


@pytest.mark.parametrize("bad", WRONG)
def test_token_matches_is_false_for_wrong_types(bad):
    good = PAIRS[0]
    t = unhexlify(good["token"])
    x = unhexlify(good["txid"])
    assert token.token_matches(bad, x) is False
    assert token.token_matches(t, bad) is False
    assert token.token_matches(bad, bad) is False


def test_new_token_shape_and_randomness():
    tokens = [token.new_token() for _ in range(200)]
    assert all(type(t) is bytes and len(t) == 32 for t in tokens)
    assert len(set(tokens)) == 200
    # All 256 byte values turn up across 6400 random bytes (fails for a stuck or
    # narrow generator; the chance that a fair one misses a value is ~1e-9).
    assert len(set(b"".join(tokens))) == 256
    for t in tokens[:20]:
        txid = token.transaction_id(t)
        assert len(txid) == 20
        assert token.token_matches(t, txid)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=20, max_size=20))
def test_token_matches_random(t, other):
    txid = token.transaction_id(t)
    assert token.token_matches(t, txid) is True
    assert token.token_matches(t, other) is (other == txid)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_token_matches_never_raises(t, x):
    want = len(t) == 32 and len(x) == 20 and token.transaction_id(t) == x
    assert token.token_matches(t, x) is want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=40))
def test_constant_time_equal_is_equality(a, b):
    assert token.constant_time_equal(a, b) is (a == b)
    assert token.constant_time_equal(a, a) is True
    assert token.constant_time_equal(bytearray(a), memoryview(b)) is (a == b)


def test_constant_time_equal_different_lengths():
    assert token.constant_time_equal(b"abc", b"abcd") is False
    assert token.constant_time_equal(b"", b"\x00") is False
    assert token.constant_time_equal(b"", b"") is True


@pytest.mark.parametrize("bad", ["abc", None, 0, [1, 2, 3]])
def test_constant_time_equal_rejects_non_bytes(bad):
    with pytest.raises(TypeError, match="expected two bytes-like values"):
        token.constant_time_equal(bad, b"abc")
    with pytest.raises(TypeError, match="expected two bytes-like values"):
        token.constant_time_equal(b"abc", bad)


class _CountingBytes(bytes):
    """bytes that counts how many of its positions were read."""

    def __new__(cls, value):
        obj = super().__new__(cls, value)
        obj.reads = set()
        return obj

    def __getitem__(self, i):
        self.reads.add(i)
        return super().__getitem__(i)


@pytest.mark.parametrize("first_difference", [0, 1, 15, 31, None])
def test_constant_time_equal_reads_every_byte(first_difference):
    a = _CountingBytes(bytes(32))
    other = bytearray(32)
    if first_difference is not None:
        other[first_difference] = 1
        other[31] = 1
    b = _CountingBytes(bytes(other))
    assert token.constant_time_equal(a, b) is (first_difference is None)
    assert a.reads == set(range(32))
    assert b.reads == set(range(32))
