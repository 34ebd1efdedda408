"""The provider vouches for a wallet's payee: the payee's signed Receipt, checked before routing.

A wallet cannot afford secp256k1 per tap; it binds the payee's key and the hash of the signed
Receipt into its Auth (amiko_core.walletlink) and hands the Receipt itself over with the
route Auth. problem(auth) says why that Receipt must not be paid (None: it may):
  - it is missing or does not decode as a Receipt;
  - sha256(messages.receipt_signed_bytes(receipt)) is not the Auth's receipt_hash;
  - it is not this payment (txid, amount, offered meeting points) or names another payee key;
  - its signature does not verify against that payee key (ECDSA over that same hash, 64-byte
    r || s, low-S, with libsecp256k1 through coincurve).

Table wallet_receipts(txid PK, payee_key, receipt_hash, payee): what a route was authorised
for; every later Auth for the txid must name the same payee key and receipt hash (bound(...)).
"""

import hashlib

from coincurve import PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact

from amiko_core import messages as m
from amiko_core.errors import DecodeError

from amiko.node import store as _store

SCHEMA = """
CREATE TABLE IF NOT EXISTS wallet_receipts (
    txid          BLOB PRIMARY KEY,
    payee_key     BLOB NOT NULL,
    receipt_hash  BLOB NOT NULL,
    payee         TEXT
);
"""

_store.register_schema(SCHEMA)


def signature_ok(payee_key, digest, signature):
    """True only for a valid low-S 64-byte r || s signature by payee_key over digest (32 bytes)."""
    try:
        if len(signature) != 64 or len(digest) != 32:
            return False
        der = cdata_to_der(deserialize_compact(bytes(signature)))
        return PublicKey(bytes(payee_key)).verify(der, bytes(digest), hasher=None)
    except Exception:  # an invalid point or signature encoding from a hostile payee
        return False


def problem(auth):
    """Why the Receipt an Auth{route} carries must not be paid, or None (see the module doc)."""
    if auth.receipt is None:
        return "the authorisation carries no receipt: the payee cannot be vouched for"
    try:
        r = m.decode(m.RECEIPT, auth.receipt)
    except DecodeError as e:
        return "the receipt does not decode: %s" % e.reason
    digest = hashlib.sha256(m.receipt_signed_bytes(r)).digest()
    if digest != auth.receipt_hash:
        return "the receipt's hash does not match the authorisation"
    if r.txid != auth.txid or r.amount != auth.amount or auth.meeting_point not in r.meeting_points:
        return "the receipt is for another payment (transaction, amount or meeting point)"
    if r.payee_key != auth.payee_key:
        return "the receipt names another payee key than the authorisation"
    if r.signature is None:
        return "the payee did not sign its receipt"
    if not signature_ok(r.payee_key, digest, r.signature):
        return "the payee's receipt signature does not verify against its key"
    return None


def payee_name(auth):
    try:
        return m.decode(m.RECEIPT, auth.receipt).payee
    except (DecodeError, TypeError):
        return None


def record(db, auth):
    db.execute("INSERT OR REPLACE INTO wallet_receipts (txid, payee_key, receipt_hash, payee) VALUES (?, ?, ?, ?)",
               (auth.txid, auth.payee_key, auth.receipt_hash, payee_name(auth)))


def bound(db, auth):
    """True if auth names the payee key and receipt hash its txid's route was authorised for
    (or no route was: then there is nothing to differ from)."""
    row = db.execute("SELECT payee_key, receipt_hash FROM wallet_receipts WHERE txid = ?", (auth.txid,)).fetchone()
    return row is None or (bytes(row[0]) == auth.payee_key and bytes(row[1]) == auth.receipt_hash)
