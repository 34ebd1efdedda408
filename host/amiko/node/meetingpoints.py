"""Meeting-point ids bound to node keys, and the meeting point's signature on HaveRoute.

A meeting point id is NAME@KEY: NAME an id (amiko_core.ids, ":" allowed), KEY the
33-byte compressed secp256k1 public key of the node that is the meeting point, as 66
lower-case hex digits (one spelling per key, so ids compare as strings). Only the holder
of KEY's secret can sign for it, so a node that claims another node's meeting point
cannot complete a route toward it (the original's vulnerability 6).

- make(name, pubkey) -> id; key_of(id) -> 33 bytes
- problem(id) -> why it is not NAME@KEY, or None; check(id) -> id, or AmikoError
- own(value, pubkey) -> the id of one of this node's own meeting points: NAME becomes
  NAME@<own key>; NAME@<own key> stays; NAME@<another key> is refused (AmikoError).
- have_route_signed_bytes(txid, side, mp, amount): cbor [HAVE_ROUTE_TAG, txid, side, mp,
  amount]. txid (a fresh hash160 per payment) and side bind the signature to one half of
  one payment, mp and amount to what was routed; the deadline is left out because every
  payer-side hop changes it.
- sign_have_route(identity, txid, side, mp, amount) -> 64 bytes (Identity.sign)
- have_route_problem(signature, txid, side, mp, amount) -> why a HaveRoute's signature
  does not prove mp's holder routed this half (missing, not by mp's key, over other
  fields), or None when it does (identity.verify).
"""

from amiko_core import cbor
from amiko_core.errors import AmikoError
from amiko_core.ids import MAX_ID, id_problem

HAVE_ROUTE_TAG = "amiko have-route v1"
KEY_HEX = 66  # a 33-byte compressed public key
_HEX = "0123456789abcdef"


def make(name, pubkey):
    return "%s@%s" % (name, bytes(pubkey).hex())


def problem(mp):
    """Why mp is not NAME@KEY (KEY: 66 lower-case hex digits of a compressed public key), or None."""
    if type(mp) is not str:
        return "must be text, got %s" % type(mp).__name__
    name, at, key = mp.rpartition("@")
    if not at:
        return "%r has no @KEY: a meeting point is named NAME@KEY by its node's public key" % mp
    p = id_problem(name, ":", MAX_ID)
    if p:
        return "%r: name %s" % (mp, p)
    if len(key) != KEY_HEX or any(c not in _HEX for c in key) or key[:2] not in ("02", "03"):
        return "%r: KEY must be the 66 lower-case hex digits of a compressed public key (02... or 03...)" % mp
    return None


def check(mp):
    p = problem(mp)
    if p:
        raise AmikoError("meeting point id %s" % p)
    return mp


def key_of(mp):
    return bytes.fromhex(check(mp).rpartition("@")[2])


def own(value, pubkey):
    """The id of a meeting point this node (public key pubkey) is: NAME or NAME@<own key>."""
    if type(value) is str and "@" not in value:
        p = id_problem(value, ":", MAX_ID)
        if p:
            raise AmikoError("meeting point name %r %s" % (value, p))
        return make(value, pubkey)
    check(value)
    if key_of(value) != bytes(pubkey):
        raise AmikoError("meeting point %s is named by another node's key: a node can only be a meeting point "
                         "under its own key %s (give just the name, e.g. %s)"
                         % (value, bytes(pubkey).hex(), value.rpartition("@")[0]))
    return value


def have_route_signed_bytes(txid, side, mp, amount):
    return cbor.dumps([HAVE_ROUTE_TAG, bytes(txid), side, mp, amount])


def sign_have_route(identity, txid, side, mp, amount):
    return identity.sign(have_route_signed_bytes(txid, side, mp, amount))


def have_route_problem(signature, txid, side, mp, amount):
    from amiko.node import identity  # the curve library: only where a signature is checked

    if signature is None:
        return "it carries no signature of the meeting point %s" % mp
    p = problem(mp)
    if p:
        return "the meeting point id %s" % p
    key = key_of(mp)
    if not identity.verify(key, have_route_signed_bytes(txid, side, mp, amount), signature):
        return ("its signature is not the meeting point's (key %s...) over this transaction, side and amount"
                % key.hex()[:16])
    return None
