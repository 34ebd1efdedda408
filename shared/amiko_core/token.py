"""Commit tokens and transaction IDs of the payment link.

The payee makes a secret commit token of TOKEN_SIZE (32) random bytes and
publishes its transaction ID: hash160(token) = RIPEMD160(SHA256(token)),
TXID_SIZE (20) bytes. Releasing the token commits the transaction; whoever
receives a token must check it against the transaction ID (token_matches)
before treating the payment as done.

- new_token() -> 32 bytes from os.urandom.
- transaction_id(token) -> 20 bytes. A token that is not bytes, bytearray or
  memoryview of exactly 32 bytes raises DecodeError: a token is opaque bytes,
  and one of the wrong shape is unacceptable input, wherever it came from.
- constant_time_equal(a, b) -> bool for two bytes-like values (TypeError for
  anything else). Equal lengths: every byte pair is compared, no early exit,
  so the time does not reveal where the first difference is. Different
  lengths return False at once (lengths are not secret here).
- token_matches(token, txid) -> bool: hash160(token) == txid, compared in
  constant time. Returns False, never raises, for a token that is not 32
  bytes or a txid that is not 20 bytes (including non-bytes values).
"""

import os

from amiko_core.errors import DecodeError
from amiko_core.hashing import hash160

TOKEN_SIZE = 32
TXID_SIZE = 20


def _is_bytes_like(value):
    return isinstance(value, (bytes, bytearray, memoryview))


def _as_bytes(value):
    # bytes(memoryview) gives the viewed bytes whatever the view's item format,
    # so len() below counts bytes, not items.
    return bytes(value) if isinstance(value, memoryview) else value


def new_token():
    """A fresh secret commit token: TOKEN_SIZE bytes from the OS's random source."""
    return os.urandom(TOKEN_SIZE)


def transaction_id(token):
    """The transaction ID of a commit token: hash160(token), TXID_SIZE bytes."""
    if not _is_bytes_like(token):
        raise DecodeError("token: expected %d bytes, got %s" % (TOKEN_SIZE, type(token).__name__))
    token = _as_bytes(token)
    if len(token) != TOKEN_SIZE:
        raise DecodeError("token: expected %d bytes, got %d bytes" % (TOKEN_SIZE, len(token)))
    return hash160(token)


def constant_time_equal(a, b):
    """True if the byte strings a and b are equal; the time depends only on their lengths."""
    if not (_is_bytes_like(a) and _is_bytes_like(b)):
        raise TypeError(
            "constant_time_equal: expected two bytes-like values, got %s and %s"
            % (type(a).__name__, type(b).__name__)
        )
    a = _as_bytes(a)
    b = _as_bytes(b)
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def token_matches(token, txid):
    """True if txid is the transaction ID of token; False for anything malformed."""
    if not (_is_bytes_like(token) and _is_bytes_like(txid)):
        return False
    token = _as_bytes(token)
    txid = _as_bytes(txid)
    if len(token) != TOKEN_SIZE or len(txid) != TXID_SIZE:
        return False
    return constant_time_equal(hash160(token), txid)
