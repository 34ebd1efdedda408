"""The provider's copy of a wallet's auto-confirm rules (firmware/wallet/core.py has the other).

A wallet confirms a payment without its button only within these limits, all counted since
the last button press; the provider counts the same from the authenticated Auth{route}
(walletlink confirm field) and refuses an auto-confirmed route beyond them, so that a
wallet whose key leaked, or a wallet firmware that was changed, cannot auto-pay further:
    auto        most per auto-confirmed payment (the wallets table's `auto`)
    auto_count  auto-confirmed payments since the last press      (default DEFAULT_COUNT)
    auto_total  their cumulative amount since the last press      (default DEFAULT_TOTAL_FACTOR * auto)
    auto_new    of those, payments to a payee never confirmed by the button, among the last
                MAX_PAYEES payees so confirmed                    (default DEFAULT_NEW)
A route confirmed by the button resets the counters and puts its payee (walletlink.payee_tag
of the Auth's payee key) first in the wallet's set. Every accepted new route counts, also one
that fails or is cancelled later (the wallet counts when it authorises; nothing is given back).

Tables: wallet_auto(wallet PK, auto_count, auto_total, auto_new, count, total, new) and
wallet_payees(wallet, tag, seq): the confirmed payees, newest = highest seq. A wallet account
without a wallet_auto row (made before these rules) has no auto-confirm allowance at all.
"""

from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko.node import store as _store

SCHEMA = """
CREATE TABLE IF NOT EXISTS wallet_auto (
    wallet      TEXT PRIMARY KEY,
    auto_count  INTEGER NOT NULL,
    auto_total  INTEGER NOT NULL,
    auto_new    INTEGER NOT NULL,
    count       INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL DEFAULT 0,
    new         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS wallet_payees (
    wallet  TEXT NOT NULL,
    tag     BLOB NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (wallet, tag)
);
"""

_store.register_schema(SCHEMA)

DEFAULT_COUNT = 5
DEFAULT_TOTAL_FACTOR = 3
DEFAULT_NEW = 2
MAX_COUNT = 0xFFFF  # as walletlink's Provision auto_count, auto_new
MAX_PAYEES = 16  # as firmware/wallet/core.py MAX_PAYEES
NAMES = ("auto_count", "auto_total", "auto_new")


def defaults(auto):
    return {"auto_count": DEFAULT_COUNT, "auto_total": min(DEFAULT_TOTAL_FACTOR * auto, m.MAX_AMOUNT),
            "auto_new": DEFAULT_NEW}


def values(given, auto):
    """The three limits from given (missing or None: the default for auto); ValueError says
    which one is out of range."""
    out = defaults(auto)
    for name in NAMES:
        v = given.get(name)
        if v is None:
            continue
        top = m.MAX_AMOUNT if name == "auto_total" else MAX_COUNT
        if type(v) is not int or not 0 <= v <= top:
            raise ValueError("%s must be a whole number in 0..%d" % (name, top))
        out[name] = v
    return out


def create(db, wallet_id, limits):
    db.execute("INSERT INTO wallet_auto (wallet, auto_count, auto_total, auto_new) VALUES (?, ?, ?, ?)",
               (wallet_id, limits["auto_count"], limits["auto_total"], limits["auto_new"]))


def get(db, wallet_id):
    """Limits and counters of a wallet: dict(auto_count, auto_total, auto_new, count, total, new)."""
    row = db.execute("SELECT auto_count, auto_total, auto_new, count, total, new FROM wallet_auto WHERE wallet = ?",
                     (wallet_id,)).fetchone()
    return dict(zip(NAMES + ("count", "total", "new"), row or (0, 0, 0, 0, 0, 0)))


def _known(db, wallet_id, tag):
    return db.execute("SELECT 1 FROM wallet_payees WHERE wallet = ? AND tag = ?", (wallet_id, tag)).fetchone() is not None


def refusal(db, w, auth):
    """Why the provider refuses this Auth{route}'s auto-confirmation (None: within the rules,
    or confirmed by the button). w is the wallets row (its `auto`)."""
    if auth.confirm == wl.BUTTON:
        return None
    a = get(db, w["id"])
    press = ": a button press on the wallet is required"
    if auth.amount > w["auto"]:
        return "auto-confirmed amount %d is over the wallet's auto-confirm amount %d%s" % (auth.amount, w["auto"], press)
    if a["count"] + 1 > a["auto_count"]:
        return "%d auto-confirmed payments since the last press, at most %d%s" % (a["count"], a["auto_count"], press)
    if a["total"] + auth.amount > a["auto_total"]:
        return "auto-confirmed %d since the last press, this one would pass the limit %d%s" % (
            a["total"], a["auto_total"], press)
    if not _known(db, w["id"], wl.payee_tag(auth.payee_key)) and a["new"] + 1 > a["auto_new"]:
        return "%d auto-confirmed payments to new payees since the last press, at most %d%s" % (
            a["new"], a["auto_new"], press)
    return None


def record(db, wallet_id, auth):
    """Count an accepted Auth{route}: a press resets and trusts the payee; auto counts."""
    tag = wl.payee_tag(auth.payee_key)
    if auth.confirm == wl.BUTTON:
        db.execute("UPDATE wallet_auto SET count = 0, total = 0, new = 0 WHERE wallet = ?", (wallet_id,))
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM wallet_payees WHERE wallet = ?",
                         (wallet_id,)).fetchone()[0]
        db.execute("INSERT OR REPLACE INTO wallet_payees (wallet, tag, seq) VALUES (?, ?, ?)", (wallet_id, tag, seq))
        db.execute("DELETE FROM wallet_payees WHERE wallet = ? AND tag NOT IN (SELECT tag FROM wallet_payees WHERE "
                   "wallet = ? ORDER BY seq DESC LIMIT ?)", (wallet_id, wallet_id, MAX_PAYEES))
        return
    new = 0 if _known(db, wallet_id, tag) else 1
    db.execute("UPDATE wallet_auto SET count = count + 1, total = total + ?, new = new + ? WHERE wallet = ?",
               (auth.amount, new, wallet_id))
