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


@pytest.mark.parametrize("v", V["good"], ids=lambda v: v["name"])
def test_good_vectors(v):
    msg = m.decode(v["type"], bytes.fromhex(v["body"]))
    assert m.encode(msg).hex() == v["body"]
    assert m.to_frame(msg).hex() == v["frame"]
    if v["mac"] is not None:
        body = {k: val for k, val in cbor.loads(bytes.fromhex(v["body"])).items() if k != max(cbor.loads(bytes.fromhex(v["body"])))}
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
       st.integers(1, m.MAX_AMOUNT), st.integers(0, 7))
def test_any_single_field_change_breaks_the_mac(counter, action, txid, amount, which):
    msg = wl.auth(KEY, "w-x", counter, action, txid, amount, "mp")
    fields = dict(msg.fields)
    changes = {"wallet": "w-y", "counter": (counter + 1) % 2**64, "action": (action + 1) % 5,
               "txid": bytes([txid[0] ^ 1]) + txid[1:], "amount": amount % m.MAX_AMOUNT + 1,
               "meeting_point": "mq", "token": bytes(32), "mac": bytes(32)}
    name = list(changes)[which]
    fields[name] = changes[name]
    assert not wl.verify(KEY, m.Message(wl.AUTH, fields))


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
