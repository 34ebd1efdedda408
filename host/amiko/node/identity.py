"""A node's secp256k1 identity key.

Key file: the 32-byte secret exponent as 64 lower-case hex characters and a newline,
mode 0600, written once (create refuses to overwrite). load refuses a file that is
unreadable, not 64 hex characters, or whose number is not in 1..n-1, with an
IdentityError that names the file and says what to do.

- pubkey: the 33-byte SEC1 compressed public key (0x02/0x03 || x).
- sign(data) -> 64 bytes r || s (big-endian, 32 bytes each) of ECDSA over sha256(data),
  deterministic (RFC 6979) and low-S normalised (s <= n/2, as Bitcoin's BIP 62/146).
- ecdh(pubkey33) -> 32 bytes: sha256 of the x coordinate of the shared point (ECDH), used to
  provision a wallet through a URL (amiko.node.provisioning).
- ecdh_compressed(pubkey33) -> 32 bytes: sha256 of the compressed shared point, BOLT 8's
  ECDH (the transport's handshake, amiko.wire.noise, uses the identity as its static key).
- verify(pubkey33, data, sig64) -> bool. Accepts only a valid compressed point and a
  64-byte low-S signature with 0 < r, s < n; returns False (never raises) on anything else.

The curve work is libsecp256k1 through coincurve (constant time). tests/node/test_identity.py
cross-checks it against the pure-Python `ecdsa` package.
"""

import hashlib
import logging
import os

import coincurve
from coincurve.ecdsa import cdata_to_der, der_to_cdata, deserialize_compact, serialize_compact

from amiko_core.errors import AmikoError

log = logging.getLogger("amiko.identity")

ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
PUBKEY_SIZE = 33
SIGNATURE_SIZE = 64
_SECRET_HEX = 64


class IdentityError(AmikoError):
    """The identity key file cannot be created or used."""


class Identity:
    """A loaded signing key; `pubkey` is its 33-byte compressed public key."""

    def __init__(self, secret, path=None):
        if not isinstance(secret, int) or not 0 < secret < ORDER:
            raise IdentityError("identity: secret exponent out of range 1..n-1")
        self.path = path
        self._secret = secret
        self._key = coincurve.PrivateKey(secret.to_bytes(32, "big"))
        self.pubkey = self._key.public_key.format(compressed=True)

    @classmethod
    def generate(cls):
        """A fresh in-memory identity (not saved)."""
        while True:
            secret = int.from_bytes(os.urandom(32), "big")
            if 0 < secret < ORDER:
                return cls(secret)

    @classmethod
    def create(cls, path):
        """Generate a key, write it to path (mode 0600, must not exist) and return it."""
        ident = cls.generate()
        ident.path = path
        text = ("%064x\n" % ident._secret).encode("ascii")
        tmp = "%s.tmp.%d" % (path, os.getpid())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, text)
                os.fsync(fd)
            finally:
                os.close(fd)
            # link() fails if path exists: never overwrite an existing identity.
            os.link(tmp, path)
        except FileExistsError:
            raise IdentityError("identity: key file %s already exists; refusing to overwrite it" % path) from None
        except OSError as e:
            raise IdentityError("identity: cannot create key file %s: %s" % (path, e.strerror or e)) from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
        return ident

    @classmethod
    def load(cls, path):
        """Read the key file at path; IdentityError says what is wrong with it."""
        try:
            with open(path, "rb") as f:
                raw = f.read(_SECRET_HEX + 16)
                mode = os.fstat(f.fileno()).st_mode
        except FileNotFoundError:
            raise IdentityError("identity: no key file at %s (run `amiko init` to create one)" % path) from None
        except OSError as e:
            raise IdentityError("identity: cannot read key file %s: %s" % (path, e.strerror or e)) from None
        text = raw.strip()
        if len(text) != _SECRET_HEX or any(c not in b"0123456789abcdefABCDEF" for c in text):
            raise IdentityError(
                "identity: key file %s is corrupt (expected 64 hex characters); restore it from a backup" % path
            )
        secret = int(text, 16)
        if not 0 < secret < ORDER:
            raise IdentityError("identity: key file %s holds an invalid secp256k1 key; restore it from a backup" % path)
        if mode & 0o077:
            log.warning("identity: key file %s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
        return cls(secret, path)

    @classmethod
    def load_or_create(cls, path):
        """Load the key file at path, creating it first if it does not exist."""
        if not os.path.exists(path):
            try:
                return cls.create(path)
            except IdentityError:
                if not os.path.exists(path):
                    raise
        return cls.load(path)

    def sign(self, data):
        """64-byte r || s, deterministic (RFC 6979), low-S, over sha256(data)."""
        # libsecp256k1 signs with RFC 6979 nonces and always returns the low-S form.
        der = self._key.sign(bytes(data), hasher=_sha256)
        return serialize_compact(der_to_cdata(der))

    def verify(self, data, sig):
        return verify(self.pubkey, data, sig)

    def ecdh(self, pubkey):
        """sha256 of the x coordinate of secret * pubkey (33-byte compressed; ValueError if not a point)."""
        point = _public_key(pubkey)
        if point is None:
            raise ValueError("not a compressed secp256k1 public key")
        shared = point.multiply(self._key.secret)
        return hashlib.sha256(shared.format(compressed=True)[1:]).digest()

    def ecdh_compressed(self, pubkey):
        """BOLT 8's ECDH: sha256 of the compressed point secret * pubkey (the transport's)."""
        return self._key.ecdh(bytes(pubkey))

    def __repr__(self):
        return "Identity(%s)" % self.pubkey.hex()


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def valid_pubkey(pubkey):
    """True if pubkey is a 33-byte compressed encoding of a point on secp256k1."""
    return _public_key(pubkey) is not None


def _sha256(data):
    return hashlib.sha256(data).digest()


def _public_key(pubkey):
    if not isinstance(pubkey, (bytes, bytearray)) or len(pubkey) != PUBKEY_SIZE or pubkey[0] not in (2, 3):
        return None
    try:
        return coincurve.PublicKey(bytes(pubkey))
    except Exception:  # ValueError for a point off the curve, and anything else garbage may provoke
        return None


def verify(pubkey, data, sig):
    """True only for a valid low-S signature sig (64 bytes r || s) by pubkey over sha256(data)."""
    try:
        if not isinstance(sig, (bytes, bytearray)) or len(sig) != SIGNATURE_SIZE:
            return False
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return False
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        if not (0 < r < ORDER and 0 < s <= ORDER // 2):
            return False
        point = _public_key(pubkey)
        if point is None:
            return False
        # libsecp256k1 refuses a high-S signature by itself; the range check above says so too.
        der = cdata_to_der(deserialize_compact(bytes(sig)))
        return bool(point.verify(der, bytes(data), hasher=_sha256))
    except Exception:  # any failure on hostile input
        return False
