"""The node's durable state: one SQLite database, changed only in transactions.

Contract:
- Store(path, synchronous="FULL") opens (creating if needed) the database at path with
  journal_mode=WAL, synchronous=FULL (every COMMIT is on disk before it returns) and
  foreign keys on, and applies every schema registered so far. `synchronous` exists for
  tests that trade durability for speed ("NORMAL" or "OFF"); the node never changes it.
- register_schema(sql): a module adds its tables (idempotent SQL: CREATE ... IF NOT EXISTS)
  at import. A schema registered after a Store was opened is applied at its next
  transaction, so import order does not matter.
- `with store.transaction() as db:` BEGIN IMMEDIATE; the body uses db.execute(sql, args),
  db.executemany(...), db.after_commit(fn); normal exit COMMITs and then calls the
  after-commit functions in order (an exception in one is logged, the others still run:
  the transaction is durable by then, so its caller must not see it as failed); an
  exception ROLLs BACK, drops the after-commit functions and propagates.
  Transactions do not nest: opening one inside another raises RuntimeError.
  store.transaction(durable=False): the same, but its COMMIT does not wait for the disk
  (synchronous=NORMAL for it: in WAL mode no fsync). For changes that may be lost on a
  power failure without harm (the node applies a peer's Acks so: lost, the messages are
  resent and the peer drops them as duplicates). It survives a crash of the process, and
  the next durable COMMIT makes it durable too (the WAL is synced up to that commit), so
  the order of commits is kept.
- `with store.read() as db:` a consistent read snapshot (BEGIN DEFERRED ... ROLLBACK);
  inside an open transaction it reads that transaction's view instead.
- store.dump() -> str: the whole database as SQL text (iterdump), for tests and debugging.
- One connection per Store, guarded by a re-entrant lock, so a Store may be shared by
  threads (the daemon is single-threaded asyncio; the lock only makes misuse safe).
"""

import logging
import sqlite3
import threading
from contextlib import contextmanager

log = logging.getLogger("amiko.store")

SCHEMAS = []


def register_schema(sql):
    """Add a module's schema (idempotent SQL) to every store."""
    if sql not in SCHEMAS:
        SCHEMAS.append(sql)


_SYNC_MODES = ("FULL", "NORMAL", "OFF", "EXTRA")


class Transaction:
    """The handle a transaction body gets: execute, executemany, after_commit."""

    __slots__ = ("_conn", "_after", "readonly")

    def __init__(self, conn, readonly=False):
        self._conn = conn
        self._after = []
        self.readonly = readonly

    def execute(self, sql, args=()):
        return self._conn.execute(sql, args)

    def executemany(self, sql, seq):
        return self._conn.executemany(sql, seq)

    def after_commit(self, fn):
        """Call fn() once this transaction has committed (never if it rolls back)."""
        if self.readonly:
            raise RuntimeError("store: after_commit in a read snapshot")
        self._after.append(fn)


class Store:
    def __init__(self, path, synchronous="FULL"):
        if synchronous not in _SYNC_MODES:
            raise ValueError("store: synchronous must be one of %s" % ", ".join(_SYNC_MODES))
        self.path = str(path)
        self.synchronous = synchronous
        self._lock = threading.RLock()
        self._current = None
        self._applied = 0
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (the sqlite3 module's
        # implicit transactions would otherwise interleave with ours).
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError("store: %s cannot use WAL journaling (got %s)" % (self.path, mode))
        self._conn.execute("PRAGMA synchronous=%s" % synchronous)
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._apply_schemas()

    def _apply_schemas(self):
        while self._applied < len(SCHEMAS):
            # executescript commits any open transaction: only called outside ours.
            self._conn.executescript(SCHEMAS[self._applied])
            self._applied += 1

    @contextmanager
    def transaction(self, durable=True):
        with self._lock:
            if self._current is not None:
                raise RuntimeError("store: transactions do not nest")
            self._apply_schemas()
            relaxed = not durable and self.synchronous in ("FULL", "EXTRA")
            if relaxed:
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                tx = Transaction(self._conn)
                self._conn.execute("BEGIN IMMEDIATE")
                self._current = tx
                try:
                    yield tx
                except BaseException:
                    self._current = None
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self._current = None
                self._conn.execute("COMMIT")
            finally:
                if relaxed:
                    self._conn.execute("PRAGMA synchronous=%s" % self.synchronous)
        for fn in tx._after:
            try:
                fn()
            except Exception:
                log.exception("store: after-commit callback failed")

    @contextmanager
    def read(self):
        with self._lock:
            if self._current is not None:
                yield self._current
                return
            self._apply_schemas()
            tx = Transaction(self._conn, readonly=True)
            self._conn.execute("BEGIN DEFERRED")
            self._current = tx
            try:
                yield tx
            finally:
                self._current = None
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")

    def dump(self):
        with self._lock:
            return "\n".join(self._conn.iterdump())

    def close(self):
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
