"""One-time link invitations: how a node learns which key to pin for a new link.

`amiko link NAME` (no URL) issues an invitation: a random 32-byte secret, bound to the
link NAME, valid until an expiry, accepted once. The secret travels only in the printed
URL (`amikolink://HOST:PORT/NAME?key=<this node's key>&invite=<secret hex>`); this node
keeps only HMAC-SHA256(invite key, NAME || secret), so its database never holds a usable
invitation. The invite key is derived from the node's identity (a deterministic
signature of INVITE_KEY_TAG, hashed), so it is not stored anywhere either.

Table (SCHEMA, registered with the store):

    link_invites(mac PK, link, expires, used, created)
        mac: the HMAC above; expires: unix seconds; used: unix seconds of acceptance or NULL

Contract:
- issue(db, identity, link, expiry, now) -> secret (32 bytes): records a new invitation.
- redeem(db, identity, link, secret, now) -> None if the invitation is valid, unused and
  unexpired (it is then marked used in the caller's transaction: the same one that pins
  the peer key), else a one-line reason ("unknown", "already used", "expired") for the log.
- purge(db, now): forget invitations that expired (or were used) more than KEEP s ago.
"""

import hmac
import os

from amiko_core.hashing import sha256

from amiko.node import store as _store

SCHEMA = """
CREATE TABLE IF NOT EXISTS link_invites (
    mac     BLOB PRIMARY KEY,
    link    TEXT NOT NULL,
    expires INTEGER NOT NULL,
    used    INTEGER,
    created INTEGER NOT NULL
);
"""

_store.register_schema(SCHEMA)

SECRET_SIZE = 32
DEFAULT_EXPIRY = 3600  # seconds an invitation stays valid (`amiko link --invite-expiry`)
MAX_EXPIRY = 30 * 24 * 3600
KEEP = 7 * 24 * 3600  # expired or used rows are kept this long (to say "used"/"expired" in logs)
INVITE_KEY_TAG = b"amiko-link-invite-key-v1"


def _invite_key(identity):
    return sha256(identity.sign(INVITE_KEY_TAG))


def _mac(identity, link, secret):
    return hmac.new(_invite_key(identity), link.encode("utf-8") + b"\x00" + bytes(secret), "sha256").digest()


def issue(db, identity, link, expiry, now):
    """Record a new invitation for link, valid for expiry seconds; returns the secret."""
    if isinstance(expiry, bool) or not isinstance(expiry, (int, float)) or not 0 < expiry <= MAX_EXPIRY:
        raise ValueError("invitation expiry must be 0..%d seconds" % MAX_EXPIRY)
    secret = os.urandom(SECRET_SIZE)
    db.execute("INSERT INTO link_invites (mac, link, expires, used, created) VALUES (?, ?, ?, NULL, ?)",
               (_mac(identity, link, secret), link, int(now + expiry), int(now)))
    purge(db, now)
    return secret


def redeem(db, identity, link, secret, now):
    """None (and the invitation marked used) if secret is a valid invitation for link; else why not."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_SIZE:
        return "malformed"
    mac = _mac(identity, link, secret)
    row = db.execute("SELECT mac, expires, used FROM link_invites WHERE mac = ? AND link = ?", (mac, link)).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), mac):
        return "unknown (not issued for this link)"
    if row[2] is not None:
        return "already used"
    if now >= row[1]:
        return "expired"
    db.execute("UPDATE link_invites SET used = ? WHERE mac = ?", (int(now), mac))
    return None


def purge(db, now):
    db.execute("DELETE FROM link_invites WHERE expires < ? OR used < ?", (int(now - KEEP), int(now - KEEP)))
