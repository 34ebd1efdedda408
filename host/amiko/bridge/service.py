"""The bridge: the sale state machine driven by the shop node, the wallets and the clock.

Bridge carries out the machine's effects (amiko.bridge.sale):
  create_request -> node `request` (amount, receipt) -> machine.request_created / request_failed
  watch          -> a task subscribed to the node's `watch` {txid}: the payee row's state now, then
                    pushed on every change (no polling) -> machine.node_state (the node is the
                    truth about money); when the connection drops the task watches again
  offer / rearm / cancel_request -> the wallet port (amiko.bridge.wallets); cancel_request also
                    asks the node to cancel the request (control method `cancel` {id, reason}) so
                    its URL can no longer be paid; when the node refuses or cannot be reached the
                    page says so (machine.cancel_failed) and the bridge follows the payment on
  changed        -> every subscriber gets the new snapshot (the page's websockets)
A ticker feeds the clock (machine.tick) so every phase's time-out fires even when nothing
else happens. All of it runs on one asyncio loop: no locks needed around the machine.
"""

import asyncio
import logging
import time

import segno

from amiko.bridge import sale as sales
from amiko.bridge.nodeclient import NodeClient
from amiko.bridge.wallets import open_wallet_port
from amiko.node.control import ControlError

log = logging.getLogger("amiko.bridge")

TICK = 0.2
RECONNECT = 1.0  # seconds before watching again after the node could not be reached
HISTORY_KEYS = ("txid", "payment_id", "amount", "receipt", "state", "reason", "token", "payee_key", "signature",
                "meeting_point", "created", "updated")


def qr_svg(url):
    """The QR code of url as inline SVG (scales with its box; no external assets)."""
    qr = segno.make(url, error="m")
    svg = qr.svg_inline(scale=1, border=2, dark="#000", light="#fff")
    n = qr.symbol_size(scale=1, border=2)[0]
    return svg.replace('<svg width="%d" height="%d"' % (n, n),
                       '<svg viewBox="0 0 %d %d" width="100%%" height="100%%" role="img" aria-label="QR code of the payment URL"'
                       % (n, n), 1)


class Bridge:
    def __init__(self, config, node=None, clock=time.monotonic, wall_clock=time.time, wallet_port=None):
        self.config = config
        self.node = node or NodeClient(config.node, state_dir=config.state_dir)
        self.clock = clock
        self.wall_clock = wall_clock
        self.machine = sales.SaleMachine(config.timeouts)
        self.wallets = wallet_port if wallet_port is not None else open_wallet_port(
            config.transports, self, config.node, providers=self.provider_policy())
        self._subscribers = set()
        self._watches = {}  # sale id -> task
        self._tasks = set()
        self._ticker = None
        self._qr = (None, None)
        self.node_problem = None
        self.outcomes = {}  # txid -> {transport, tap_to_paid_ms, sale_id} for today's payments
        self.recent = []  # (wall time, text) of recent sale events, newest last

    def provider_policy(self):
        """Where the relay may reach a wallet's provider: the config's `providers`, by default
        the shop node's own address (its `listen`, asked once)."""
        from amiko.relay.policy import ProviderPolicy

        async def shop_node():
            info = await self.node.call("info", timeout=5)
            return [info["listen"]]

        return ProviderPolicy(getattr(self.config, "providers", None), default=shop_node)

    # -- life cycle

    async def start(self):
        await self.wallets.start()
        self.wallets.rearm()
        self._ticker = asyncio.ensure_future(self._tick_forever())

    async def close(self):
        if self._ticker is not None:
            self._ticker.cancel()
        tasks = list(self._tasks) + list(self._watches.values()) + ([self._ticker] if self._ticker else [])
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.wallets.close()
        await self.node.close()

    # -- subscribers (websockets)

    def subscribe(self, fn):
        """fn(snapshot) on every change; returns an unsubscribe function."""
        self._subscribers.add(fn)
        return lambda: self._subscribers.discard(fn)

    def snapshot(self):
        snap = self.machine.snapshot(self.clock())
        snap["shop_name"] = self.config.shop_name
        snap["currency"] = self.config.currency
        snap["default_receipt"] = self.config.receipt
        snap["node"] = self.node.describe()
        snap["node_problem"] = self.node_problem
        sale = snap["sale"]
        if sale and sale.get("url") and snap["phase"] in (sales.WAITING, sales.CONNECTED, sales.CONFIRMING):
            if self._qr[0] != sale["url"]:
                self._qr = (sale["url"], qr_svg(sale["url"]))
            sale["qr_svg"] = self._qr[1]
        return snap

    def _publish(self):
        snap = self.snapshot()
        for fn in list(self._subscribers):
            try:
                fn(snap)
            except Exception:
                log.exception("bridge: subscriber failed")

    # -- cashier actions (raise SaleError for the page)

    def start_sale(self, amount, receipt=None):
        receipt = self.config.receipt if receipt is None else receipt
        self._apply(self.machine.start(amount, receipt, self.clock()))
        self._note("sale %d: %d %s started (%s)" % (self.machine.sale.id, amount, self.config.currency, receipt or "no receipt"))
        return self.snapshot()

    def cancel_sale(self, reason="cancelled by the cashier"):
        self._apply(self.machine.cancel(self.clock(), reason))
        return self.snapshot()

    def dismiss(self):
        self._apply(self.machine.dismiss(self.clock()))
        return self.snapshot()

    # -- wallet events (the relay calls these; see amiko.bridge.wallets)

    def wallet_arrived(self, transport):
        self._note("wallet connected on %s" % transport)
        self._apply(self.machine.wallet_arrived(transport, self.clock()))

    def wallet_confirming(self):
        self._apply(self.machine.wallet_confirming(self.clock()))

    def wallet_mark(self, sale_id, mark, wallet_state=None):
        """A moment on the wallet's line for the sale's timeline (amiko.bridge.sale.MARKS)."""
        self._apply(self.machine.wallet_mark(sale_id, mark, self.clock(), wallet_state))

    def wallet_declined(self, reason="the customer declined on the wallet"):
        self._apply(self.machine.wallet_declined(self.clock(), reason))

    def wallet_left(self, transport):
        self._note("wallet left %s" % transport)
        self._apply(self.machine.wallet_left(transport, self.clock()))

    # -- effects

    def _note(self, text):
        log.info("bridge: %s", text)
        self.recent.append((self.wall_clock(), text))
        del self.recent[:-200]

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _apply(self, effects):
        changed = False
        for effect in effects:
            kind = effect[0]
            if kind == "create_request":
                self._spawn(self._create_request(*effect[1:]))
            elif kind == "offer":
                self.wallets.offer(effect[1], effect[2])
            elif kind == "rearm":
                self.wallets.rearm()
                self._record_outcome()
            elif kind == "cancel_request":
                self.wallets.cancel(effect[1], effect[3])
                if effect[2] is not None:
                    self._spawn(self._cancel_request(effect[1], effect[2], effect[3]))
            elif kind == "watch":
                self._watch(effect[1], effect[2])
            elif kind == "unwatch":
                task = self._watches.pop(effect[1], None)
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            elif kind == "changed":
                changed = True
        if changed:
            self._publish()

    def _record_outcome(self):
        sale = self.machine.sale
        if sale is None or self.machine.phase not in sales.FINAL:
            return
        self._note("sale %d: %s%s" % (sale.id, self.machine.phase, ": " + sale.reason if sale.reason else ""))
        if sale.txid:
            self.outcomes[sale.txid] = {"sale_id": sale.id, "transport": sale.transport,
                                        "tap_to_paid_ms": sale.tap_to_paid_ms(), "bridge_state": self.machine.phase,
                                        "bridge_reason": sale.reason}

    async def _create_request(self, sale_id, amount, receipt):
        try:
            r = await self.node.call("request", {"amount": amount, "receipt": receipt},
                                     timeout=self.machine.timeouts[sales.PREPARING])
            self.node_problem = None
        except ControlError as e:
            self._apply(self.machine.request_failed(sale_id, e.message, self.clock()))
            return
        self._note("sale %d: request %s" % (sale_id, r.get("url")))
        self._apply(self.machine.request_created(sale_id, r["url"], r["payment_id"], r["txid"], self.clock()))

    async def _cancel_request(self, sale_id, payment_id, reason):
        try:
            await self.node.call("cancel", {"id": payment_id, "reason": reason}, timeout=5)
        except ControlError as e:
            sale = self.machine.sale
            try:  # refused because the node ended it already (e.g. the customer declined): nothing to say
                row = await self.payment(sale.txid) if sale is not None and sale.id == sale_id and sale.txid else None
            except ControlError:
                row = None
            if row is not None and row.get("state") == "cancelled":
                return
            log.warning("bridge: the node did not cancel request %s: %s (%s)", payment_id, e.message, e.code)
            self._apply(self.machine.cancel_failed(sale_id, e.message, self.clock()))

    def _watch(self, sale_id, txid):
        old = self._watches.pop(sale_id, None)
        if old is not None:
            old.cancel()
        task = asyncio.ensure_future(self._follow(sale_id, txid))
        self._watches[sale_id] = task

    async def _follow(self, sale_id, txid):
        """Follow the node's pushed states of the payee row of txid until the machine says unwatch."""
        last = None
        while sale_id in self._watches:
            watch = None
            try:
                watch = await self.node.watch({"txid": txid}, timeout=5)
                if self.node_problem is not None:
                    self.node_problem = None
                    self._publish()
                row = watch.state
                while True:
                    if row.get("state") is not None and row["state"] != last:
                        last = row["state"]
                        self._apply(self.machine.node_state(sale_id, row["state"], self.clock(), row.get("reason")))
                    if sale_id not in self._watches:
                        return
                    row = await watch.next()
            except ControlError as e:
                if self.node_problem != e.message:
                    self.node_problem = e.message
                    log.warning("bridge: %s", e.message)
                    self._publish()
                await asyncio.sleep(RECONNECT)  # the node is away: try again (each try is one connection)
            finally:
                if watch is not None:
                    watch.close()

    async def payment(self, txid):
        """The node's payee row for txid (None if it has none)."""
        rows = (await self.node.call("payments", {}, timeout=5))["payments"]
        for row in rows:
            if row.get("txid") == txid:
                return row
        return None

    async def payments_today(self):
        """The shop node's payee payments since local midnight, newest first, with the bridge's
        transport and tap-to-paid time where it knows them."""
        now = time.localtime(self.wall_clock())
        midnight = time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))
        rows = []
        for row in (await self.node.call("payments", {"since": int(midnight)}, timeout=5))["payments"]:
            if row.get("role") != "payee" or (row.get("created") or 0) < midnight:
                continue
            item = {k: row.get(k) for k in HISTORY_KEYS}
            known = self.outcomes.get(row.get("txid"), {})
            item.update(known)
            if item["state"] not in ("committed", "cancelled"):
                if known.get("bridge_state") != sales.CANCELLED:
                    continue  # in progress: the sale panel shows it
                # cancelled here, but the node did not cancel its request (see cancel_failed)
                item["state"], item["reason"] = "cancelled", known.get("bridge_reason")
            rows.append(item)
        return rows

    async def _tick_forever(self):
        while True:
            await asyncio.sleep(TICK)
            try:
                effects = self.machine.tick(self.clock())
                if effects:
                    self._apply(effects)
                elif self.machine.deadline is not None:
                    self._publish_countdown()
            except Exception:
                log.exception("bridge: tick failed")

    def _publish_countdown(self):
        left = max(0, int(self.machine.deadline - self.clock() + 0.999))
        if left != getattr(self, "_last_left", None):
            self._last_left = left
            self._publish()
