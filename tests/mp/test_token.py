"""amiko_core.token on MicroPython: the same vectors as tests/core/test_token.py."""

from amiko_core import token
from amiko_core.errors import AmikoError, DecodeError
from mptest import eq, raises, unhex, vectors

V = vectors("token")


def test_sizes():
    eq(token.TOKEN_SIZE, 32, "TOKEN_SIZE")
    eq(token.TXID_SIZE, 20, "TXID_SIZE")


def test_transaction_id_vectors():
    for v in V["pairs"]:
        t = unhex(v["token"])
        want = unhex(v["txid"])
        eq(token.transaction_id(t), want, v["name"])
        eq(token.transaction_id(bytearray(t)), want, v["name"] + " (bytearray)")
        eq(token.transaction_id(memoryview(t)), want, v["name"] + " (memoryview)")


def test_token_matches_its_txid():
    for v in V["pairs"]:
        t = unhex(v["token"])
        x = unhex(v["txid"])
        eq(token.token_matches(t, x), True, v["name"])
        eq(token.token_matches(memoryview(t), bytearray(x)), True, v["name"] + " (memoryview/bytearray)")


def test_non_matching_vectors():
    for v in V["non_matching"]:
        eq(token.token_matches(unhex(v["token"]), unhex(v["txid"])), False, v["name"])


def test_transaction_id_rejects_wrong_lengths():
    for bad in V["bad_tokens"]:
        e = raises(DecodeError, token.transaction_id, unhex(bad))
        eq(isinstance(e, AmikoError) and isinstance(e, ValueError), True, "error type")
        eq(e.reason, "token: expected 32 bytes, got %d bytes" % (len(bad) // 2), "reason")


def test_wrong_types():
    good = V["pairs"][0]
    t = unhex(good["token"])
    x = unhex(good["txid"])
    for bad in ("x" * 32, "x" * 20, "", 0, None, list(range(32)), 1.0):
        raises(DecodeError, token.transaction_id, bad)
        eq(token.token_matches(bad, x), False, "bad token %r" % (bad,))
        eq(token.token_matches(t, bad), False, "bad txid %r" % (bad,))
        raises(TypeError, token.constant_time_equal, bad, b"abc")
        raises(TypeError, token.constant_time_equal, b"abc", bad)


def test_new_token():
    tokens = [token.new_token() for _ in range(50)]
    for t in tokens:
        eq(type(t), bytes, "token type")
        eq(len(t), 32, "token length")
        eq(token.token_matches(t, token.transaction_id(t)), True, "fresh token matches its txid")
    eq(len(set(tokens)), 50, "distinct tokens")


def test_constant_time_equal():
    eq(token.constant_time_equal(b"", b""), True, "empty")
    eq(token.constant_time_equal(b"abc", b"abc"), True, "equal")
    eq(token.constant_time_equal(b"abc", bytearray(b"abc")), True, "bytes/bytearray")
    eq(token.constant_time_equal(b"abc", memoryview(b"xabc")[1:]), True, "memoryview slice")
    eq(token.constant_time_equal(b"abc", b"abd"), False, "last differs")
    eq(token.constant_time_equal(b"abc", b"xbc"), False, "first differs")
    eq(token.constant_time_equal(b"abc", b"abcd"), False, "length differs")
