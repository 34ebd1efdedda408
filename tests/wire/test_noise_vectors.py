"""BOLT 8 (lightning/bolts 08-transport.md, Appendix A) test vectors against amiko.wire.noise."""

import json
from pathlib import Path

import pytest

from amiko.wire import noise
from amiko.wire.noise import Decrypter, Encrypter, Initiator, Keypair, NoiseError, Responder

V = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "bolt8.json").read_text())
INI = V["initiator"]
RESP = V["responder"]
MSG = V["messages"]


def h(s):
    return bytes.fromhex(s)


def initiator():
    return Initiator(Keypair(h(INI["ls_priv"])), h(INI["rs_pub"]), ephemeral=Keypair(h(INI["e_priv"])))


def responder():
    return Responder(Keypair(h(RESP["ls_priv"])), ephemeral=Keypair(h(RESP["e_priv"])))


def test_keys_of_the_vectors():
    assert Keypair(h(INI["ls_priv"])).pubkey == h(INI["ls_pub"])
    assert Keypair(h(INI["e_priv"])).pubkey == h(INI["e_pub"])
    assert Keypair(h(RESP["ls_priv"])).pubkey == h(RESP["ls_pub"])
    assert Keypair(h(RESP["e_priv"])).pubkey == h(RESP["e_pub"])


def test_initiator_successful_handshake():
    ini = initiator()
    assert ini.act_one() == h(INI["act_one"])
    assert ini.read_act_two(h(INI["act_two"])) == h(INI["act_three"])
    assert ini._keys == (h(INI["sk"]), h(INI["rk"]))
    assert ini._ck == h(INI["ck"])
    assert ini.remote_key == h(INI["rs_pub"])


def test_responder_successful_handshake():
    resp = responder()
    assert resp.read_act_one(h(RESP["act_one"])) == h(RESP["act_two"])
    assert resp.remote_key is None
    resp.read_act_three(h(RESP["act_three"]))
    assert resp.remote_key == h(RESP["rs_pub"])
    assert resp._keys == (h(RESP["sk"]), h(RESP["rk"]))


def test_both_ends_agree_and_talk():
    ini, resp = initiator(), responder()
    resp.read_act_three(ini.read_act_two(resp.read_act_one(ini.act_one())))
    i_send, i_recv = ini.split()
    r_send, r_recv = resp.split()
    assert r_recv.feed(i_send.encrypt(b"ping")) == [b"ping"]
    assert i_recv.feed(r_send.encrypt(b"pong")) == [b"pong"]


@pytest.mark.parametrize("case", V["initiator_failures"], ids=lambda c: c["name"])
def test_initiator_failures(case):
    ini = initiator()
    ini.act_one()
    with pytest.raises(NoiseError) as e:
        ini.read_act_two(h(case["act_two"]))
    assert e.value.code == case["error"]
    assert "\n" not in e.value.reason
    with pytest.raises(NoiseError) as again:  # a failed handshake stays failed
        ini.read_act_two(h(INI["act_two"]))
    assert again.value.code == "state"
    assert not ini.complete()


@pytest.mark.parametrize("case", V["responder_failures"], ids=lambda c: c["name"])
def test_responder_failures(case):
    resp = responder()
    with pytest.raises(NoiseError) as e:
        if "act_three" in case:
            assert resp.read_act_one(h(case["act_one"])) == h(RESP["act_two"])
            resp.read_act_three(h(case["act_three"]))
        else:
            resp.read_act_one(h(case["act_one"]))
    assert e.value.code == case["error"]
    assert resp.remote_key is None
    assert not resp.complete()
    with pytest.raises(NoiseError):
        resp.split()


def test_message_encryption_with_two_rotations():
    enc = Encrypter(h(MSG["sk"]), h(MSG["ck"]))
    dec = Decrypter(h(MSG["sk"]), h(MSG["ck"]))
    plaintext = h(MSG["plaintext"])
    wanted = {int(k): h(v) for k, v in MSG["outputs"].items()}
    for i in range(MSG["count"]):
        wire = enc.encrypt(plaintext)
        if i in wanted:
            assert wire == wanted[i], "message %d" % i
        assert dec.feed(wire) == [plaintext]
        if i == 499:  # nonce 1000 reached: the first rotation
            assert (enc._cs._ck, enc._cs._key) == (h(MSG["rotations"][0]["ck"]), h(MSG["rotations"][0]["k"]))
        if i == 999:
            assert (enc._cs._ck, enc._cs._key) == (h(MSG["rotations"][1]["ck"]), h(MSG["rotations"][1]["k"]))
    assert dec.pending() == 0


def test_decrypter_any_chunking():
    enc = Encrypter(h(MSG["sk"]), h(MSG["ck"]))
    dec = Decrypter(h(MSG["sk"]), h(MSG["ck"]))
    stream = b"".join(enc.encrypt(bytes([i]) * i) for i in range(40))
    got = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
    assert got == [bytes([i]) * i for i in range(40)]


def test_decrypter_refuses_oversize_length_before_the_body():
    enc = Encrypter(h(MSG["sk"]), h(MSG["ck"]))
    dec = Decrypter(h(MSG["sk"]), h(MSG["ck"]), max_message=100)
    wire = enc.encrypt(b"x" * 101)
    with pytest.raises(NoiseError) as e:
        dec.feed(wire[: noise.HEADER_SIZE])
    assert e.value.code == "oversize"
    with pytest.raises(NoiseError) as again:
        dec.feed(b"")
    assert again.value.code == "state"


@pytest.mark.parametrize("pos", [0, 1, 2, 17, 18, 22, 23, 38])
def test_decrypter_refuses_a_flipped_bit(pos):
    enc = Encrypter(h(MSG["sk"]), h(MSG["ck"]))
    dec = Decrypter(h(MSG["sk"]), h(MSG["ck"]))
    wire = bytearray(enc.encrypt(b"hello"))
    wire[pos] ^= 0x01
    with pytest.raises(NoiseError) as e:
        dec.feed(bytes(wire))
    assert e.value.code == "mac"


def test_replay_is_refused():
    enc = Encrypter(h(MSG["sk"]), h(MSG["ck"]))
    dec = Decrypter(h(MSG["sk"]), h(MSG["ck"]))
    first = enc.encrypt(b"one")
    assert dec.feed(first) == [b"one"]
    with pytest.raises(NoiseError) as e:
        dec.feed(first)
    assert e.value.code == "mac"


def test_encrypt_refuses_over_65535():
    enc = Encrypter(h(MSG["sk"]), h(MSG["ck"]))
    with pytest.raises(NoiseError) as e:
        enc.encrypt(b"\0" * 65536)
    assert e.value.code == "oversize"


def test_initiator_refuses_a_bad_remote_key():
    with pytest.raises(NoiseError) as e:
        Initiator(Keypair(), b"\x04" + b"\x11" * 32)
    assert e.value.code == "key"


def test_out_of_order_calls():
    resp = responder()
    with pytest.raises(NoiseError) as e:
        resp.read_act_three(h(RESP["act_three"]))
    assert e.value.code == "state"
    ini = initiator()
    with pytest.raises(NoiseError):
        ini.read_act_two(h(INI["act_two"]))


def test_feed_returns_the_good_messages_before_a_bad_one():
    enc = Encrypter(h(MSG["sk"]), h(MSG["ck"]))
    dec = Decrypter(h(MSG["sk"]), h(MSG["ck"]))
    wire = enc.encrypt(b"a") + enc.encrypt(b"b") + bytes(18)
    assert dec.feed(wire) == [b"a", b"b"]
    with pytest.raises(NoiseError) as e:
        dec.feed(b"")
    assert e.value.code == "mac"
    with pytest.raises(NoiseError) as again:
        dec.feed(b"")
    assert again.value.code == "state"
