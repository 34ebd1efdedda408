import os
import stat

import pytest
from hypothesis import given, settings, strategies as st

from amiko.node import identity
from amiko.node.identity import ORDER, Identity, IdentityError, verify
from amiko_core.errors import AmikoError

# Deterministic ECDSA (RFC 6979, sha256, low-S) vectors for secp256k1 as published
# for Bitcoin libraries (trezor-crypto, python-ecdsa).
VECTORS = [
    (
        1,
        b"Satoshi Nakamoto",
        "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d8"
        "2442ce9d2b916064108014783e923ec36b49743e2ffa1c4496f01a512aafd9e5",
    ),
    (
        ORDER - 1,
        b"Satoshi Nakamoto",
        "fd567d121db66e382991534ada77a6bd3106f0a1098c231e47993447cd6af2d0"
        "6b39cd0eb1bc8603e159ef5c20a5c8ad685a45b06ce9bebed3f153d10d93bed5",
    ),
]


@pytest.mark.parametrize("secret,msg,sig_hex", VECTORS)
def test_rfc6979_vectors(secret, msg, sig_hex):
    ident = Identity(secret)
    sig = ident.sign(msg)
    assert sig.hex() == sig_hex
    assert verify(ident.pubkey, msg, sig)


def test_pubkey_of_generator_is_compressed_g():
    assert Identity(1).pubkey.hex() == "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"


def test_create_load_roundtrip_and_mode(tmp_path):
    path = str(tmp_path / "node.key")
    a = Identity.create(path)
    assert len(a.pubkey) == 33 and a.pubkey[0] in (2, 3)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    b = Identity.load(path)
    assert b.pubkey == a.pubkey
    assert Identity.load_or_create(path).pubkey == a.pubkey
    assert os.listdir(tmp_path) == ["node.key"]  # no temporary file left behind
    with pytest.raises(IdentityError, match="already exists"):
        Identity.create(path)
    assert Identity.load(path).pubkey == a.pubkey


def test_load_or_create_creates(tmp_path):
    path = str(tmp_path / "k")
    a = Identity.load_or_create(path)
    assert Identity.load(path).pubkey == a.pubkey


def test_two_identities_differ():
    assert Identity.generate().pubkey != Identity.generate().pubkey


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "corrupt"),
        (b"zz" * 32, "corrupt"),
        (b"00" * 31, "corrupt"),
        (b"00" * 33, "corrupt"),
        (b"00" * 32, "invalid secp256k1 key"),
        (("%064x" % ORDER).encode(), "invalid secp256k1 key"),
        (b"\xff\xfe" * 40, "corrupt"),
    ],
)
def test_load_refuses_corrupt_file(tmp_path, content, reason):
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(IdentityError, match=reason) as e:
        Identity.load(str(path))
    assert str(path) in str(e.value)
    assert isinstance(e.value, AmikoError)


def test_load_missing_and_unreadable(tmp_path):
    with pytest.raises(IdentityError, match="no key file"):
        Identity.load(str(tmp_path / "missing"))
    with pytest.raises(IdentityError, match="cannot read"):
        Identity.load(str(tmp_path))  # a directory


def test_load_accepts_upper_case_and_whitespace(tmp_path):
    path = tmp_path / "k"
    path.write_bytes(b"  " + (b"%064X" % 12345) + b"\r\n")
    assert Identity.load(str(path)).pubkey == Identity(12345).pubkey


def test_signature_is_low_s_and_deterministic():
    ident = Identity(0xC0FFEE)
    for i in range(40):
        msg = b"message %d" % i
        sig = ident.sign(msg)
        assert len(sig) == 64
        assert int.from_bytes(sig[32:], "big") <= ORDER // 2
        assert sig == ident.sign(msg)
        assert verify(ident.pubkey, msg, sig)


def test_verify_rejects_wrong_key_data_and_high_s():
    a, b = Identity(7), Identity(8)
    sig = a.sign(b"data")
    assert verify(a.pubkey, b"data", sig)
    assert a.verify(b"data", sig)
    assert not verify(b.pubkey, b"data", sig)
    assert not verify(a.pubkey, b"datA", sig)
    r, s = sig[:32], int.from_bytes(sig[32:], "big")
    high = r + (ORDER - s).to_bytes(32, "big")  # the malleated twin: valid ECDSA, but refused
    assert not verify(a.pubkey, b"data", high)


@pytest.mark.parametrize(
    "pubkey,data,sig",
    [
        (None, b"x", bytes(64)),
        (b"", b"x", bytes(64)),
        (b"\x04" + bytes(32), b"x", bytes(64)),
        (b"\x02" + bytes(32), b"x", bytes(64)),
        (b"\x02" + b"\xff" * 32, b"x", bytes(64)),
        (Identity(3).pubkey, b"x", bytes(64)),
        (Identity(3).pubkey, b"x", b"\xff" * 64),
        (Identity(3).pubkey, b"x", bytes(63)),
        (Identity(3).pubkey, b"x", "not bytes"),
        (Identity(3).pubkey, "text", Identity(3).sign(b"text")),
        (Identity(3).pubkey, None, None),
        ("02" * 33, b"x", bytes(64)),
    ],
)
def test_verify_never_raises_on_garbage(pubkey, data, sig):
    assert verify(pubkey, data, sig) is False


@settings(max_examples=60, deadline=None)
@given(pubkey=st.binary(min_size=0, max_size=40), data=st.binary(max_size=64), sig=st.binary(min_size=0, max_size=70))
def test_verify_fuzz(pubkey, data, sig):
    assert verify(pubkey, data, sig) in (False, True)
    assert identity.valid_pubkey(pubkey) in (False, True)


def test_secret_out_of_range():
    for bad in (0, ORDER, -1, "1"):
        with pytest.raises(IdentityError):
            Identity(bad)
