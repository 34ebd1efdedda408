"""Relay a wallet's frames: payment link to the payee's node, Auth to the wallet's provider.

The wallet has no network address; a terminal (this relay) carries its frames for one contact:

    wallet --(transport: serial, NFC, BLE)--> relay --BOLT 8--> payee node (amikopay URL)
                                                    --BOLT 8--> provider node (Hello.provider)

Both connections are amiko.wire.stream streams from a fresh ephemeral identity per contact (the
relay is no node), pinned to the key the URL names: the payee's ?key= of the amikopay URL, the
provider's ?key= of the amikolink URL in the wallet's Hello. A URL without a key is refused
(nothing is sent anywhere). Where the relay may connect to a provider at all is the caller's
policy (providers: the bridge allows only its configured providers, amiko.relay.policy); a
Hello naming another place ends the contact before anything crosses (no Pay to the payee):
the wallet gets a Cancel for its payment, the caller a "refused" result with the reason.

Router is the sans-IO part: it decodes the frames of each side and says where each goes.
    wallet -> payee:     payment-link messages (Pay, Confirm, Cancel)
    wallet -> provider:  Auth
    wallet -> relay:     Hello (where the provider is), Done (outcome), Refused (logged)
    payee -> wallet:     payment-link messages (Receipt, Cancel, HavePayeeRoute, Commit)
    provider -> wallet:  Status (its Error frames are logged)
Anything else is dropped and counted. Frames are relayed as decoded and re-encoded: a
malformed frame never crosses. The wallet side is a byte stream (from_wallet(bytes)); the
network sides arrive as frames from their streams (from_payee_frame / from_provider_frame). The relay holds no secret and cannot forge anything the
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
from amiko_core.errors import AmikoError, DecodeError, URLError
from amiko_core.url import parse_link, parse_pay

from amiko.wire import stream as streams

log = logging.getLogger("amiko.relay")

TO_PAYEE = (m.PAY, m.CONFIRM, m.CANCEL)
FROM_PAYEE = (m.RECEIPT, m.CANCEL, m.HAVE_PAYEE_ROUTE, m.COMMIT)
FROM_PROVIDER = (wl.STATUS,)  # the provider's Error frames are logged, not relayed
MAX_FRAME = 4096
FINAL_STATES = (wl.COMMITTED, wl.CANCELLED)
SETTLED_QUIET = 0.1  # s of quiet that end a session once the wallet's payment is settled (Router.settled)


class Router:
    """Sans-IO: feed bytes from a side, get (destination, payload) actions back.
    destinations: "payee", "provider", "wallet" (frame bytes), "hello", "done", "error" (Message)."""

    def __init__(self):
        self.decoders = {s: frame.FrameDecoder(MAX_FRAME) for s in ("wallet", "payee", "provider")}
        self.dropped = 0
        self.hello = None
        self.done = None
        self._auth_txid = None  # the txid of the wallet's last Auth
        self._final_txid = None  # the txid of the last final Status the provider sent the wallet

    @property
    def settled(self):
        """The wallet said Done and its provider's final Status (committed / cancelled) for the
        payment the wallet last authorised has crossed to it: the session has nothing left to carry
        but stragglers."""
        return self.done is not None and self._final_txid is not None and self._final_txid == self._auth_txid

    def _messages(self, side, data):
        return self._decode(side, self.decoders[side].feed(data))

    def _decode(self, side, frames):
        out = []
        for fr in frames:
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
                self._auth_txid = msg.txid
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
        return self._frames_to_wallet(side, self.decoders[side].feed(data), allowed)

    def _frames_to_wallet(self, side, frames, allowed):
        actions = []
        for msg in self._decode(side, frames):
            if msg.type in allowed:
                if side == "provider" and msg.type == wl.STATUS and msg.state in FINAL_STATES:
                    self._final_txid = msg.txid
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

    def from_payee_frame(self, fr):
        return self._frames_to_wallet("payee", [fr], FROM_PAYEE)

    def from_provider_frame(self, fr):
        return self._frames_to_wallet("provider", [fr], FROM_PROVIDER)


class RelayError(Exception):
    pass


def pinned_key(u, what):
    """The 33-byte key a parsed URL pins with ?key=; RelayError if it has none."""
    from amiko.node.identity import valid_pubkey

    try:
        key = bytes.fromhex(u.query.get("key", ""))
    except ValueError:
        key = b""
    if not valid_pubkey(key):
        raise RelayError("the %s URL %s pins no key (?key=<66 hex digits>): refusing to connect to an "
                         "unauthenticated %s" % (what, u, what))
    return key


class Relay:
    """One contact between a wallet transport and the network.

    connect: async (host, port, identity, key, timeout) -> Stream (amiko.wire.stream.connect);
    providers: None (any provider: the user's own computer as the terminal) or an
    amiko.relay.policy.ProviderPolicy (`await providers.check(url)` -> host to dial, or
    RelayError with the reason)."""

    def __init__(self, transport, connect=None, connect_timeout=10, providers=None, identity=None):
        from amiko.node.identity import Identity

        self.transport = transport
        self.router = Router()
        self.connect = connect or streams.connect
        self.connect_timeout = connect_timeout
        self.providers = providers
        self.identity = identity or Identity.generate()  # the relay's ephemeral transport key
        self.pay_url = None
        self.conns = {}  # "payee"/"provider" -> Stream
        self.tasks = []
        self.errors = []
        self._done = asyncio.Event()
        self._activity = asyncio.Event()
        self.last_wallet_tx = 0.0
        self.refused = None
        self.blocked = None  # why the contact was refused by the provider policy

    async def _target(self, side):
        """(host to dial, port, key) the side's URL names; RelayError when it may not be reached."""
        try:
            if side == "payee":
                u = parse_pay(self.pay_url)
                return u.host, u.port, pinned_key(u, "payment")
            if self.router.hello is None:
                raise RelayError("the wallet sent Auth before Hello: no provider to relay to")
            u = parse_link(self.router.hello.provider)
        except URLError as e:
            raise RelayError("bad %s URL: %s" % (side, e.reason)) from None
        key = pinned_key(u, "provider")
        host = u.host if self.providers is None else await self.providers.check(u)
        return host, u.port, key

    async def _open(self, side):
        if side in self.conns:
            return self.conns[side]
        host, port, key = await self._target(side)
        stream = await self.connect(host, port, self.identity, key, self.connect_timeout)
        self.conns[side] = stream
        self.tasks.append(asyncio.ensure_future(self._pump_stream(side, stream)))
        return stream

    async def _pump_stream(self, side, stream):
        feed = self.router.from_payee_frame if side == "payee" else self.router.from_provider_frame
        try:
            while True:
                fr = await stream.recv()
                for dest, payload in feed(fr):
                    self.transport.write(payload)
                    self.last_wallet_tx = asyncio.get_running_loop().time()
                    self._activity.set()
        except streams.StreamClosed:
            pass
        except streams.StreamError as e:
            self.errors.append("%s: %s" % (side, e.reason))
            log.warning("relay: the connection to the %s failed: %s", side, e.reason)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if self.conns.get(side) is stream:
                self.conns.pop(side, None)

    def _refuse_contact(self, reason):
        """The wallet's Hello names a provider we may not reach: relay nothing more, tell the
        wallet its payment is cancelled, end the contact."""
        self.refused = self.blocked = reason
        self.errors.append("provider: %s" % reason)
        log.warning("relay: %s", reason)
        pid = None
        if self.pay_url is not None:
            try:
                pid = parse_pay(self.pay_url).path
            except URLError:
                pid = None
        if pid is not None:
            self.transport.write(m.to_frame(m.Message(m.CANCEL, id=pid, reason=m.cut_reason(reason, 200))))
        self._done.set()

    async def _pump_wallet(self):
        while True:
            data = await self.transport.read()
            if not data:
                self._done.set()
                return
            if self.refused is not None:
                continue  # the contact is over: nothing crosses any more
            for dest, payload in self.router.from_wallet(data):
                self._activity.set()
                if self.refused is not None:
                    break
                if dest == "hello" and self.providers is not None:
                    try:
                        await self._target("provider")
                    except RelayError as e:
                        self._refuse_contact(str(e))
                        break
                if dest in ("payee", "provider"):
                    try:
                        stream = await self._open(dest)
                        stream.send(payload)
                    except (OSError, asyncio.TimeoutError, RelayError, AmikoError) as e:
                        self.errors.append("%s: %s" % (dest, getattr(e, "reason", None) or e))
                        log.warning("relay: cannot reach the %s: %s", dest, getattr(e, "reason", None) or e)
                elif dest == "done":
                    self._done.set()
                elif dest == "error":
                    self.errors.append(payload.reason)
                    log.info("relay: wallet refused something: %s", payload.reason)
                    if payload.ref_type == wl.TAP and self.router.done is None:
                        self.refused = payload.reason  # no payment will start: end the session
                        self._done.set()

    async def _quiet(self, seconds, limit):
        """Wait until nothing moved for `seconds` (at most `limit` seconds), or only for
        SETTLED_QUIET once the router says the payment is settled: the next customer's tap
        must not wait through a linger that has nothing left to carry."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while loop.time() < end:
            self._activity.clear()
            try:
                await asyncio.wait_for(self._activity.wait(), SETTLED_QUIET if self.router.settled else seconds)
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
        for stream in list(self.conns.values()):
            stream.close()
        self.conns.clear()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []


async def pay(transport, url, timeout=60):
    return await Relay(transport).run(url, timeout)


async def contact(transport, linger=2.0):
    return await Relay(transport).run(None, timeout=30, linger=linger)
