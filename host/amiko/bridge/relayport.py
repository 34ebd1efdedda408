"""The bridge's wallet port over the relay core (amiko.relay.core.Relay) and its transports.

One Reader per configured transport ("serial:/dev/ttyACM0"), each a task that:
  - opens the transport, and when that fails (nothing plugged in) tries again every
    REOPEN seconds: hot-plug; a wallet unplugged mid-payment and plugged in again is found;
  - while no sale is on offer, watches the open port: bytes from the wallet mean a wallet
    that wants to pay with no sale pending (events.wallet_arrived: the machine shows that
    state; the bytes are dropped), end of stream / an error means the wallet left;
  - when a sale is offered (offer(sale_id, url)), taps the wallet with it: one relay session
    (Relay(transport).run(url)) that carries the payment link to the shop node and the Auth
    exchange to the wallet's provider over BOLT 8, until the wallet says Done and the line is
    quiet. The relay connects to a provider only if the port's ProviderPolicy allows it (the
    bridge config's `providers`); a wallet naming another one ends the sale as cancelled with
    that reason (events.wallet_declined), and nothing reaches the shop node or anywhere else.
The bridge hears what the wallet does by watching the frames in both directions (the relay
decodes and re-encodes them; this only reads their types): Hello -> wallet_arrived,
Receipt to the wallet -> wallet_confirming, Cancel from the wallet -> wallet_declined; and,
for the sale's timeline, events.wallet_mark(sale_id, mark, wallet_state) when the events
object has it: Hello (this session's), Confirm and Done{state} from the wallet, HavePayeeRoute, Commit{token} and
the provider's Status routed/locked/committed to it (amiko.bridge.sale.MARKS).
The session ends with the payment: rearm() (after any outcome) does not cut it short, so the
wallet still gets Commit{token} and its provider's answer; cancel(sale_id) does (the sale was
called off before the customer confirmed), and the reader is ready for the next sale either
way. One wallet pays a sale: a reader takes the offer only while its wallet is present (a
transport with a `present` attribute: a card in the NFC field, a connected BLE wallet; one
without it, a serial port, is present while open), and the first present reader in the
configured order wins: with ["nfc:..", "ble:..", "serial:.."] a wallet tapped or connected over
the air pays rather than one left on the cable. While a sale waits for a present wallet the idle
readers look again every PRESENCE_POLL seconds. A sale gets
one payment link: once the wallet sent Pay, a wallet that leaves before its Confirm ends the
sale (events.wallet_declined: the bridge cancels the request at the shop node, which keeps a
request open when a payer merely goes away); one that leaves after its Confirm leaves the
verdict to the shop node (SaleMachine.wallet_left); a session that ended before Pay leaves the
sale on offer for the next contact (after RETAP seconds).
"""

import asyncio
import logging

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl  # noqa: F401  (registers the wallet-link message types)
from amiko_core.errors import DecodeError

log = logging.getLogger("amiko.bridge.wallets")

REOPEN = 0.5
RETAP = 1.0
SESSION_TIMEOUT = 120
PRESENCE_POLL = 0.02
# the provider's Status to the wallet, as marks in the sale's timeline (amiko.bridge.sale.MARKS)
_STATUS_MARKS = {wl.ROUTED: "provider_routed", wl.LOCKED: "provider_locked", wl.COMMITTED: "provider_committed"}


class _Watch:
    """Decodes the message types of one direction of a byte stream (for events only)."""

    def __init__(self, on_message):
        self.decoder = frame.FrameDecoder(4096)
        self.on_message = on_message

    def feed(self, data):
        try:
            frames = self.decoder.feed(data)
        except Exception:  # the relay refuses malformed input itself; watching never breaks it
            return
        for fr in frames:
            try:
                msg = m.from_frame(fr)
            except DecodeError:
                continue
            try:
                self.on_message(msg)
            except Exception:
                log.exception("bridge: wallet event handler failed")


class _ObservedTransport:
    """The transport the relay uses, with both directions watched."""

    def __init__(self, transport, from_wallet, to_wallet):
        self.inner = transport
        self.from_wallet = _Watch(from_wallet)
        self.to_wallet = _Watch(to_wallet)
        self.ended = False

    async def read(self):
        try:
            data = await self.inner.read()
        except (OSError, Exception) as e:  # pyserial raises SerialException (an OSError) on unplug
            log.info("bridge: wallet transport read failed: %s", e)
            data = b""
        if not data:
            self.ended = True
        else:
            self.from_wallet.feed(data)
        return data

    def write(self, data):
        self.to_wallet.feed(data)
        try:
            self.inner.write(data)
        except Exception as e:
            log.info("bridge: wallet transport write failed: %s", e)
            self.ended = True

    def close(self):
        pass  # the reader owns the real transport


class Reader:
    def __init__(self, port, spec, opener):
        self.port = port
        self.spec = spec
        self.opener = opener
        self.transport = None
        self.session = None  # (sale_id, task)
        self.task = None
        self._wake = asyncio.Event()
        self._logged_absent = False
        self._idle_watch = _Watch(self._idle_message)
        self._read = None  # the idle read in flight (kept across idle rounds)

    def start(self):
        self.task = asyncio.ensure_future(self._run())

    def wake(self):
        self._wake.set()

    async def _run(self):
        while True:
            if self.transport is None:
                try:
                    self.transport = self.opener(self.spec)
                    self._logged_absent = False
                    log.info("bridge: wallet port %s open", self.spec)
                except (OSError, ValueError) as e:
                    if not self._logged_absent:
                        log.info("bridge: no wallet on %s yet (%s): waiting for one", self.spec, e)
                        self._logged_absent = True
                    await self._sleep(REOPEN)
                    continue
            offer = self.port.take_offer(self)
            if offer is not None:
                if await self._stop_idle_read():
                    await self._session(*offer)
                else:
                    self.port.session_over(offer[0], offer[1], again=True)
            else:
                await self._idle()

    def present(self):
        return self.transport is not None and bool(getattr(self.transport, "present", True))

    async def _stop_idle_read(self):
        """Cancel the idle read before a session; False when it had found the wallet gone."""
        read, self._read = self._read, None
        if read is not None and not read.done():
            read.cancel()
        if read is not None:
            await asyncio.gather(read, return_exceptions=True)
            if read.cancelled():
                return True
            if read.exception() is not None or read.result() == b"":
                self._lost("%s" % (read.exception() or "end of stream"))
                return False
            self._idle_watch.feed(read.result())
        return True

    async def _sleep(self, seconds):
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _idle(self):
        """No sale for us: watch the port until an offer arrives or the wallet talks/leaves."""
        self._wake.clear()
        if self._read is None:
            self._read = asyncio.ensure_future(self.transport.read())
        read = self._read
        wake = asyncio.ensure_future(self._wake.wait())
        # a sale waiting for a present wallet: look again soon (presence changes make no bytes)
        timeout = PRESENCE_POLL if self.port.offer_ is not None else None
        try:
            await asyncio.wait([read, wake], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not wake.done():
                wake.cancel()
            await asyncio.gather(wake, return_exceptions=True)
        if read.done():
            self._read = None
            exc = read.exception() if not read.cancelled() else None
            data = None if exc is not None or read.cancelled() else read.result()
            if exc is not None or data == b"":
                self._lost("%s" % (exc or "end of stream"))
            elif data:
                self._idle_watch.feed(data)

    def _idle_message(self, msg):
        log.info("bridge: a wallet on %s sent %s with no sale pending: dropped", self.spec, type(msg).__name__)
        self.port.events.wallet_arrived(self.spec)

    def _lost(self, why):
        log.info("bridge: wallet on %s left (%s)", self.spec, why)
        try:
            self.transport.close()
        except Exception:
            pass
        self.transport = None
        self.port.events.wallet_left(self.spec)

    async def _session(self, sale_id, url):
        from amiko.relay.core import Relay

        events = self.port.events
        arrived = []
        paying = []
        confirmed = []

        marking = getattr(events, "wallet_mark", None)

        def mark(name, wallet_state=None):
            if marking is not None:
                marking(sale_id, name, wallet_state)

        def from_wallet(msg):
            if msg.type == m.PAY:
                paying.append(True)
            if msg.type == wl.HELLO and not arrived:
                arrived.append(True)
                events.wallet_arrived(self.spec)
                mark("hello")
            elif msg.type == m.CONFIRM:
                confirmed.append(True)
                mark("confirm")
            elif msg.type == m.CANCEL:
                events.wallet_declined("the customer declined on the wallet")
            elif msg.type == wl.DONE:
                state = wl.STATE_NAMES[msg.state] if msg.state < len(wl.STATE_NAMES) else "%s" % msg.state
                log.info("bridge: wallet on %s done: %s%s", self.spec, state,
                         " (%s)" % msg.reason if getattr(msg, "reason", None) else "")
                mark("wallet_done", state)

        def to_wallet(msg):
            if msg.type == m.RECEIPT:
                events.wallet_confirming()
            elif msg.type == m.HAVE_PAYEE_ROUTE:
                mark("payee_route")
            elif msg.type == m.COMMIT:
                mark("token")
            elif msg.type == wl.STATUS and msg.state in _STATUS_MARKS:
                mark(_STATUS_MARKS[msg.state])

        observed = _ObservedTransport(self.transport, from_wallet, to_wallet)
        relay = Relay(observed, providers=self.port.providers)
        task = asyncio.ensure_future(relay.run(url, timeout=SESSION_TIMEOUT))
        self.session = (sale_id, task)
        try:
            result = await task
            log.info("bridge: relay session for sale %s on %s: %s", sale_id, self.spec, result.get("result"))
            if relay.blocked is not None:
                log.warning("bridge: sale %s: %s", sale_id, relay.blocked)
                events.wallet_declined("refused: %s" % relay.blocked)
        except asyncio.CancelledError:
            if self.port.closing:
                raise
            log.info("bridge: relay session for sale %s on %s cut short (sale cancelled)", sale_id, self.spec)
        except Exception:
            log.exception("bridge: relay session on %s failed", self.spec)
        finally:
            self.session = None
            self.port.session_over(sale_id, url, again=not paying)
        if observed.ended and paying and not confirmed:
            # The shop node keeps a request open when its payer goes away before confirming (a
            # bystander's Pay must not end a sale): the shop calls this sale off itself.
            events.wallet_declined("the wallet left before the payment was confirmed")
        if observed.ended:
            self._lost("contact ended during the payment")
        if not paying:
            await self._sleep(RETAP)  # no payment link was opened: the sale may be tapped again, not in a tight loop

    def cancel_session(self, sale_id):
        if self.session is not None and self.session[0] == sale_id:
            self.session[1].cancel()

    async def close(self):
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self._read is not None:
            self._read.cancel()
            await asyncio.gather(self._read, return_exceptions=True)
            self._read = None
        if self.transport is not None:
            try:
                self.transport.close()
            except Exception:
                pass
            self.transport = None


class RelayPort:
    """The bridge's wallet port (see amiko.bridge.wallets) over amiko.relay and amiko.transports."""

    def __init__(self, transports, events, opener=None, providers=None):
        if opener is None:
            from amiko.transports import open_transport as opener
        self.events = events
        self.providers = providers  # amiko.relay.policy.ProviderPolicy (None: any provider)
        self.readers = [Reader(self, spec, opener) for spec in transports]
        self.offer_ = None  # (sale_id, url) not yet taken by a reader
        self.done_sales = set()  # sales that ended here (paid, cancelled): never offered again
        self.current = None
        self.closing = False

    async def start(self):
        for r in self.readers:
            r.start()

    def take_offer(self, reader):
        if self.offer_ is None or any(r.session for r in self.readers) or not reader.present():
            return None
        for r in self.readers:  # an earlier reader with its wallet present goes first
            if r is reader:
                break
            if r.present():
                return None
        offer, self.offer_ = self.offer_, None
        return offer

    def session_over(self, sale_id, url, again):
        """A session ended. Once the wallet opened the payment link (Pay), the sale is never
        offered again: if the wallet left before confirming, the sale was called off
        (wallet_declined) and the bridge cancels the request at the shop node. If it ended before any Pay (the
        wallet went away or refused the tap), the request is untouched: the sale stays on offer
        for the next wallet contact."""
        if not again:
            self.done_sales.add(sale_id)
        elif sale_id == self.current and sale_id not in self.done_sales and self.offer_ is None:
            self.offer_ = (sale_id, url)

    def offer(self, sale_id, url):
        self.current = sale_id
        self.offer_ = (sale_id, url)
        for r in self.readers:
            r.wake()

    def rearm(self):
        """The sale is over (paid or cancelled): nothing more on offer; running sessions finish."""
        if self.current is not None:
            self.done_sales.add(self.current)
        self.offer_ = None
        for r in self.readers:
            r.wake()

    def cancel(self, sale_id, reason):
        self.done_sales.add(sale_id)
        if self.offer_ is not None and self.offer_[0] == sale_id:
            self.offer_ = None
        for r in self.readers:
            r.cancel_session(sale_id)

    async def close(self):
        self.closing = True
        await asyncio.gather(*(r.close() for r in self.readers), return_exceptions=True)
