"""What a node keeps as a payment endpoint: its meeting points, payment requests, payments.

Tables (SCHEMA, registered with the store):

    meeting_points(id PK, created)       meeting points this node is (besides node.toml's)
    requests(payment_id PK, txid UNIQUE, token, amount, receipt, meeting_points, state, created)
        a payee's request; meeting_points is a JSON list; state 'open' | 'cancelled'
        (the payment's progress is in payments)
    payments(txid, role, payment_id, amount, receipt, state, reason, token, payee_key,
             signature, meeting_point, created, updated)  PK (txid, role)
        role 'payer' | 'payee'; state: 'requested' | 'confirmed' | 'locked' | 'committed' |
        'cancelled' (final: 'committed', 'cancelled'); token is the proof of payment
        (hash160(token) == txid) with receipt, payee_key and signature.

Contract:
- create_request(db, amount, receipt, meeting_points, now) -> dict(payment_id, txid, token,
  meeting_points, amount, receipt); also records the payee's payments row ('requested').
- record_payment(db, **fields): insert (txid and role required); update_payment(db, txid,
  role, **fields). Unknown fields are refused. A final state is never left again
  (update_payment to another state raises AmikoError).
- payment_outcome(db, txid, state, reason=None, token=None): the engine's update after a
  network event: every non-final payments row of txid moves to state (token stored).
- observe(fn): fn(txid) after the commit of every transaction that wrote a payments row of
  txid (amiko.node.watches pushes the change to its subscribers); returns the un-observer.
"""

import base64
import json
import os
import time

from amiko_core import token as tokens
from amiko_core.errors import AmikoError

from amiko.node import meetingpoints
from amiko.node import store as _store
from amiko.node.channels import check_amount

SCHEMA = """
CREATE TABLE IF NOT EXISTS meeting_points (
    id      TEXT PRIMARY KEY,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    payment_id     TEXT PRIMARY KEY,
    txid           BLOB NOT NULL UNIQUE,
    token          BLOB NOT NULL,
    amount         INTEGER NOT NULL,
    receipt        TEXT NOT NULL,
    meeting_points TEXT NOT NULL,
    state          TEXT NOT NULL,
    created        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS payments (
    txid          BLOB NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('payer', 'payee')),
    payment_id    TEXT,
    amount        INTEGER NOT NULL,
    receipt       TEXT,
    state         TEXT NOT NULL,
    reason        TEXT,
    token         BLOB,
    payee_key     BLOB,
    signature     BLOB,
    signed_receipt BLOB,
    meeting_point TEXT,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    PRIMARY KEY (txid, role)
);
"""

_store.register_schema(SCHEMA)

# signed_receipt: the exact bytes the payee signed (messages.receipt_signed_bytes), so that
# (signed_receipt, payee_key, signature, token) is a self-contained proof of payment.
PAYMENT_FIELDS = ("payment_id", "amount", "receipt", "state", "reason", "token", "payee_key",
                  "signature", "signed_receipt", "meeting_point")
PAYMENT_STATES = ("requested", "confirmed", "locked", "committed", "cancelled")
FINAL_STATES = ("committed", "cancelled")
MAX_RECEIPT = 512
MAX_MEETING_POINTS = 8


def check_meeting_point(mp):
    """mp if it is a NAME@KEY meeting point id (amiko.node.meetingpoints), else AmikoError."""
    return meetingpoints.check(mp)


def check_receipt(receipt):
    if type(receipt) is not str:
        raise AmikoError("receipt must be text, got %s" % type(receipt).__name__)
    if len(receipt.encode("utf-8")) > MAX_RECEIPT:
        raise AmikoError("receipt is longer than %d UTF-8 bytes" % MAX_RECEIPT)
    for c in receipt:
        if (c < " " and c not in "\n\t") or "\x7f" <= c <= "\x9f":
            raise AmikoError("receipt contains control character %r" % c)
    return receipt


def add_meeting_point(db, mp, now):
    check_meeting_point(mp)
    db.execute("INSERT OR IGNORE INTO meeting_points (id, created) VALUES (?, ?)", (mp, int(now)))


def stored_meeting_points(db):
    return [r[0] for r in db.execute("SELECT id FROM meeting_points ORDER BY created, id").fetchall()]


def new_payment_id():
    """16 URL-safe characters from 96 random bits."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")


def create_request(db, amount, receipt, meeting_points, now):
    check_amount(amount)
    check_receipt(receipt)
    if not meeting_points:
        raise AmikoError("this node offers no meeting point: add one with `amiko meetingpoint ID` "
                         "or external_meeting_points in node.toml")
    meeting_points = list(meeting_points)[:MAX_MEETING_POINTS]
    token = tokens.new_token()
    txid = tokens.transaction_id(token)
    payment_id = new_payment_id()
    now = int(now)
    db.execute(
        "INSERT INTO requests (payment_id, txid, token, amount, receipt, meeting_points, state, created) "
        "VALUES (?, ?, ?, ?, ?, ?, 'open', ?)",
        (payment_id, txid, token, amount, receipt, json.dumps(meeting_points), now),
    )
    record_payment(db, txid=txid, role="payee", payment_id=payment_id, amount=amount, receipt=receipt,
                   state="requested", now=now)
    return {"payment_id": payment_id, "txid": txid, "token": token, "meeting_points": meeting_points,
            "amount": amount, "receipt": receipt}


def get_request(db, payment_id=None, txid=None):
    sql = "SELECT payment_id, txid, token, amount, receipt, meeting_points, state, created FROM requests WHERE "
    row = (db.execute(sql + "payment_id = ?", (payment_id,)) if txid is None
           else db.execute(sql + "txid = ?", (txid,))).fetchone()
    if row is None:
        return None
    return {"payment_id": row[0], "txid": row[1], "token": row[2], "amount": row[3], "receipt": row[4],
            "meeting_points": json.loads(row[5]), "state": row[6], "created": row[7]}


def cancel_request(db, payment_id):
    db.execute("UPDATE requests SET state = 'cancelled' WHERE payment_id = ?", (payment_id,))


def cancel_open_request(db, txid):
    """The payee gave its claim on txid up: its request, if still open, is cancelled, so the
    token is never released afterwards."""
    db.execute("UPDATE requests SET state = 'cancelled' WHERE txid = ? AND state = 'open'", (txid,))


def _check_fields(fields):
    for k in fields:
        if k not in PAYMENT_FIELDS:
            raise AmikoError("payments have no field %r" % (k,))
    if "state" in fields and fields["state"] not in PAYMENT_STATES:
        raise AmikoError("payment state must be one of %s, got %r" % (", ".join(PAYMENT_STATES), fields["state"]))
    if "amount" in fields:
        check_amount(fields["amount"])


def record_payment(db, txid, role, now=None, **fields):
    _check_fields(fields)
    if "amount" not in fields or "state" not in fields:
        raise AmikoError("a payment needs an amount and a state")
    now = int(time.time() if now is None else now)
    cols = ["txid", "role", "created", "updated"] + list(fields)
    vals = [txid, role, now, now] + list(fields.values())
    db.execute("INSERT INTO payments (%s) VALUES (%s)" % (", ".join(cols), ", ".join("?" * len(cols))), vals)
    _touched(db, txid)


_observers = []


def observe(fn):
    """fn(txid) after each commit that wrote a payments row of txid; returns a function that stops it."""
    _observers.append(fn)
    return lambda: _observers.remove(fn) if fn in _observers else None


def _touched(db, txid):
    for fn in list(_observers):
        db.after_commit(lambda fn=fn: fn(bytes(txid)))


def get_payment(db, txid, role):
    cols = ("txid", "role") + PAYMENT_FIELDS + ("created", "updated")
    row = db.execute("SELECT %s FROM payments WHERE txid = ? AND role = ?" % ", ".join(cols), (txid, role)).fetchone()
    return None if row is None else dict(zip(cols, row))


def update_payment(db, txid, role, now=None, **fields):
    _check_fields(fields)
    current = get_payment(db, txid, role)
    if current is None:
        raise AmikoError("no %s payment for this transaction" % role)
    if current["state"] in FINAL_STATES and fields.get("state", current["state"]) != current["state"]:
        raise AmikoError("payment is %s already" % current["state"])
    if not fields:
        return
    now = int(time.time() if now is None else now)
    sets = ", ".join("%s = ?" % k for k in fields)
    db.execute("UPDATE payments SET %s, updated = ? WHERE txid = ? AND role = ?" % sets,
               list(fields.values()) + [now, txid, role])
    _touched(db, txid)


def payment_outcome(db, txid, state, now, reason=None, token=None, role=None):
    """Move every non-final payment row of txid (of role, if given) to state."""
    sql = "UPDATE payments SET state = ?, reason = COALESCE(?, reason), token = COALESCE(?, token), updated = ? " \
          "WHERE txid = ? AND state NOT IN ('committed', 'cancelled')"
    args = [state, reason, token, int(now), txid]
    if role is not None:
        sql += " AND role = ?"
        args.append(role)
    db.execute(sql, args)
    _touched(db, txid)


def history(db, limit=100):
    cols = ("txid", "role") + PAYMENT_FIELDS + ("created", "updated")
    rows = db.execute("SELECT %s FROM payments ORDER BY updated DESC, created DESC LIMIT ?" % ", ".join(cols),
                      (limit,)).fetchall()
    return [dict(zip(cols, r)) for r in rows]
