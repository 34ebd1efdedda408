"""amiko_core.messages under MicroPython: the shared vectors, construction errors,
register(), and a seeded mutation fuzz over valid bodies (Message or DecodeError)."""

from mptest import XorShift32, eq, raises, unhex, untag, vectors

from amiko_core import cbor, frame
from amiko_core import messages as m
from amiko_core.errors import DecodeError, EncodeError


def check_reason(e, want, what):
    if want not in e.reason:
        raise AssertionError("%s: reason %r lacks %r" % (what, e.reason, want))


def test_valid_vectors():
    n = 0
    for vec in vectors("messages")["valid"]:
        fields = untag(vec["fields"])
        msg = m.Message(vec["type"], fields)
        what = "%s %r" % (vec["name"], vec["fields"])
        eq(msg.name, vec["name"], what)
        eq(m.name_of(vec["type"]), vec["name"], what)
        body = unhex(vec["body"])
        eq(m.encode(msg), body, what + " body")
        eq(m.to_frame(msg), unhex(vec["frame"]), what + " frame")
        got = m.decode(vec["type"], body)
        eq(got, msg, what + " decode")
        eq(got.fields, fields, what + " fields")
        for name in fields:
            v = getattr(got, name)
            eq(type(v), type(fields[name]), what + " type of " + name)
            eq(v, fields[name], what + " attribute " + name)
        for f in m.SCHEMA[vec["type"]][1]:
            if f[1] not in fields:
                eq(getattr(got, f[1]), None, what + " absent " + f[1])
        eq(m.from_frame(frame.decode_one(unhex(vec["frame"]))), msg, what + " from_frame")
        n += 1
    # every message type has at least one vector
    eq(sorted(set(v["type"] for v in vectors("messages")["valid"])), sorted(m.SCHEMA), "types covered")
    assert n >= len(m.SCHEMA)


def _named_if_field_level(code, body):
    """The {python name: value} of a body that is a map of known keys, else None."""
    try:
        value = cbor.loads(body, 8192, 4, 128, 4096)
    except DecodeError:
        return None
    if code not in m.SCHEMA or type(value) is not dict:
        return None
    by_key = {}
    for f in m.SCHEMA[code][1]:
        by_key[f[0]] = f
    named = {}
    for k in value:
        if type(k) is not int or k not in by_key:
            return None
        named[by_key[k][1]] = value[k]
    return named


def test_invalid_vectors():
    same_on_construction = 0
    for vec in vectors("messages")["invalid"]:
        body = unhex(vec["body"])
        e = raises(DecodeError, m.decode, vec["type"], body)
        check_reason(e, vec["reason"], vec["what"])
        # construction applies the same rules, with the same reason, as EncodeError
        named = _named_if_field_level(vec["type"], body)
        # (None is how a caller leaves an optional field out, so null has no construction twin)
        if named is not None and "field" in vec["reason"] and None not in named.values():
            e = raises(EncodeError, m.Message, vec["type"], named)
            check_reason(e, vec["reason"], "construct " + vec["what"])
            same_on_construction += 1
    assert same_on_construction > 40


def test_frame_vectors():
    for vec in vectors("messages")["frames"]:
        fr = frame.decode_one(unhex(vec["frame"]))
        e = raises(DecodeError, m.from_frame, fr)
        check_reason(e, vec["reason"], vec["what"])


def test_construct_vectors():
    for vec in vectors("messages")["construct"]:
        e = raises(EncodeError, m.Message, vec["type"], untag(vec["fields"]))
        check_reason(e, vec["reason"], vec["what"])


def test_receipt_signed_bytes():
    for vec in vectors("messages")["receipt_signed"]:
        msg = m.Message(m.RECEIPT, untag(vec["fields"]))
        eq(m.receipt_signed_bytes(msg), unhex(vec["signed"]), "signed bytes")
    raises(EncodeError, m.receipt_signed_bytes, m.Message(m.PAY, {"id": "x"}))


def test_message_api():
    txid = bytes(range(20))
    a = m.Message(m.LOCK, {"txid": bytearray(txid), "side": 1, "amount": 5})
    b = m.Message(m.LOCK, txid=txid, side=1, amount=5)
    eq(a, b, "bytearray normalised, keyword fields")
    eq(type(a.txid), bytes, "txid type")
    assert not (a != b)
    assert a != m.Message(m.LOCK, txid=txid, side=1, amount=6)
    assert a != m.Message(m.SETTLE_COMMIT, txid=txid, side=1, token=bytes(32))
    assert a != "Lock"
    r = m.Message(m.RECEIPT, id="p", amount=1, receipt="", txid=txid, meeting_points=("a", "b"), payee_key=None)
    eq(r.meeting_points, ["a", "b"], "tuple becomes list")
    eq(r.payee_key, None, "None drops an optional field")
    assert "payee_key" not in r.fields
    raises(AttributeError, getattr, r, "nonsense")
    raises(AttributeError, getattr, r, "token")
    eq(repr(m.Message(m.PAY, id="x")), "Pay(id='x')", "repr")
    raises(EncodeError, m.Message, m.PAY, ["id", "x"])
    raises(EncodeError, m.Message, True, {"id": "x"})
    raises(EncodeError, m.Message, m.PAY, {1: "x"})
    raises(EncodeError, m.encode, {"id": "x"})
    raises(DecodeError, m.decode, "1", b"\xa1\x01ax")
    raises(DecodeError, m.decode, True, b"\xa1\x01ax")
    raises(DecodeError, m.decode, m.PAY, "not bytes")


def test_register_extends_the_schema():
    code = 200
    assert code not in m.SCHEMA
    m.register(code, "Ping", ((1, "nonce", m.nbytes(8), True), (2, "flag", m.BOOL, False), (3, "tags", m.listof(m.ident(), 2), False)))
    try:
        msg = m.Message(code, nonce=b"12345678", flag=True, tags=["a"])
        eq(m.decode(code, m.encode(msg)), msg, "registered round trip")
        e = raises(DecodeError, m.decode, code, cbor.dumps({1: b"12345678", 2: 1}))
        check_reason(e, "message Ping field flag (key 2) must be a bool, got int", "bool kind")
        raises(ValueError, m.register, code, "Ping2", ())  # code taken
    finally:
        del m.SCHEMA[code]
    raises(ValueError, m.register, 201, "Pay", ())  # name taken
    raises(ValueError, m.register, 0, "Zero", ())
    raises(ValueError, m.register, 256, "Big", ())
    raises(ValueError, m.register, 201, "X", ((0, "a", m.AMOUNT, True),))
    raises(ValueError, m.register, 201, "X", ((1, "a", m.AMOUNT, True), (1, "b", m.AMOUNT, True)))
    raises(ValueError, m.register, 201, "X", ((1, "a", m.AMOUNT, True), (2, "a", m.AMOUNT, True)))
    raises(ValueError, m.register, 201, "X", ((1, "type", m.AMOUNT, True),))
    raises(ValueError, m.register, 201, "X", ((1, "a", ("float",), True),))
    raises(ValueError, m.register, 201, "X", ((1, "a", m.listof(m.listof(m.AMOUNT, 2), 2), True),))
    raises(ValueError, m.register, 201, "X", ((1, "a", m.AMOUNT, 1),))
    assert 201 not in m.SCHEMA


def mutate(rng, data):
    b = bytearray(data)
    for _ in range(1 + rng.below(3)):
        op = rng.below(6)
        if op == 0 and b:
            b[rng.below(len(b))] ^= 1 << rng.below(8)
        elif op == 1 and b:
            b[rng.below(len(b))] = rng.below(256)
        elif op == 2:
            i = rng.below(len(b) + 1)
            b = b[:i] + bytes([rng.below(256)]) + b[i:]
        elif op == 3 and b:
            i = rng.below(len(b))
            b = b[:i] + b[i + 1 :]
        elif op == 4:
            b = b[: rng.below(len(b) + 1)]
        else:
            # small integers and type bytes are where the interesting boundaries are
            if b:
                b[rng.below(len(b))] = (0x00, 0x01, 0x14, 0x15, 0x17, 0x18, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xF4, 0xF5, 0xF6)[rng.below(14)]
    return bytes(b)


def test_mutation_fuzz():
    rng = XorShift32(20240601)
    valid = vectors("messages")["valid"]
    codes = sorted(m.SCHEMA) + [0, 7, 99, 255]
    accepted = 0
    rejected = 0
    for i in range(1500):
        vec = valid[rng.below(len(valid))]
        code = vec["type"] if rng.below(8) else codes[rng.below(len(codes))]
        data = mutate(rng, unhex(vec["body"]))
        try:
            msg = m.decode(code, data)
        except DecodeError as e:
            assert e.reason.startswith("message ")
            rejected += 1
            continue
        # whatever is accepted is canonical: re-encoding gives the same bytes
        eq(m.encode(msg), data, "re-encode accepted mutation")
        accepted += 1
    assert rejected > 500 and accepted > 10, (accepted, rejected)
