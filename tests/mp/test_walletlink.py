"""walletlink on MicroPython: the same vectors as tests/core/test_walletlink.py."""

from mptest import eq, raises, unhex, vectors

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.errors import AmikoError, DecodeError

V = vectors("walletlink")
KEY = unhex(V["key"])


def test_good_vectors_decode_and_reencode():
    for v in V["good"]:
        msg = m.decode(v["type"], unhex(v["body"]))
        eq(m.encode(msg), unhex(v["body"]), v["name"])
        eq(m.to_frame(msg), unhex(v["frame"]), v["name"] + " frame")
        fr = frame.FrameDecoder().feed(unhex(v["frame"]))
        eq(len(fr), 1, v["name"])
        eq(m.from_frame(fr[0]), msg, v["name"])


def test_macs_match_and_verify():
    for v in V["good"]:
        if v["mac"] is None:
            continue
        msg = m.decode(v["type"], unhex(v["body"]))
        eq(wl.signed_bytes(msg), unhex(v["signed"]), v["name"] + " signed bytes")
        eq(wl.mac(KEY, msg), unhex(v["mac"]), v["name"] + " mac")
        eq(wl.verify(KEY, msg), True, v["name"])
        eq(wl.verify(bytes(32), msg), False, v["name"] + " other key")


def test_tampered_messages_do_not_verify():
    for v in V["tampered"]:
        msg = m.decode(v["type"], unhex(v["body"]))
        eq(wl.verify(KEY, msg), False, v["name"])


def test_malformed_bodies_raise_decode_error():
    for v in V["malformed"]:
        e = raises(DecodeError, m.decode, v["type"], unhex(v["body"]))
        eq(bool(e.reason), True, v["name"])


def test_signing_rebuilds_the_vector():
    txid = unhex("00112233445566778899aabbccddeeff00112233")
    r = V["receipt"]
    msg = wl.auth(KEY, "w-alice", 1, wl.ROUTE, txid, 1500, "mp-1", unhex(r["payee_key"]), unhex(r["hash"]), wl.AUTO,
                  receipt=unhex(r["body"]))
    eq(m.encode(msg), unhex(V["good"][0]["body"]), "auth")


def test_receipt_hash_and_payee_tag():
    r = V["receipt"]
    rec = m.decode(m.RECEIPT, unhex(r["body"]))
    eq(m.receipt_signed_bytes(rec), unhex(r["signed"]), "signed bytes")
    eq(wl.receipt_hash(rec), unhex(r["hash"]), "hash")
    eq(wl.payee_tag(rec.payee_key), unhex(r["payee_tag"]), "tag")
    eq(rec.payee, "Corner cafe", "payee name")


def test_payee_key_of_urls():
    for url, key in V["urls"]["keys"]:
        eq(wl.payee_key_of(url), None if key is None else unhex(key), url)
    for url in V["urls"]["bad_keys"]:
        raises(DecodeError, wl.payee_key_of, url)


def test_mac_refuses_bad_key_and_unsigned_types():
    msg = m.decode(V["good"][0]["type"], unhex(V["good"][0]["body"]))
    raises(AmikoError, wl.mac, b"short", msg)
    raises(AmikoError, wl.signed_bytes, m.Message(wl.TAP))


def test_random_garbage_bodies():
    seed = 12345
    for i in range(300):
        n = i % 40
        b = bytearray(n)
        for j in range(n):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            b[j] = seed >> 16 & 0xFF
        for code in (wl.AUTH, wl.STATUS, wl.HELLO, wl.PROVISION):
            try:
                m.decode(code, bytes(b))
            except DecodeError:
                pass


def test_payment_id_of_tap_urls():
    for url, pid in V["urls"]["good"]:
        eq(wl.payment_id_of(url), pid, url)
    for url in V["urls"]["bad"]:
        raises(DecodeError, wl.payment_id_of, url)
    raises(DecodeError, wl.payment_id_of, None)
