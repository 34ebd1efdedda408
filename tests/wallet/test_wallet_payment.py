"""A payment from the wallet firmware on a virtual board (real MicroPython on a pty), relayed over
serial to a real provider node and a real payee node: committed, proof on the wallet, read back
with `amiko wallet history`."""

import asyncio
import concurrent.futures
import time

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko.relay.core import Relay
from amiko.transports import open_transport

from amiko_testing.wallets import provider_and_shop, provision, start_wallet, wallet_cli


class CutAfterLock:
    """A transport that passes the wallet's Auth{lock} on, then cuts the board's power."""

    def __init__(self, transport, board):
        self.t = transport
        self.board = board
        self.dec = frame.FrameDecoder(4096)
        self.cut = False

    async def read(self):
        if self.cut:
            await asyncio.sleep(0.5)  # let the relay deliver the Auth
            self.board.power_cycle()
            return b""
        data = await self.t.read()
        for fr in self.dec.feed(data):
            if fr.type == wl.AUTH and m.from_frame(fr).action == wl.LOCK:
                self.cut = True
        return data

    def write(self, data):
        self.t.write(data)

    def close(self):
        self.t.close()


def relay(pty, url=None, timeout=60, cut_after_lock=None, linger=1.0):
    async def go():
        t = open_transport("serial:" + pty)
        if cut_after_lock is not None:
            t = CutAfterLock(t, cut_after_lock)
        try:
            return await Relay(t).run(url, timeout=timeout, linger=linger)
        finally:
            t.close()

    return asyncio.run(go())


def test_wallet_pays_through_relay(net, tmp_path):
    prov, shop = provider_and_shop(net)
    board = start_wallet(tmp_path)
    try:
        r = provision(board, prov, "--limit", "2000", "--daily", "5000")
        wallet = r["wallet"]
        assert r["provider"].startswith("amikolink://127.0.0.1:%d/%s" % (prov.port, wallet))
        again = wallet_cli("provision", "--port", board.pty, "--provider", prov.home, "--json")
        assert again.returncode == 2 and "provisioned already" in again.json["error"]["message"], again

        url = net.request(shop, 300, "espresso")
        started = time.monotonic()
        out = relay(board.pty, url, linger=50)
        assert out["result"] == "committed", out
        # the session ends once the provider's final Status reached the wallet, not after the linger
        # (the next customer's tap would wait through it)
        assert time.monotonic() - started < 40
        assert out["hello"]["wallet"] == wallet

        info = wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json
        assert info["balance"] == 2700 and info["available"] == 2700, info
        assert info["payments"][0]["state"] == "committed"
        net.wait(lambda: shop.status()["balance"] == 300, 20, "shop paid")

        h = wallet_cli("history", "--port", board.pty, "--json")
        assert h.returncode == 0, h
        entry = h.json["history"][0]
        assert entry["state"] == "committed" and entry["amount"] == 300 and entry["receipt"] == "espresso"
        assert entry["proof_ok"] is True
        assert entry["signature_ok"] is True  # the payee node signs its receipts
        assert entry["token"] == info["payments"][0]["token"]

        # power cut right after the wallet authorised the lock: the network commits without it;
        # at the next contact the provider's Status{committed, token} completes the proof
        url = net.request(shop, 200, "cut")
        boots = board.boots()
        out = relay(board.pty, url, cut_after_lock=board)
        assert out["result"] == "unknown", out
        net.wait(lambda: board.boots() > boots, 20, "the wallet booted again")
        for _ in range(3):
            out = relay(board.pty)
            h = wallet_cli("history", "--port", board.pty, "--json").json["history"]
            if h[0]["amount"] == 200:
                break
        assert out["hello"]["wallet"] == wallet
        assert h[0]["state"] == "committed" and h[0]["proof_ok"] and h[0]["receipt"] == "cut", h[0]
        info = wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json
        assert info["balance"] == 2500 and info["available"] == 2500, info

        # above the auto-confirm amount: the display asks, the confirm button pays
        url = net.request(shop, 1500, "lunch")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(relay, board.pty, url)
            lines = board.wait_for_screen("Pay 1500", timeout=20)
            assert any("lunch" in line for line in lines), lines
            board.press("confirm")
            out = fut.result(90)
        assert out["result"] == "committed", out
        board.wait_for_screen("PAID 1500", timeout=10)
        assert board.led() == "ok"

        # over the per-payment limit (with the CLI as the terminal): the wallet declines, nothing moves
        url = net.request(shop, 2500, "too much")
        r = wallet_cli("pay", "--port", board.pty, url, "--json")
        assert r.returncode == 1, r
        assert r.json["result"] == "cancelled" and "limit" in r.json["reason"], r.json
        info = wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json
        assert info["balance"] == 1000 and info["available"] == 1000, info
        h = wallet_cli("history", "--port", board.pty, "--json").json["history"]
        # declined before any authorisation: no money moved, nothing to prove, no history entry
        assert [(e["state"], e["amount"]) for e in h] == [("committed", 1500), ("committed", 200),
                                                          ("committed", 300)], h
    finally:
        board.stop()
