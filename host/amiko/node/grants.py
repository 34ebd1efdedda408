"""Which BOLT 8 keys may use which control methods over the node's TCP port.

The operator grants a key (a bridge's: `amiko bridge key`) some permissions:

    amiko grant KEYHEX --permissions request,cancel,watch
    amiko grant --list
    amiko grant --revoke KEYHEX

PERMISSIONS maps each permission to the control methods it opens; `info` (the node's public
name, address and key) is open to every granted key. Nothing else is: a granted key cannot pay
(pay_*), move funds (deposit, withdraw, wallet_*), make links, read `status` or change grants;
those stay with the unix socket (the operator). An ungranted key's connection is answered
with a `forbidden` error and closed. Revoking a key, or changing its permissions, closes its
open control connections at once.

Table (registered with the store): control_grants(key PK: 33-byte public key, permissions:
comma-separated, created).
"""

import time

from amiko.node import store
from amiko.node.control import ControlError

PERMISSIONS = {
    "request": ("request",),
    "cancel": ("cancel",),
    "watch": ("watch", "unwatch", "payments"),
}
ALWAYS = ("info",)

store.register_schema("""
CREATE TABLE IF NOT EXISTS control_grants (
    key BLOB PRIMARY KEY,
    permissions TEXT NOT NULL,
    created INTEGER NOT NULL
);
""")


def methods_of(permissions):
    """The control methods a key with these permissions may call."""
    out = set(ALWAYS)
    for p in permissions:
        out.update(PERMISSIONS[p])
    return frozenset(out)


def permission_of(method):
    """The permission that opens method: a PERMISSIONS key, "any", or "operator"."""
    if method in ALWAYS:
        return "any"
    for name, methods in PERMISSIONS.items():
        if method in methods:
            return name
    return "operator"


def _key(params):
    from amiko.node.identity import valid_pubkey

    text = params.get("key")
    try:
        key = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        key = b""
    if not valid_pubkey(key):
        raise ControlError("invalid", "key %r is not a 33-byte compressed secp256k1 public key in hex "
                           "(the bridge prints its own with `amiko bridge key`)" % (text,))
    return key


class Grants:
    def __init__(self, ledger, clock=None):
        self.ledger = ledger
        self.clock = clock or time.time
        self.live = {}  # key bytes -> set of control_stream connections (closed on revoke/change)

    def lookup(self, key):
        """The sorted permissions granted to key, or None."""
        with self.ledger.read() as db:
            row = db.execute("SELECT permissions FROM control_grants WHERE key = ?", (bytes(key),)).fetchone()
        return None if row is None else sorted(p for p in row[0].split(",") if p in PERMISSIONS)

    def methods(self):
        return {"grant": self.rpc_grant, "grant_list": self.rpc_list, "grant_revoke": self.rpc_revoke}

    def _disconnect(self, key):
        conns = self.live.pop(key, set())
        for c in list(conns):
            c.close()
        return len(conns)

    def rpc_grant(self, params, conn):
        key = _key(params)
        perms = params.get("permissions")
        if (not isinstance(perms, list) or not perms or not all(isinstance(p, str) for p in perms)
                or any(p not in PERMISSIONS for p in perms)):
            raise ControlError("invalid", "permissions must be a non-empty list of %s, got %r"
                               % (", ".join(sorted(PERMISSIONS)), perms))
        perms = sorted(set(perms))
        now = int(self.clock())
        self.ledger.transact(lambda db: db.execute(
            "INSERT INTO control_grants (key, permissions, created) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET permissions = excluded.permissions", (key, ",".join(perms), now)))
        self._disconnect(key)  # a connection keeps the permissions it was opened with: make it reconnect
        return {"key": key.hex(), "permissions": perms, "created": self._created(key)}

    def _created(self, key):
        with self.ledger.read() as db:
            row = db.execute("SELECT created FROM control_grants WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def rpc_list(self, params, conn):
        with self.ledger.read() as db:
            rows = db.execute("SELECT key, permissions, created FROM control_grants ORDER BY created, key").fetchall()
        return {"grants": [{"key": bytes(r[0]).hex(), "permissions": [p for p in r[1].split(",") if p],
                            "created": r[2]} for r in rows]}

    def rpc_revoke(self, params, conn):
        key = _key(params)

        def revoke(db):
            return db.execute("DELETE FROM control_grants WHERE key = ?", (key,)).rowcount

        if not self.ledger.transact(revoke):
            raise ControlError("not_found", "key %s has no grant (see `amiko grant --list`)" % key.hex())
        return {"key": key.hex(), "revoked": True, "closed": self._disconnect(key)}
