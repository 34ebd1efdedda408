"""Issue 12: the wallet does not choose where the bridge connects. A fake wallet on a pty (the
bridge's serial reader) answers the sale's Tap with a Hello naming an attacker's listener as its
provider: the bridge connects nowhere (not to the attacker, not to the shop node with the
wallet's Pay), the sale ends cancelled with the reason on the page and in the bridge's log, and
the fake wallet gets a Cancel for its payment. Plus the policy's rules in-process."""

import asyncio
import os
import select
import socket
import time
import tty

import pytest

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.url import parse_link

from amiko.node.identity import Identity
from amiko.relay.core import RelayError
from amiko.relay.policy import ProviderPolicy, parse_entry

from amiko_testing.bridges import BridgeProcess


class FakeWallet:
    """The master side of a pty the bridge opens as `serial:`; speaks wallet frames."""

    def __init__(self):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self.slave = slave
        self.dec = frame.FrameDecoder()

    def read_message(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                for fr in self.dec.feed(os.read(self.master, 4096)):
                    return m.from_frame(fr)

    def send(self, *msgs):
        os.write(self.master, b"".join(m.to_frame(x) for x in msgs))

    def close(self):
        os.close(self.master)
        os.close(self.slave)


def test_a_wallet_naming_an_attackers_listener_makes_the_bridge_connect_nowhere(net, tmp_path):
    shop = net.node("shop", meeting_points=["mp-shop"])
    attacker = socket.socket()
    attacker.bind(("127.0.0.1", 0))
    attacker.listen(8)
    attacker.setblocking(False)
    port = attacker.getsockname()[1]
    wallet = FakeWallet()
    bridge = None
    try:
        # default providers: the shop node's own address and nothing else
        bridge = BridgeProcess(tmp_path / "bridge", shop.home, 'transports = ["serial:%s"]\n' % wallet.path)
        bridge.api("api/sale", {"amount": 500})
        tap = wallet.read_message(20)
        assert tap is not None and tap.type == wl.TAP and tap.url, tap
        pid = tap.url.split("?")[0].rsplit("/", 1)[1]
        evil = "amikolink://127.0.0.1:%d/w-evil?key=%s" % (port, Identity.generate().pubkey.hex())
        wallet.send(m.Message(wl.HELLO, wallet="w-evil", provider=evil), m.Message(m.PAY, id=pid))
        answer = wallet.read_message(10)
        assert answer is not None and answer.type == m.CANCEL and "not one this shop accepts" in answer.reason, answer
        deadline = time.monotonic() + 20
        state = None
        while time.monotonic() < deadline:
            state = bridge.api("api/state")
            if state["phase"] == "cancelled":
                break
            time.sleep(0.1)
        assert state["phase"] == "cancelled", state
        assert "not one this shop accepts" in state["sale"]["reason"], state
        # the wallet's Auth would come next: it goes nowhere either
        wallet.send(wl.auth(bytes(32), "w-evil", 1, wl.ROUTE, bytes(20), 500, "mp-shop", bytes.fromhex(shop.key), bytes(32), 0))
        time.sleep(1.0)
        with pytest.raises(BlockingIOError):
            attacker.accept()  # nobody ever connected to the attacker
        # the shop node never saw the wallet's Pay; the bridge called the sale off there
        log = (shop.home / "node.log").read_text()
        assert "Pay{%s}" % pid not in log and "attempt ended" not in log
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = next(p for p in shop.status()["history"] if p.get("payment_id") == pid)
            if row["state"] == "cancelled":
                break
            time.sleep(0.1)
        assert row["state"] == "cancelled", row
        assert "not one this shop accepts" in bridge.stderr_tail(200)
    finally:
        if bridge is not None:
            bridge.stop()
        wallet.close()
        attacker.close()


def _url(host, port):
    return parse_link("amikolink://%s:%d/w?key=%s" % (host, port, "02" + "11" * 32))


def test_provider_policy_rules():
    async def go():
        async def shop_node():
            return ["127.0.0.1:4400"]

        default = ProviderPolicy(None, default=shop_node)
        assert await default.check(_url("127.0.0.1", 4400)) == "127.0.0.1"
        for host, port in (("127.0.0.1", 4401), ("10.0.0.5", 4400), ("provider.example", 4321)):
            with pytest.raises(RelayError) as e:
                await default.check(_url(host, port))
            assert "not one this shop accepts" in str(e.value)

        async def rebinding(host, port):
            return {"provider.example": ["93.184.216.34"], "evil.example": ["127.0.0.1"],
                    "lan.example": ["192.168.1.20", "93.184.216.35"]}[host]

        listed = ProviderPolicy(["provider.example:4321", "evil.example", "lan.example:4500", "[::1]:4321"],
                                resolve=rebinding)
        assert await listed.check(_url("provider.example", 4321)) == "93.184.216.34"
        assert await listed.check(_url("[::1]", 4321)) == "::1"  # an address the operator listed itself
        for host, port, why in (("evil.example", 4321, "loopback"), ("lan.example", 4500, "private")):
            with pytest.raises(RelayError) as e:
                await listed.check(_url(host, port))
            assert why in str(e.value)

    asyncio.run(go())
    for bad in ("", "host:0", "host:x", "::1:4321", "a b:1"):
        with pytest.raises(ValueError):
            parse_entry(bad)
    assert parse_entry("Provider.Example") == ("provider.example", 4321)
