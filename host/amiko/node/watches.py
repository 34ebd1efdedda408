"""The `watch` subscription: a client learns a payment's state changes by push.

`watch {txid | payment_id}` answers the payee row's state now ({watch, txid, payment_id,
state, reason, token, updated}; state null while the node has no payee row for it) and then,
on the same connection, sends the notification

    {"jsonrpc": "2.0", "method": "payment_state", "params": {the same fields}}

after every committed change of that row's state (amiko.node.endpoints.observe: no polling),
until `unwatch {watch}` or the connection closes. At most MAX_PER_CONNECTION watches per
connection and MAX_WATCHES in all. `payments {since}` lists the payee payments created at or
after since (the bridge's day of sales) without the rest of `status`.
"""

import logging

from amiko.node import endpoints
from amiko.node.control import ControlError

log = logging.getLogger("amiko.watches")

MAX_PER_CONNECTION = 64
MAX_WATCHES = 4096
NOTIFICATION = "payment_state"
_FIELDS = ("payment_id", "state", "reason", "token", "updated")
_ROW_COLS = ("txid", "role") + endpoints.PAYMENT_FIELDS + ("created", "updated")


def _hex(v):
    return bytes(v).hex() if isinstance(v, (bytes, bytearray, memoryview)) else v


class Watches:
    def __init__(self, ledger):
        self.ledger = ledger
        self._next = 1
        self._watches = {}  # watch id -> [conn, txid bytes, last state]
        self._by_txid = {}  # txid bytes -> {watch id}
        self._stop = endpoints.observe(self._changed)

    def close(self):
        self._stop()
        self._watches.clear()
        self._by_txid.clear()

    def methods(self):
        return {"watch": self.rpc_watch, "unwatch": self.rpc_unwatch, "payments": self.rpc_payments}

    def _txid(self, params):
        txid, payment_id = params.get("txid"), params.get("payment_id")
        if (txid is None) == (payment_id is None):
            raise ControlError("invalid", "give exactly one of txid (40 hex digits) or payment_id")
        if txid is not None:
            try:
                raw = bytes.fromhex(txid) if isinstance(txid, str) else b""
            except ValueError:
                raw = b""
            if len(raw) != 20:
                raise ControlError("invalid", "txid must be 40 hex digits, got %r" % (txid,))
            return raw
        if not isinstance(payment_id, str) or not payment_id:
            raise ControlError("invalid", "payment_id must be a non-empty string")
        with self.ledger.read() as db:
            req = endpoints.get_request(db, payment_id=payment_id)
        if req is None:
            raise ControlError("not_found", "no payment request %r on this node" % payment_id)
        return bytes(req["txid"])

    def _state(self, wid, txid):
        with self.ledger.read() as db:
            row = endpoints.get_payment(db, txid, "payee")
        out = {"watch": wid, "txid": txid.hex()}
        out.update((k, _hex((row or {}).get(k))) for k in _FIELDS)
        return out

    def rpc_watch(self, params, conn):
        txid = self._txid(params)
        mine = sum(1 for w in self._watches.values() if w[0] is conn)
        if mine >= MAX_PER_CONNECTION or len(self._watches) >= MAX_WATCHES:
            raise ControlError("refused", "too many watches (%d on this connection, %d in all): unwatch some"
                               % (mine, len(self._watches)))
        wid = self._next
        self._next += 1
        state = self._state(wid, txid)
        self._watches[wid] = [conn, txid, state["state"]]
        self._by_txid.setdefault(txid, set()).add(wid)
        conn.on_close(lambda: self._drop(wid))
        return state

    def rpc_unwatch(self, params, conn):
        wid = params.get("watch")
        w = self._watches.get(wid) if type(wid) is int else None
        if w is None or w[0] is not conn:  # another connection's watch: as if it did not exist
            raise ControlError("not_found", "no watch %r on this connection" % (wid,))
        self._drop(wid)
        return {"watch": wid, "watching": False}

    def _drop(self, wid):
        w = self._watches.pop(wid, None)
        if w is None:
            return
        ids = self._by_txid.get(w[1])
        if ids is not None:
            ids.discard(wid)
            if not ids:
                del self._by_txid[w[1]]

    def _changed(self, txid):
        ids = self._by_txid.get(txid)
        if not ids:
            return
        for wid in sorted(ids):
            w = self._watches.get(wid)
            if w is None:
                continue
            state = self._state(wid, txid)
            if state["state"] == w[2]:
                continue
            w[2] = state["state"]
            if not w[0].notify(NOTIFICATION, state):
                self._drop(wid)

    def rpc_payments(self, params, conn):
        since = params.get("since", 0)
        if type(since) is not int or since < 0:
            raise ControlError("invalid", "since must be a unix time (whole seconds)")
        with self.ledger.read() as db:
            rows = db.execute("SELECT %s FROM payments WHERE role = 'payee' AND created >= ? "
                              "ORDER BY updated DESC, created DESC LIMIT 500" % ", ".join(_ROW_COLS),
                              (since,)).fetchall()
        return {"payments": [{k: _hex(v) for k, v in zip(_ROW_COLS, r)} for r in rows]}
