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


# Cross-checks: libsecp256k1 (coincurve, what Identity runs on) against the independent
# pure-Python `ecdsa` package, on random keys and data.

import hashlib

import ecdsa
from ecdsa.util import sigdecode_string, sigencode_string, sigencode_string_canonize

SECRETS = st.integers(min_value=1, max_value=ORDER - 1)


def _ecdsa_key(secret):
    return ecdsa.SigningKey.from_secret_exponent(secret, curve=ecdsa.SECP256k1, hashfunc=hashlib.sha256)


@settings(max_examples=60, deadline=None)
@given(secret=SECRETS, data=st.binary(max_size=200))
def test_sign_matches_ecdsa(secret, data):
    ident, ref = Identity(secret), _ecdsa_key(secret)
    assert ident.pubkey == ref.get_verifying_key().to_string("compressed")
    sig = ident.sign(data)
    assert sig == ref.sign_deterministic(data, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize)
    assert ref.get_verifying_key().verify(sig, data, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)


@settings(max_examples=60, deadline=None)
@given(secret=SECRETS, data=st.binary(max_size=200), k=st.integers(min_value=1, max_value=ORDER - 1))
def test_verify_matches_ecdsa_and_refuses_high_s(secret, data, k):
    ident, ref = Identity(secret), _ecdsa_key(secret)
    # A signature with a random nonce k, by the other implementation, not normalised.
    raw = ref.sign(data, k=k, hashfunc=hashlib.sha256, sigencode=sigencode_string)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    low = r + min(s, ORDER - s).to_bytes(32, "big")
    high = r + max(s, ORDER - s).to_bytes(32, "big")
    vk = ref.get_verifying_key()
    assert vk.verify(high, data, hashfunc=hashlib.sha256, sigdecode=sigdecode_string)  # valid ECDSA ...
    assert not verify(ident.pubkey, data, high)  # ... but malleable: refused
    assert verify(ident.pubkey, data, low)
    assert not verify(ident.pubkey, data + b"x", low)
    assert not verify(Identity(1 if secret != 1 else 2).pubkey, data, low)


@settings(max_examples=60, deadline=None)
@given(a=SECRETS, b=SECRETS)
def test_ecdh_matches_ecdsa(a, b):
    ia, ib = Identity(a), Identity(b)
    ref = ecdsa.ECDH(curve=ecdsa.SECP256k1, private_key=_ecdsa_key(a),
                     public_key=_ecdsa_key(b).get_verifying_key())
    x = ref.generate_sharedsecret_bytes()
    assert ia.ecdh(ib.pubkey) == ib.ecdh(ia.pubkey) == hashlib.sha256(x).digest()
    point = (_ecdsa_key(b).get_verifying_key().pubkey.point * a)
    compressed = bytes([2 + (point.y() & 1)]) + x
    assert ia.ecdh_compressed(ib.pubkey) == ib.ecdh_compressed(ia.pubkey) == hashlib.sha256(compressed).digest()


@settings(max_examples=100, deadline=None)
@given(prefix=st.sampled_from([2, 3, 4, 0]), x=st.binary(min_size=32, max_size=32))
def test_valid_pubkey_matches_ecdsa(prefix, x):
    key = bytes([prefix]) + x
    try:
        ecdsa.VerifyingKey.from_string(key, curve=ecdsa.SECP256k1)
        ref_ok = prefix in (2, 3)
    except Exception:
        ref_ok = False
    assert identity.valid_pubkey(key) is ref_ok
    if not ref_ok:
        with pytest.raises(ValueError):
            Identity(5).ecdh(key)


def test_ecdh_is_sha256_of_x_as_before():
    # 2G's x coordinate: the value provisioning has always hashed (kept bit-identical).
    x_2g = bytes.fromhex("c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5")
    assert Identity(1).ecdh(Identity(2).pubkey) == hashlib.sha256(x_2g).digest()
    assert Identity(1).ecdh_compressed(Identity(2).pubkey) == hashlib.sha256(b"\x02" + x_2g).digest()
