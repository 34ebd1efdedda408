"""amiko_core.messages on CPython: the shared vectors (checked independently with cbor2 and
zlib), round trips of generated messages of every type, decode/construct agreement, the
docstring table against the schema, and hostile input (fuzz, field swaps, mutations)."""

import json
import re
import unicodedata
import zlib
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amiko_core import frame, url
from amiko_core import messages as m
from amiko_core.errors import DecodeError, EncodeError
from mptest import strict_eq, untag  # the vectors' helpers, shared with the MicroPython tests

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "messages.json").read_text(encoding="utf-8"))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _core_types():
    """The message types the core itself defines: host modules imported by other tests in
    this process register more (messages.register), so ask a fresh interpreter."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from amiko_core import messages; print(sorted(messages.SCHEMA))"],
                         capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


# The core's own message types: host and wallet modules imported by other tests register more.
CODES = sorted(_core_types())


def key_map(code, named):
    by_name = {f[1]: f for f in m.SCHEMA[code][1]}
    return {by_name[n][0]: v for n, v in named.items()}


def crc8(data):
    c = 0
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def frame_bytes(version, code, body):
    """The frame format of amiko_core.frame, written out independently."""
    head = b"\xa5\x4b" + bytes([version, code]) + len(body).to_bytes(2, "big")
    head += bytes([crc8(head)])
    return head + body + zlib.crc32(head[2:] + body).to_bytes(4, "big")


# ---- vectors ----

def _what(vec):
    return vec.get("what") or vec.get("name", "")


@pytest.mark.parametrize("vec", VECTORS["valid"], ids=_what)
def test_valid_vector(vec):
    fields = untag(vec["fields"])
    code = vec["type"]
    body = bytes.fromhex(vec["body"])
    # the vector itself is right: cbor2 and an independent frame writer agree with it
    assert cbor2.dumps(key_map(code, fields), canonical=True) == body
    assert frame_bytes(1, code, body).hex() == vec["frame"]
    msg = m.Message(code, fields)
    assert msg.type == code and msg.name == vec["name"] == m.name_of(code)
    assert m.encode(msg) == body
    assert m.to_frame(msg).hex() == vec["frame"]
    got = m.decode(code, body)
    assert got == msg and strict_eq(got.fields, fields)
    for f in m.SCHEMA[code][1]:
        assert strict_eq(getattr(got, f[1]), fields.get(f[1]))
    assert m.from_frame(frame.decode_one(bytes.fromhex(vec["frame"]))) == msg


def test_every_type_has_vectors():
    core = set(CODES)
    assert {v["type"] for v in VECTORS["valid"]} == core
    # and every optional field appears in some vector
    seen = {(v["type"], n) for v in VECTORS["valid"] for n in v["fields"]}
    assert seen == {(c, f[1]) for c in core for f in m.SCHEMA[c][1]}


def _field_level_named(code, body):
    """{python name: value} when the body is a map of known keys (so the rejection is per field)."""
    try:
        value = cbor2.loads(body)
    except Exception:
        return None
    if code not in m.SCHEMA or not isinstance(value, dict):
        return None
    by_key = {f[0]: f for f in m.SCHEMA[code][1]}
    if not all(type(k) is int and k in by_key for k in value):
        return None
    return {by_key[k][1]: v for k, v in value.items()}


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=_what)
def test_invalid_vector(vec):
    body = bytes.fromhex(vec["body"])
    with pytest.raises(DecodeError) as info:
        m.decode(vec["type"], body)
    assert vec["reason"] in info.value.reason
    assert info.value.reason.startswith("message ")
    named = _field_level_named(vec["type"], body)
    if named is not None and "field" in vec["reason"] and None not in named.values():
        with pytest.raises(EncodeError) as info:
            m.Message(vec["type"], named)
        assert vec["reason"] in info.value.reason


@pytest.mark.parametrize("vec", VECTORS["frames"], ids=_what)
def test_frame_vector(vec):
    fr = frame.decode_one(bytes.fromhex(vec["frame"]))
    with pytest.raises(DecodeError) as info:
        m.from_frame(fr)
    assert vec["reason"] in info.value.reason


@pytest.mark.parametrize("vec", VECTORS["construct"], ids=_what)
def test_construct_vector(vec):
    with pytest.raises(EncodeError) as info:
        m.Message(vec["type"], untag(vec["fields"]))
    assert vec["reason"] in info.value.reason


@pytest.mark.parametrize("vec", VECTORS["receipt_signed"])
def test_receipt_signed_vector(vec):
    fields = untag(vec["fields"])
    msg = m.Message(m.RECEIPT, fields)
    signed = bytes.fromhex(vec["signed"])
    assert m.receipt_signed_bytes(msg) == signed
    content = {k: v for k, v in key_map(m.RECEIPT, fields).items() if k != 7}
    assert cbor2.loads(signed) == [m.RECEIPT_SIGNING_TAG, content]


def test_docstring_table_is_the_schema():
    doc = m.__doc__
    table = doc[doc.index("---- ----") : doc.index("\nKinds")]
    headers = list(re.finditer(r"^\s*(\d+) ([A-Z]\w+)\s", table, re.M))
    assert [(int(h.group(1)), h.group(2)) for h in headers] == [(c, m.SCHEMA[c][0]) for c in CODES]
    for i, h in enumerate(headers):
        segment = table[h.end() - 1 : headers[i + 1].start() if i + 1 < len(headers) else len(table)]
        pairs = {(int(k), n) for k, n in re.findall(r"(?:^|\s{2}|, )(\d+) ([a-z_]+)\b", segment, re.M)}
        assert pairs == {(f[0], f[1]) for f in m.SCHEMA[int(h.group(1))][1]}, h.group(2)


# ---- generated messages ----

TEXT_CHARS = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\t")
HOSTS = st.sampled_from(["h", "shop.example", "10.0.0.1", "::1", "2001:db8::7", "x-1.y"])


def kind_strategy(kind):
    k = kind[0]
    if k == "amount":
        return st.integers(1, m.MAX_AMOUNT)
    if k == "uint":
        return st.integers(0, kind[1])
    if k == "bool":
        return st.booleans()
    if k == "text":
        return st.text(TEXT_CHARS, max_size=kind[1]).filter(lambda s: len(s.encode()) <= kind[1])
    if k == "id":
        return st.text(url.ID_CHARS + kind[1], min_size=1, max_size=64).filter(lambda s: s not in (".", ".."))
    if k == "bytes":
        return st.binary(min_size=kind[1], max_size=kind[2])
    if k == "list":
        return st.lists(kind_strategy(kind[1]), min_size=1, max_size=kind[2], unique=True)
    assert k == "url"
    ids = kind_strategy(m.ident())
    return st.builds(url.format_link, HOSTS, st.none() | st.integers(1, 65535), ids)


def fields_strategy(code):
    fields = m.SCHEMA[code][1]
    return st.fixed_dictionaries(
        {f[1]: kind_strategy(f[2]) for f in fields if f[3]},
        optional={f[1]: kind_strategy(f[2]) for f in fields if not f[3]},
    )


messages = st.sampled_from(CODES).flatmap(lambda c: fields_strategy(c).map(lambda f: m.Message(c, f)))


@SETTINGS
@given(messages)
def test_round_trip(msg):
    body = m.encode(msg)
    assert body == cbor2.dumps(key_map(msg.type, msg.fields), canonical=True)
    got = m.decode(msg.type, body)
    assert got == msg and strict_eq(got.fields, msg.fields)
    data = m.to_frame(msg)
    assert data == frame_bytes(1, msg.type, body)
    assert m.from_frame(frame.decode_one(data)) == msg
    assert repr(msg).startswith(msg.name + "(")


@SETTINGS
@given(fields_strategy(m.RECEIPT), st.binary(min_size=64, max_size=64))
def test_receipt_signature_is_not_signed(fields, sig):
    fields.pop("signature", None)
    unsigned = m.Message(m.RECEIPT, fields)
    signed = m.Message(m.RECEIPT, dict(fields, signature=sig))
    assert m.receipt_signed_bytes(unsigned) == m.receipt_signed_bytes(signed)
    assert cbor2.loads(m.receipt_signed_bytes(signed)) == [m.RECEIPT_SIGNING_TAG, key_map(m.RECEIPT, fields)]


# ---- hostile input ----

scalars = (
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=70)
    | st.text(max_size=70) | st.sampled_from([0, 1, 2, -1, m.MAX_AMOUNT, m.MAX_AMOUNT + 1, 2**64 - 1, "", ".", "a:b"])
)
map_keys = st.integers(-2, 10) | st.text(max_size=3)
cbor_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=10) | st.dictionaries(map_keys, inner, max_size=10),
    max_leaves=20,
)
# values a field can hold without hitting the body's CBOR limits (nesting, items, string size)
field_values = scalars | st.lists(scalars, max_size=10) | st.dictionaries(map_keys, scalars, max_size=10)


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=300))
def test_decode_any_bytes(code, data):
    try:
        msg = m.decode(code, data)
    except DecodeError as e:
        assert e.reason.startswith("message ")
        return
    assert m.encode(msg) == data  # only canonical bodies get through


@SETTINGS
@given(st.sampled_from(CODES + [0, 99, 255]), cbor_values)
def test_decode_any_cbor_value(code, value):
    data = cbor2.dumps(value, canonical=True)
    try:
        msg = m.decode(code, data)
    except DecodeError as e:
        assert e.reason.startswith("message ")
        return
    assert m.encode(msg) == data


@SETTINGS
@given(st.data())
def test_field_swap_names_the_field(data):
    """Replace one field of a valid message by any value: accepted only if valid for the kind,
    otherwise rejected by decode and by construction with the same reason naming the field."""
    msg = data.draw(messages)
    f = data.draw(st.sampled_from(m.SCHEMA[msg.type][1]))
    value = data.draw(field_values | kind_strategy(f[2]))
    named = dict(msg.fields)
    named[f[1]] = value
    body = cbor2.dumps(key_map(msg.type, named), canonical=True)
    try:
        got = m.decode(msg.type, body)
    except DecodeError as e:
        assert "message %s field %s (key %d) " % (msg.name, f[1], f[0]) in e.reason, e.reason
        if value is not None:
            with pytest.raises(EncodeError) as info:
                m.Message(msg.type, named)
            assert info.value.reason == e.reason
        return
    assert strict_eq(got.fields[f[1]], value)
    assert m.Message(msg.type, named) == got


@SETTINGS
@given(st.data())
def test_unknown_or_missing_key_is_named(data):
    msg = data.draw(messages)
    keys = key_map(msg.type, msg.fields)
    known = {f[0] for f in m.SCHEMA[msg.type][1]}
    extra = data.draw(st.integers(-5, 300).filter(lambda k: k not in known) | st.text(max_size=5))
    bad = dict(keys)
    bad[extra] = data.draw(field_values)
    with pytest.raises(DecodeError, match=re.escape("message %s has unknown field key" % msg.name)):
        m.decode(msg.type, cbor2.dumps(bad, canonical=True))
    required = [f for f in m.SCHEMA[msg.type][1] if f[3]]
    f = data.draw(st.sampled_from(required))
    del keys[f[0]]
    with pytest.raises(DecodeError) as info:
        m.decode(msg.type, cbor2.dumps(keys, canonical=True))
    assert info.value.reason == "message %s field %s (key %d) is required but missing" % (msg.name, f[1], f[0])


@SETTINGS
@given(st.characters(blacklist_categories=("Cs",)))
def test_text_character_rule(c):
    body = cbor2.dumps({1: "p", 2: "a" + c + "b"}, canonical=True)
    allowed = unicodedata.category(c) != "Cc" or c in "\t\n"
    try:
        m.decode(m.CANCEL, body)
        assert allowed
    except DecodeError as e:
        assert not allowed and "control character" in e.reason


@SETTINGS
@given(st.data())
def test_mutated_valid_bodies(data):
    vec = data.draw(st.sampled_from(VECTORS["valid"]))
    body = bytearray.fromhex(vec["body"])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.integers(0, 3))
        i = data.draw(st.integers(0, len(body)))
        if op == 0 and i < len(body):
            body[i] = data.draw(st.integers(0, 255))
        elif op == 1:
            body[i:i] = data.draw(st.binary(min_size=1, max_size=3))
        elif op == 2:
            del body[i : i + data.draw(st.integers(1, 3))]
        else:
            del body[i:]
    body = bytes(body)
    try:
        msg = m.decode(vec["type"], body)
    except DecodeError:
        return
    assert m.encode(msg) == body


# ---- the Message API and register() ----

def test_message_api():
    txid = bytes(range(20))
    a = m.Message(m.LOCK, {"txid": bytearray(txid), "side": 1, "amount": 5})
    assert a == m.Message(m.LOCK, txid=memoryview(txid), side=1, amount=5)
    assert type(a.txid) is bytes and a.amount == 5 and a.name == "Lock"
    assert a != m.Message(m.LOCK, txid=txid, side=0, amount=5)
    assert a != "Lock" and not (a == 5)
    r = m.Message(m.RECEIPT, id="p", amount=1, receipt="", txid=txid, meeting_points=("a", "b"), expires=None)
    assert r.meeting_points == ["a", "b"] and r.expires is None and "expires" not in r.fields
    assert repr(m.Message(m.PAY, id="x")) == "Pay(id='x')"
    with pytest.raises(AttributeError):
        r.token
    assert not hasattr(r, "nonsense") and hasattr(r, "signature")
    with pytest.raises(EncodeError, match="has no field 'token'"):
        m.Message(m.RECEIPT, dict(r.fields, token=bytes(32)))
    with pytest.raises(EncodeError, match="fields must be a dict"):
        m.Message(m.PAY, [("id", "x")])
    with pytest.raises(EncodeError, match="message type True is unknown"):
        m.Message(True, {"id": "x"})
    with pytest.raises(EncodeError, match="is not encodable as UTF-8"):
        m.Message(m.CANCEL, id="p", reason="\ud800")
    with pytest.raises(EncodeError):
        m.encode({"id": "x"})
    with pytest.raises(DecodeError, match="message type '1' is unknown"):
        m.decode("1", b"\xa1\x01ax")
    with pytest.raises(DecodeError, match="input must be bytes"):
        m.decode(m.PAY, "\xa1\x01ax")
    assert m.decode(m.PAY, memoryview(b"\xa1\x01ax")) == m.Message(m.PAY, id="x")
    assert m.name_of(99) is None


def test_register_adds_a_message():
    code = 200
    assert code not in m.SCHEMA
    m.register(code, "Ping", ((1, "nonce", m.nbytes(8), True), (2, "tags", m.listof(m.ident(), 2), False)))
    try:
        msg = m.Message(code, nonce=b"12345678", tags=["a", "b"])
        assert m.from_frame(frame.decode_one(m.to_frame(msg))) == msg
        with pytest.raises(DecodeError, match=r"message Ping field tags \(key 2\) must have 1..2 items, got 3"):
            m.decode(code, cbor2.dumps({1: b"12345678", 2: ["a", "b", "c"]}, canonical=True))
        with pytest.raises(ValueError, match="already Ping"):
            m.register(code, "Pong", ())
    finally:
        del m.SCHEMA[code]
    for bad in [
        (201, "Pay", ()),
        (0, "Zero", ()),
        (201, "X", ((0, "a", m.AMOUNT, True),)),
        (201, "X", ((1, "fields", m.AMOUNT, True),)),
        (201, "X", ((1, "_a", m.AMOUNT, True),)),
        (201, "X", ((1, "a", ("float",), True),)),
        (201, "X", ((1, "a", m.listof(m.listof(m.AMOUNT, 2), 2), True),)),
    ]:
        with pytest.raises(ValueError):
            m.register(*bad)
    assert 201 not in m.SCHEMA


def test_body_limits_bound_work():
    # the largest valid body is far below the frame limit; a 4 KiB body of junk is refused fast
    big = m.Message(m.RECEIPT, id="i" * 64, amount=m.MAX_AMOUNT, receipt="\u2603" * 170, txid=bytes(20),
                    meeting_points=["m%s" % i + "x" * 60 for i in range(8)], payee_key=bytes(33),
                    signature=bytes(64), expires=2**64 - 1)
    assert len(m.to_frame(big)) < frame.DEFAULT_MAX_FRAME
    assert m.decode(m.RECEIPT, m.encode(big)) == big
    with pytest.raises(DecodeError, match="indefinite length"):
        m.decode(m.RECEIPT, b"\x9f" + b"\x00" * 100)
    with pytest.raises(DecodeError, match="max_items"):
        m.decode(m.RECEIPT, cbor2.dumps([0] * 4000))
    with pytest.raises(DecodeError, match="exceeds max_size 4096"):
        m.decode(m.RECEIPT, bytes(10**7))
