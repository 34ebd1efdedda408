"""The narrow interfaces the daemon hands its services instead of itself.

A service (payment links, provider, timers, provisioning, watches, grants, the control stream)
receives the few of these it uses, plus the engine (the owner of payment state) and the node's
identity and config where it needs them:

    Ledger    read() a snapshot, transact(fn, ...) a change in one store transaction; after
              its COMMIT the node links send what the transaction enqueued.
    Payments  the questions the payment links ask about this endpoint's payments: a request
              by payment id (with the state of its payee row), cancelling a request, the token
              the payer learned (its proof of payment).
"""

from amiko.node import endpoints


class Ledger:
    __slots__ = ("_store", "_after_commit")

    def __init__(self, store, after_commit):
        self._store = store
        self._after_commit = after_commit

    def read(self):
        return self._store.read()

    def transact(self, fn, *args, **kwargs):
        """fn(db, *args, **kwargs) in one store transaction; after COMMIT, send what it enqueued."""
        with self._store.transaction() as db:
            result = fn(db, *args, **kwargs)
        self._after_commit()
        return result


class Payments:
    __slots__ = ("_ledger", "_engine")

    def __init__(self, ledger, engine):
        self._ledger = ledger
        self._engine = engine

    def request(self, payment_id):
        """This node's request for a payment id (amount, receipt, token, meeting_points, state)
        with payment_state, the state of its payee payments row; None if there is none."""
        with self._ledger.read() as db:
            req = endpoints.get_request(db, payment_id=payment_id)
            if req is not None:
                row = self._engine.payment(db, req["txid"], "payee")
                req["payment_state"] = row["state"] if row else None
        return req

    @staticmethod
    def cancel_request(db, payment_id):
        endpoints.cancel_request(db, payment_id)

    def token(self, txid):
        """The token the payer learned for txid (its proof of payment), or None."""
        with self._ledger.read() as db:
            row = self._engine.payment(db, txid, "payer")
            token = (row or {}).get("token") or self._engine.known_token(db, txid)
        return bytes(token) if token else None
