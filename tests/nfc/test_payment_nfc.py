"""A payment over NFC, end to end: the wallet firmware on a virtual board (real MicroPython) with
its PN532 driver talking to the simulated PN532, the card side of nfcpy's udp link; the
terminal's nfcpy reader (amiko.transports.nfc, `nfc:udp:...`), the relay core, a real provider
node and a real payee node. Then the wallet leaves the field mid-payment (right after it
authorised the lock) and the payment finishes at the next tap."""

import asyncio
import os
from pathlib import Path

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko.emulate import VirtualBoard
from amiko.relay.core import Relay
from amiko.transports import open_transport
from amiko.transports.nfc import Reader

from amiko_testing.nfc import Sim, wait
from amiko_testing.wallets import flash_firmware, provider_and_shop, provision, wallet_cli


class LeaveAfterLock:
    """Passes the wallet's Auth{lock} on, then the card leaves the field (the customer pulls it away)."""

    def __init__(self, transport, sim):
        self.t = transport
        self.sim = sim
        self.dec = frame.FrameDecoder(4096)
        self.left = False

    async def read(self):
        data = await self.t.read()
        for fr in self.dec.feed(data):
            if fr.type == wl.AUTH and m.from_frame(fr).action == wl.LOCK and not self.left:
                self.left = True
                await asyncio.sleep(0.3)  # the relay forwards the Auth first
                self.sim.leave()
        return data

    def write(self, data):
        self.t.write(data)

    def close(self):
        self.t.close()


def relay_nfc(spec, url=None, timeout=60, leave_after_lock=None, linger=1.0):
    async def go():
        t = open_transport(spec)
        if leave_after_lock is not None:
            t = LeaveAfterLock(t, leave_after_lock)
        try:
            return await Relay(t).run(url, timeout=timeout, linger=linger)
        finally:
            t.close()

    return asyncio.run(go())


def test_pay_by_nfc_and_leave_mid_tap(net, tmp_path):
    prov, shop = provider_and_shop(net)
    sim = Sim()
    board = VirtualBoard(tmp_path / "vb")
    try:
        flash_firmware(board.flash)
        os.symlink(sim.uart, Path(board.home) / "hw" / "pn532")  # the board's PN532 is the simulated one
        board.start()
        wallet = provision(board, prov, "--limit", "2000", "--daily", "5000")["wallet"]

        url = net.request(shop, 300, "espresso")
        out = relay_nfc(sim.spec, url)
        assert out["result"] == "committed", out
        assert out["hello"]["wallet"] == wallet
        net.wait(lambda: shop.status()["balance"] == 300, 20, "shop paid")

        # the wallet leaves the field right after authorising the lock: the contact ends with
        # no outcome; the network commits; the next tap hands the wallet its proof
        url = net.request(shop, 200, "tap away")
        out = relay_nfc(sim.spec, url, leave_after_lock=sim)
        assert out["result"] != "committed", out
        assert not sim.stats()["in_field"]
        sim.enter()
        for _ in range(3):
            out = relay_nfc(sim.spec)
            h = wallet_cli("history", "--port", board.pty, "--json").json["history"]
            if h[0]["amount"] == 200 and h[0]["state"] == "committed":
                break
        assert out["hello"]["wallet"] == wallet
        assert h[0]["state"] == "committed" and h[0]["proof_ok"] and h[0]["receipt"] == "tap away", h[0]
        info = wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json
        assert info["balance"] == 2500 and info["available"] == 2500, info
        st = sim.stats()
        assert st["activations"] >= 2 and st["released"] >= 1, st
        reader = Reader.get(sim.spec[len("nfc:"):])
        assert reader.stats["contacts"] >= 2 and reader.stats["not_wallet"] == 0, reader.stats
    finally:
        r = Reader._readers.pop(sim.spec[len("nfc:"):], None)
        if r is not None:
            r.close(wait=0.5)
        board.stop()
        sim.stop()


# One payment's APDUs and bytes over the air (1 hop), SELECT included, idle polls included if any:
#   SELECT; Tap -> Hello + Pay; Receipt -> Confirm + Auth{route}; Status routing + HavePayeeRoute +
#   Status routed -> Auth{lock}; Status locked + Commit -> Auth{commit} + Done; Status committed.
# The frames alone weigh ~1245 bytes to the card and ~1300 from it (wire format, not ours to cut
# here); the APDU layer adds 13 (SELECT) + 9 per EXCHANGE to the card and 2 per answer from it.
MAX_APDUS = 6
MAX_BYTES_TO_CARD = 1245 + 13 + 5 * 9 + 30
MAX_BYTES_FROM_CARD = 1300 + 6 * 2 + 30


def test_payment_round_trips_and_bytes(net, tmp_path):
    prov, shop = provider_and_shop(net)
    sim = Sim()
    board = VirtualBoard(tmp_path / "vb")
    path = sim.spec[len("nfc:"):]
    try:
        flash_firmware(board.flash)
        os.symlink(sim.uart, Path(board.home) / "hw" / "pn532")
        board.start()
        provision(board, prov, "--limit", "2000", "--daily", "5000", "--auto-count", "10", "--auto-total", "5000",
                  "--auto-new", "10")  # every payment auto-confirmed
        assert relay_nfc(sim.spec, net.request(shop, 100, "warm-up"))["result"] == "committed"
        reader = Reader.get(path)

        def away():  # the card leaves, and the reader has seen it leave (as at a shop's counter)
            sim.leave()
            wait(lambda: reader.contact is None, 20, "the reader to see the card leave")

        away()
        for n in range(2):
            sim.enter()
            before = sim.stats()
            out = relay_nfc(sim.spec, net.request(shop, 100, "counted %d" % n), linger=0.2)
            contact = reader.contact
            after = sim.stats()
            away()  # right after the relay saw the Done and the provider's commit went to the wallet
            assert out["result"] == "committed", out
            apdus = after["apdus"] - before["apdus"]
            to_card = after["bytes_in"] - before.get("bytes_in", 0)
            from_card = after["bytes_out"] - before.get("bytes_out", 0)
            assert apdus <= MAX_APDUS, (apdus, to_card, from_card)
            assert to_card <= MAX_BYTES_TO_CARD and from_card <= MAX_BYTES_FROM_CARD, (to_card, from_card)
            # the reader counts the same per contact (the contact may have ended: the card left)
            assert contact is not None and contact.stats == {"apdus": apdus, "bytes_out": to_card,
                                                             "bytes_in": from_card}, contact.stats
        # both ends consistent: the wallet got its provider's last Status (no payment pending)
        sim.enter()
        out = relay_nfc(sim.spec, linger=0.3)
        assert out["hello"] is not None and "pending" not in out["hello"], out
        assert shop.status()["balance"] == 300
    finally:
        r = Reader._readers.pop(path, None)
        if r is not None:
            r.close(wait=0.5)
        board.stop()
        sim.stop()
