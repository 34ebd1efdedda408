"""walletlink on CPython: vectors, MAC against the standard library's hmac, hostile input."""

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amiko_core import cbor
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.errors import AmikoError, DecodeError

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "walletlink.json").read_text())
KEY = bytes.fromhex(V["key"])
TAGS = {42: V["auth_tag"], 43: V["status_tag"], 46: V["ack_tag"]}
MAC_KEYS = {42: 8, 43: 12, 46: 2}  # the mac field's key per type


@pytest.mark.parametrize("v", V["good"], ids=lambda v: v["name"])
def test_good_vectors(v):
    msg = m.decode(v["type"], bytes.fromhex(v["body"]))
    assert m.encode(msg).hex() == v["body"]
    assert m.to_frame(msg).hex() == v["frame"]
    if v["mac"] is not None:
        body = {k: val for k, val in cbor.loads(bytes.fromhex(v["body"])).items() if k != MAC_KEYS[v["type"]]}
        signed = cbor.dumps([TAGS[v["type"]], body])
        assert signed.hex() == v["signed"]
        assert hmac.new(KEY, signed, hashlib.sha256).hexdigest() == v["mac"]
        assert wl.verify(KEY, msg)
        assert not wl.verify(bytes(32), msg)


@pytest.mark.parametrize("v", V["tampered"], ids=lambda v: v["name"])
def test_tampered(v):
    assert not wl.verify(KEY, m.decode(v["type"], bytes.fromhex(v["body"])))


@pytest.mark.parametrize("v", V["malformed"], ids=lambda v: v["name"])
def test_malformed(v):
    with pytest.raises(DecodeError) as e:
        m.decode(v["type"], bytes.fromhex(v["body"]))
    assert e.value.reason


def test_types_are_registered_and_distinct_tags():
    for code in range(40, 50):
        assert m.name_of(code)
    assert len({V["auth_tag"], V["status_tag"], V["ack_tag"]}) == 3
    with pytest.raises(AmikoError):
        wl.signed_bytes(m.Message(wl.TAP))
    with pytest.raises(AmikoError):
        wl.mac(b"x" * 31, m.decode(42, bytes.fromhex(V["good"][0]["body"])))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([40, 41, 42, 43, 44, 45, 46, 47, 48]), st.binary(max_size=200))
def test_random_bodies_only_decode_error(code, body):
    try:
        m.decode(code, body)
    except DecodeError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 4), st.binary(min_size=20, max_size=20),
       st.integers(1, m.MAX_AMOUNT), st.integers(0, 11))
def test_any_single_field_change_breaks_the_mac(counter, action, txid, amount, which):
    pk = bytes.fromhex(V["receipt"]["payee_key"])
    rh = bytes.fromhex(V["receipt"]["hash"])
    msg = wl.auth(KEY, "w-x", counter, action, txid, amount, "mp", pk, rh, wl.AUTO, receipt=b"r")
    fields = dict(msg.fields)
    changes = {"wallet": "w-y", "counter": (counter + 1) % 2**64, "action": (action + 1) % 5,
               "txid": bytes([txid[0] ^ 1]) + txid[1:], "amount": amount % m.MAX_AMOUNT + 1,
               "meeting_point": "mq", "token": bytes(32), "mac": bytes(32), "payee_key": pk[:-1] + bytes([pk[-1] ^ 1]),
               "receipt_hash": bytes(32), "confirm": wl.BUTTON, "receipt": b"s"}
    name = list(changes)[which]
    fields[name] = changes[name]
    assert not wl.verify(KEY, m.Message(wl.AUTH, fields))


def test_receipt_vector_hash_tag_and_signature():
    from amiko.node import receipts

    r = V["receipt"]
    rec = m.decode(m.RECEIPT, bytes.fromhex(r["body"]))
    assert m.receipt_signed_bytes(rec).hex() == r["signed"]
    assert wl.receipt_hash(rec) == hashlib.sha256(bytes.fromhex(r["signed"])).digest() == bytes.fromhex(r["hash"])
    assert wl.payee_tag(rec.payee_key).hex() == r["payee_tag"] and rec.payee == "Corner cafe"
    assert receipts.signature_ok(rec.payee_key, wl.receipt_hash(rec), rec.signature)
    forged = m.decode(m.RECEIPT, bytes.fromhex(r["forged_body"]))
    assert wl.receipt_hash(forged) == wl.receipt_hash(rec)  # the same signed bytes ...
    assert not receipts.signature_ok(forged.payee_key, wl.receipt_hash(forged), forged.signature)  # ... another key
    route = m.decode(42, bytes.fromhex(V["good"][0]["body"]))
    assert receipts.problem(route) is None
    assert "does not verify" in receipts.problem(m.Message(wl.AUTH, dict(route.fields, receipt=bytes.fromhex(
        r["forged_body"]))))


def test_payee_key_of_urls():
    for url, key in V["urls"]["keys"]:
        got = wl.payee_key_of(url)
        assert (got.hex() if got else None) == key
    for url in V["urls"]["bad_keys"]:
        with pytest.raises(DecodeError):
            wl.payee_key_of(url)


def test_payment_id_of_agrees_with_the_url_parser():
    from amiko_core.errors import URLError
    from amiko_core.url import parse_pay

    for url, pid in V["urls"]["good"]:
        assert wl.payment_id_of(url) == pid == parse_pay(url).path
    for url in V["urls"]["bad"]:
        with pytest.raises(DecodeError):
            wl.payment_id_of(url)
        with pytest.raises(URLError):
            parse_pay(url)


def test_table_follows_the_register_rules():
    # walletlink writes its schema out (the wallet must not load linkschema); check it as
    # linkschema.register would
    from amiko_core import linkschema

    for code, name, fields in wl.TABLE:
        saved = linkschema.SCHEMA.pop(code)
        try:
            linkschema.register(code, name, fields)
            assert linkschema.SCHEMA[code] == saved == (name, fields)
        finally:
            linkschema.SCHEMA[code] = saved
