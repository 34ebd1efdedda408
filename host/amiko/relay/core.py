"""Relay a wallet's frames: payment link to the payee's node, Auth to the wallet's provider.

The wallet has no network address; a terminal (this relay) carries its frames for one contact:

    wallet --(transport: serial, later NFC/BLE)--> relay --TCP--> payee node (amikopay URL)
                                                         --TCP--> provider node (Hello.provider)

Router is the sans-IO part: it decodes the frames of each side and says where each goes.
    wallet -> payee:     payment-link messages (Pay, Confirm, Cancel)
    wallet -> provider:  Auth
    wallet -> relay:     Hello (where the provider is), Done (outcome), Refused (logged)
    payee -> wallet:     payment-link messages (Receipt, Cancel, HavePayeeRoute, Commit)
    provider -> wallet:  Status (its Error frames are logged)
Anything else is dropped and counted. Frames are relayed as decoded and re-encoded: a
malformed frame never crosses. The relay holds no secret and cannot forge anything the
wallet or the provider accept (amiko_core.walletlink).

Relay drives a Router over asyncio for one session (one contact): pay(url) taps the wallet
with a payment URL and returns when the wallet says Done (or refuses the Tap: busy,
not provisioned) and the provider has answered what followed; contact() taps without a URL (the wallet resolves a pending payment).
A transport is any object with `async read() -> bytes` (b"" when closed), `write(data)` and
`close()` (amiko.transports).
"""

import asyncio
import logging

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.errors import AmikoError, DecodeError
from amiko_core.url import parse_link, parse_pay

log = logging.getLogger("amiko.relay")

TO_PAYEE = (m.PAY, m.CONFIRM, m.CANCEL)
FROM_PAYEE = (m.RECEIPT, m.CANCEL, m.HAVE_PAYEE_ROUTE, m.COMMIT)
FROM_PROVIDER = (wl.STATUS,)  # the provider's Error frames are logged, not relayed
MAX_FRAME = 4096


class Router:
    """Sans-IO: feed bytes from a side, get (destination, payload) actions back.
    destinations: "payee", "provider", "wallet" (frame bytes), "hello", "done", "error" (Message)."""

    def __init__(self):
        self.decoders = {s: frame.FrameDecoder(MAX_FRAME) for s in ("wallet", "payee", "provider")}
        self.dropped = 0
        self.hello = None
        self.done = None

    def _messages(self, side, data):
        out = []
        for fr in self.decoders[side].feed(data):
            try:
                out.append(m.from_frame(fr))
            except DecodeError as e:
                self.dropped += 1
                log.info("relay: dropped a frame from the %s: %s", side, e.reason)
        return out

    def from_wallet(self, data):
        actions = []
        for msg in self._messages("wallet", data):
            if msg.type in TO_PAYEE:
                actions.append(("payee", m.to_frame(msg)))
            elif msg.type == wl.AUTH:
                actions.append(("provider", m.to_frame(msg)))
            elif msg.type == wl.HELLO:
                self.hello = msg
                actions.append(("hello", msg))
            elif msg.type == wl.DONE:
                self.done = msg
                actions.append(("done", msg))
            elif msg.type == wl.REFUSED_MSG:
                actions.append(("error", msg))
            else:
                self.dropped += 1
        return actions

    def _to_wallet(self, side, data, allowed):
        actions = []
        for msg in self._messages(side, data):
            if msg.type in allowed:
                actions.append(("wallet", m.to_frame(msg)))
            else:
                if msg.type == m.ERROR:
                    log.info("relay: the %s says: %s", side, msg.reason)
                self.dropped += 1
        return actions

    def from_payee(self, data):
        return self._to_wallet("payee", data, FROM_PAYEE)

    def from_provider(self, data):
        return self._to_wallet("provider", data, FROM_PROVIDER)


class RelayError(Exception):
    pass


class Relay:
    """One contact between a wallet transport and the network."""

    def __init__(self, transport, connect=None, connect_timeout=10):
        self.transport = transport
        self.router = Router()
        self.connect = connect or asyncio.open_connection
        self.connect_timeout = connect_timeout
        self.pay_url = None
        self.conns = {}  # "payee"/"provider" -> (reader, writer)
        self.tasks = []
        self.errors = []
        self._done = asyncio.Event()
        self._activity = asyncio.Event()
        self.last_wallet_tx = 0.0
        self.refused = None

    async def _open(self, side):
        if side in self.conns:
            return self.conns[side][1]
        if side == "payee":
            u = parse_pay(self.pay_url)
        else:
            if self.router.hello is None:
                raise RelayError("the wallet sent Auth before Hello: no provider to relay to")
            u = parse_link(self.router.hello.provider)
        reader, writer = await asyncio.wait_for(self.connect(u.host, u.port), self.connect_timeout)
        self.conns[side] = (reader, writer)
        self.tasks.append(asyncio.ensure_future(self._pump_tcp(side, reader)))
        return writer

    async def _pump_tcp(self, side, reader):
        feed = self.router.from_payee if side == "payee" else self.router.from_provider
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                for dest, payload in feed(data):
                    self.transport.write(payload)
                    self.last_wallet_tx = asyncio.get_running_loop().time()
                    self._activity.set()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.conns.pop(side, None)

    async def _pump_wallet(self):
        while True:
            data = await self.transport.read()
            if not data:
                self._done.set()
                return
            for dest, payload in self.router.from_wallet(data):
                self._activity.set()
                if dest in ("payee", "provider"):
                    try:
                        writer = await self._open(dest)
                        writer.write(payload)
                    except (OSError, asyncio.TimeoutError, RelayError, AmikoError) as e:
                        self.errors.append("%s: %s" % (dest, e))
                        log.warning("relay: cannot reach the %s: %s", dest, e)
                elif dest == "done":
                    self._done.set()
                elif dest == "error":
                    self.errors.append(payload.reason)
                    log.info("relay: wallet refused something: %s", payload.reason)
                    if payload.ref_type == wl.TAP and self.router.done is None:
                        self.refused = payload.reason  # no payment will start: end the session
                        self._done.set()

    async def _quiet(self, seconds, limit):
        """Wait until nothing moved for `seconds` (at most `limit` seconds)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while loop.time() < end:
            self._activity.clear()
            try:
                await asyncio.wait_for(self._activity.wait(), seconds)
            except asyncio.TimeoutError:
                return

    async def run(self, url=None, timeout=60, linger=1.0):
        """Tap the wallet (with a payment URL or without), relay until Done (or, without a
        URL, until quiet), then relay what follows until quiet; returns a result dict."""
        self.pay_url = url
        pump = asyncio.ensure_future(self._pump_wallet())
        self.tasks.append(pump)
        try:
            self.transport.write(m.to_frame(m.Message(wl.TAP, url=url)))
            if url is not None:
                try:
                    await asyncio.wait_for(self._done.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            await self._quiet(linger, timeout)
        finally:
            await self.close()
        done = self.router.done
        result = {"hello": dict(self.router.hello.fields) if self.router.hello else None, "errors": self.errors,
                  "dropped": self.router.dropped}
        if done is not None:
            result.update(result=wl.STATE_NAMES[done.state], payment_id=done.id, reason=done.reason)
        elif self.refused is not None:
            result.update(result="refused", reason=self.refused)
        else:
            result.update(result="unknown" if url else "contact", reason="no outcome from the wallet" if url else None)
        return result

    async def close(self):
        for t in self.tasks:
            t.cancel()
        for _, writer in list(self.conns.values()):
            writer.close()
        self.conns.clear()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []


async def pay(transport, url, timeout=60):
    return await Relay(transport).run(url, timeout)


async def contact(transport, linger=2.0):
    return await Relay(transport).run(None, timeout=30, linger=linger)
