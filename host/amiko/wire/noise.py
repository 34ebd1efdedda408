"""Sans-IO BOLT 8: Noise_XK_secp256k1_ChaChaPoly_SHA256, the Lightning transport.

Byte for byte as lightning/bolts 08-transport.md: protocol name
"Noise_XK_secp256k1_ChaChaPoly_SHA256", prologue "lightning", ECDH = SHA-256 of the
compressed shared point (libsecp256k1 via coincurve), HKDF-SHA256 (salt = ck, empty info,
64 bytes out), ChaCha20-Poly1305 (IETF) with the nonce 32 zero bits || 64-bit little-endian
counter, and each direction's key rotated with its own chaining key when its nonce reaches
1000 (every 500 messages, since a message uses two nonces).

Handshake (no I/O; the caller moves the bytes):

    ini = Initiator(local, remote_key)         resp = Responder(local)
    a1 = ini.act_one()               -- 50 ->  a2 = resp.read_act_one(a1)
    a3 = ini.read_act_two(a2)        <- 50 --
                                     -- 66 ->  resp.read_act_three(a3)   (resp.remote_key)
    sender, receiver = ini.split()             sender, receiver = resp.split()

`local` is any static key object with `.pubkey` (33 bytes) and
`.ecdh_compressed(pubkey33)` (BOLT 8's ECDH): amiko.node.identity.Identity or Keypair below.

After the handshake `Encrypter.encrypt(plaintext)` gives one message on the wire
(18 bytes: encrypted 2-byte big-endian length + MAC, then body + 16-byte MAC). `Decrypter`
takes them back: `decrypt_length(18 bytes) -> n` then `decrypt_body(n + 16 bytes)`, or
`feed(bytes) -> [plaintext, ...]` for any chunking. A length over `max_message` is refused
before its body is read. Every failure is a NoiseError with a one-line reason and a `code`
("length", "version", "key", "mac", "oversize", "state"); a handshake object or a Decrypter
that failed once refuses everything afterwards (code "state").
"""

import hashlib

import coincurve
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from amiko_core.errors import AmikoError

PROTOCOL_NAME = b"Noise_XK_secp256k1_ChaChaPoly_SHA256"
PROLOGUE = b"lightning"
VERSION = 0
PUBKEY_SIZE = 33
MAC_SIZE = 16
ACT_ONE_SIZE = 1 + PUBKEY_SIZE + MAC_SIZE
ACT_TWO_SIZE = ACT_ONE_SIZE
ACT_THREE_SIZE = 1 + PUBKEY_SIZE + MAC_SIZE + MAC_SIZE
LENGTH_SIZE = 2
HEADER_SIZE = LENGTH_SIZE + MAC_SIZE
MAX_MESSAGE = 0xFFFF
ROTATE_AT = 1000


class NoiseError(AmikoError):
    """The peer's bytes break BOLT 8 (reason: one line, no key material; code: short tag)."""

    def __init__(self, reason, code):
        super().__init__(reason)
        self.code = code


class Keypair:
    """A secp256k1 key for the handshake (the ephemeral keys; tests use it as a static key)."""

    def __init__(self, secret=None):
        self._key = coincurve.PrivateKey(secret) if secret is not None else coincurve.PrivateKey()
        self.pubkey = self._key.public_key.format(compressed=True)

    def ecdh_compressed(self, pubkey):
        """BOLT 8 ECDH: SHA-256 of the compressed point secret * pubkey."""
        return self._key.ecdh(pubkey)


def parse_pubkey(data):
    """data if it is a 33-byte compressed secp256k1 point, else None."""
    data = bytes(data)
    if len(data) != PUBKEY_SIZE or data[0] not in (2, 3):
        return None
    try:
        coincurve.PublicKey(data)
    except Exception:  # ValueError for a point off the curve; anything else garbage may provoke
        return None
    return data


def _sha256(data):
    return hashlib.sha256(data).digest()


def hkdf(salt, ikm):
    """HKDF-SHA256(salt, ikm, info="") -> (first 32 bytes, last 32 bytes)."""
    out = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=b"").derive(ikm)
    return out[:32], out[32:]


def _nonce(n):
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _encrypt(key, n, ad, plaintext):
    return ChaCha20Poly1305(key).encrypt(_nonce(n), plaintext, ad)


def _decrypt(key, n, ad, ciphertext):
    """Plaintext, or None if the MAC does not verify."""
    try:
        return ChaCha20Poly1305(key).decrypt(_nonce(n), ciphertext, ad)
    except InvalidTag:
        return None


class _Handshake:
    """State shared by both roles: h, ck and the current temporary key."""

    def __init__(self, local, ephemeral, responder_static):
        self._local = local
        self._e = ephemeral if ephemeral is not None else Keypair()
        self._h = _sha256(PROTOCOL_NAME)
        self._ck = self._h
        self._mix_hash(PROLOGUE)
        self._mix_hash(responder_static)
        self._temp_k = None
        self._keys = None  # (sk, rk) once the handshake is complete
        self._failed = False
        self._step = 0
        self.local_key = local.pubkey
        self.remote_key = None

    def _mix_hash(self, data):
        self._h = _sha256(self._h + data)

    def _mix_key(self, ss):
        self._ck, self._temp_k = hkdf(self._ck, ss)

    def _expect(self, step, what):
        if self._failed:
            raise NoiseError("noise: %s after a failed handshake" % what, "state")
        if self._step != step:
            raise NoiseError("noise: %s out of order" % what, "state")

    def _fail(self, reason, code):
        self._failed = True
        raise NoiseError(reason, code)

    def _parse_act(self, act, data, size):
        """(version checked) -> the act's bytes after the version byte."""
        data = bytes(data)
        if len(data) != size:
            self._fail("noise: act %s is %d bytes, want %d" % (act, len(data), size), "length")
        if data[0] != VERSION:
            self._fail("noise: act %s has handshake version %d, want %d" % (act, data[0], VERSION), "version")
        return data[1:]

    def _read_ephemeral(self, act, payload, ours):
        """Mix in the peer's ephemeral key from payload (re || c) and ECDH(re, ours); check c."""
        re = parse_pubkey(payload[:PUBKEY_SIZE])
        if re is None:
            self._fail("noise: act %s carries an invalid ephemeral public key" % act, "key")
        c = payload[PUBKEY_SIZE:]
        self._mix_hash(re)
        self._mix_key(ours.ecdh_compressed(re))
        if _decrypt(self._temp_k, 0, self._h, c) is None:
            self._fail("noise: act %s MAC does not verify" % act, "mac")
        self._mix_hash(c)
        return re

    def _write_ephemeral(self, remote):
        """0 || e.pub || MAC, mixing ECDH(e, remote) in."""
        e_pub = self._e.pubkey
        self._mix_hash(e_pub)
        self._mix_key(self._e.ecdh_compressed(remote))
        c = _encrypt(self._temp_k, 0, self._h, b"")
        self._mix_hash(c)
        return bytes([VERSION]) + e_pub + c

    def complete(self):
        return self._keys is not None

    def split(self):
        """(Encrypter, Decrypter) for the session; only after a complete handshake."""
        if self._keys is None:
            raise NoiseError("noise: handshake not complete", "state")
        sk, rk = self._keys
        return Encrypter(sk, self._ck), Decrypter(rk, self._ck)


class Initiator(_Handshake):
    """The side that knows the responder's static key before the first byte."""

    def __init__(self, local, remote_key, ephemeral=None):
        rs = parse_pubkey(remote_key) if isinstance(remote_key, (bytes, bytearray)) else None
        if rs is None:
            raise NoiseError("noise: the responder's key is not a compressed secp256k1 public key", "key")
        super().__init__(local, ephemeral, rs)
        self.remote_key = rs

    def act_one(self):
        self._expect(0, "act one")
        self._step = 1
        return self._write_ephemeral(self.remote_key)

    def read_act_two(self, data):
        """Check act two; return act three. The session keys are ready afterwards."""
        self._expect(1, "act two")
        re = self._read_ephemeral("two", self._parse_act("two", data, ACT_TWO_SIZE), self._e)
        c = _encrypt(self._temp_k, 1, self._h, self._local.pubkey)
        self._mix_hash(c)
        self._mix_key(self._local.ecdh_compressed(re))
        t = _encrypt(self._temp_k, 0, self._h, b"")
        self._keys = hkdf(self._ck, b"")
        self._step = 2
        return bytes([VERSION]) + c + t


class Responder(_Handshake):
    """The side whose static key the initiator must already know; learns the initiator's."""

    def __init__(self, local, ephemeral=None):
        super().__init__(local, ephemeral, local.pubkey)

    def read_act_one(self, data):
        """Check act one; return act two."""
        self._expect(0, "act one")
        self._re = self._read_ephemeral("one", self._parse_act("one", data, ACT_ONE_SIZE), self._local)
        self._step = 1
        return self._write_ephemeral(self._re)

    def read_act_three(self, data):
        """Check act three; afterwards remote_key is the initiator's authenticated static key."""
        self._expect(1, "act three")
        payload = self._parse_act("three", data, ACT_THREE_SIZE)
        c = payload[: PUBKEY_SIZE + MAC_SIZE]
        t = payload[PUBKEY_SIZE + MAC_SIZE :]
        rs_raw = _decrypt(self._temp_k, 1, self._h, c)
        if rs_raw is None:
            self._fail("noise: act three static key MAC does not verify", "mac")
        rs = parse_pubkey(rs_raw)
        if rs is None:
            self._fail("noise: act three carries an invalid static public key", "key")
        self._mix_hash(c)
        self._mix_key(self._e.ecdh_compressed(rs))
        if _decrypt(self._temp_k, 0, self._h, t) is None:
            self._fail("noise: act three MAC does not verify", "mac")
        rk, sk = hkdf(self._ck, b"")
        self._keys = (sk, rk)
        self.remote_key = rs
        self._step = 2


class _CipherState:
    """One direction's key, nonce and chaining key, rotated as BOLT 8 says."""

    def __init__(self, key, ck):
        self._key = key
        self._ck = ck
        self._nonce = 0
        self._aead = ChaCha20Poly1305(key)

    def _advance(self):
        self._nonce += 1
        if self._nonce == ROTATE_AT:
            self._ck, self._key = hkdf(self._ck, self._key)
            self._aead = ChaCha20Poly1305(self._key)
            self._nonce = 0

    def encrypt(self, plaintext):
        out = self._aead.encrypt(_nonce(self._nonce), plaintext, None)
        self._advance()
        return out

    def decrypt(self, ciphertext):
        """Plaintext, or None on a bad MAC (the nonce is not advanced then)."""
        try:
            out = self._aead.decrypt(_nonce(self._nonce), ciphertext, None)
        except InvalidTag:
            return None
        self._advance()
        return out


class Encrypter:
    """The sending half of a session."""

    def __init__(self, key, ck):
        self._cs = _CipherState(key, ck)

    def encrypt(self, plaintext):
        """lc || c for one message of at most MAX_MESSAGE bytes."""
        n = len(plaintext)
        if n > MAX_MESSAGE:
            raise NoiseError("noise: a %d-byte message is over the %d-byte limit" % (n, MAX_MESSAGE), "oversize")
        return self._cs.encrypt(n.to_bytes(2, "big")) + self._cs.encrypt(bytes(plaintext))


class Decrypter:
    """The receiving half of a session; refuses lengths over max_message before the body."""

    def __init__(self, key, ck, max_message=MAX_MESSAGE):
        self._cs = _CipherState(key, ck)
        self.max_message = max_message
        self._want = None  # body length once a header was decrypted
        self._buf = bytearray()
        self._failed = False
        self._deferred = None  # a NoiseError found after good messages, raised by the next feed()

    def _check(self):
        if self._failed:
            raise NoiseError("noise: stream already failed", "state")

    def _fail(self, reason, code):
        self._failed = True
        raise NoiseError(reason, code)

    def body_size(self):
        """Bytes decrypt_body wants next (body + MAC), or None while a header is wanted."""
        return None if self._want is None else self._want + MAC_SIZE

    def decrypt_length(self, header):
        """Decrypt the 18-byte length header; return the body length that follows."""
        self._check()
        if self._want is not None:
            raise NoiseError("noise: a body is due, not a length header", "state")
        if len(header) != HEADER_SIZE:
            self._fail("noise: length header is %d bytes, want %d" % (len(header), HEADER_SIZE), "length")
        plain = self._cs.decrypt(bytes(header))
        if plain is None:
            self._fail("noise: length header MAC does not verify", "mac")
        n = int.from_bytes(plain, "big")
        if n > self.max_message:
            self._fail("noise: peer announced a %d-byte message, over the %d-byte limit" % (n, self.max_message),
                       "oversize")
        self._want = n
        return n

    def decrypt_body(self, data):
        """Decrypt the body (its length + 16 bytes) announced by the last header."""
        self._check()
        if self._want is None:
            raise NoiseError("noise: a length header is due, not a body", "state")
        if len(data) != self._want + MAC_SIZE:
            self._fail("noise: body is %d bytes, want %d" % (len(data), self._want + MAC_SIZE), "length")
        plain = self._cs.decrypt(bytes(data))
        if plain is None:
            self._fail("noise: message MAC does not verify", "mac")
        self._want = None
        return plain

    def pending(self):
        """Bytes fed but not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data):
        """Consume any chunk of the byte stream; return the complete plaintexts in it.
        If a message after good ones is bad, the good ones are returned and the next
        feed() raises the NoiseError."""
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            raise err
        self._check()
        self._buf += data
        out = []
        while True:
            need = HEADER_SIZE if self._want is None else self._want + MAC_SIZE
            if len(self._buf) < need:
                return out
            chunk = bytes(self._buf[:need])
            del self._buf[:need]
            try:
                if self._want is None:
                    self.decrypt_length(chunk)
                else:
                    out.append(self.decrypt_body(chunk))
            except NoiseError as e:
                if not out:
                    raise
                self._deferred = e
                return out
