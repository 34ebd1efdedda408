"""The daemon's timer loop: fires the engine's stored timers when they fall due.

Timers live in the database (table timers, amiko.node.route), so a node that crashed fires on
restart whatever fell due while it was down. The loop:
- waits STARTUP_GRACE seconds after start, so that links reconnect and the messages queued
  for this node (a RequestCommit claiming a leg, say) are applied before an overdue commit
  deadline rolls that leg back;
- then repeatedly fires every due timer, each in its own store transaction through
  Engine.fire_timer (Node.transact: its messages are sent after COMMIT), and sleeps until
  the next due time, at most MAX_SLEEP: new timers are always set at least a time-out in the
  future, so looking again every MAX_SLEEP fires each within MAX_SLEEP of its due time
  without a wake-up from every transaction;
- a firing that fails (a bug, not a refusal) is logged and its timer postponed by
  RETRY_DELAY, so one bad row cannot spin the loop;
- every PURGE_EVERY seconds deletes old tombstones (Engine.purge, tombstone_retention).
"""

import asyncio
import logging
import time

log = logging.getLogger("amiko.timers")

STARTUP_GRACE = 1.0
MAX_SLEEP = 0.25
RETRY_DELAY = 5.0
PURGE_EVERY = 600.0
BATCH = 200


class TimerLoop:
    def __init__(self, ledger, engine, clock=time.time, grace=STARTUP_GRACE):
        self.ledger = ledger
        self.engine = engine
        self.clock = clock
        self.grace = grace
        self.task = None
        self.fired = 0
        self._next_purge = 0.0

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def close(self):
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
            self.task = None

    async def _run(self):
        await asyncio.sleep(self.grace)
        while True:
            now = self.clock()
            self.fire_due(now)
            if now >= self._next_purge:
                self._next_purge = now + PURGE_EVERY
                try:
                    self.ledger.transact(self.engine.purge, now)
                except Exception:
                    log.exception("purging old route entries")
            with self.ledger.read() as db:
                nxt = self.engine.next_timer(db)
            delay = MAX_SLEEP if nxt is None else min(max(nxt - self.clock(), 0.0), MAX_SLEEP)
            await asyncio.sleep(delay)

    def fire_due(self, now):
        engine = self.engine
        with self.ledger.read() as db:
            due = engine.due_timers(db, now, limit=BATCH)
        for t in due:
            try:
                if self.ledger.transact(engine.fire_timer, t["txid"], t["side"], t["kind"], now):
                    self.fired += 1
            except Exception:
                log.exception("firing the %s timer of %s/%d", t["kind"], bytes(t["txid"]).hex()[:12], t["side"])
                try:
                    self.ledger.transact(engine.postpone_timer, t["txid"], t["side"], t["kind"], now + RETRY_DELAY)
                except Exception:
                    log.exception("postponing a failed timer")
        return len(due)
