"""The shop terminal over NFC: `amiko bridge` with transports = ["nfc:udp:..."] (nfcpy reader), the
virtual wallet board behind the simulated PN532, real provider and shop nodes. Two sales in a row
are paid by taps (the reader re-arms by itself); the card leaving the field shows on the page."""

import os
from pathlib import Path

from amiko_testing.network import Net
from amiko_testing.nfc import Sim, wait
from amiko_testing.wallets import flash_firmware, provider_and_shop, provision

from amiko.emulate import VirtualBoard

from amiko_testing.bridges import BridgeProcess  # noqa: E402


def state(bridge):
    return bridge.api("api/state", timeout=5)


def sale(bridge, amount, receipt):
    return bridge.api("api/sale", {"amount": amount, "receipt": receipt})


def test_bridge_pays_by_nfc_taps(tmp_path):
    net = Net(tmp_path)
    sim = Sim()
    board = VirtualBoard(tmp_path / "vb")
    bridge = None
    try:
        prov, shop = provider_and_shop(net)
        flash_firmware(board.flash)
        os.symlink(sim.uart, Path(board.home) / "hw" / "pn532")
        sim.leave()  # the customer holds the wallet away until the sale is on the page
        board.start()
        provision(board, prov, "--limit", "5000", "--daily", "20000", balance=8000)
        bridge = BridgeProcess(tmp_path / "bridge", shop.home, 'transports = ["%s"]\nproviders = ["127.0.0.1:%d"]\n'
                               % (sim.spec, prov.port))

        sale(bridge, 400, "croissant")
        wait(lambda: state(bridge)["phase"] == "waiting", 20, "the page waiting for a tap")
        sim.enter()  # tap
        try:
            wait(lambda: state(bridge)["phase"] in ("paid", "cancelled"), 40, "the first sale's outcome", 0.1)
        except AssertionError:
            raise AssertionError((sim.stats(), state(bridge)))
        s = state(bridge)
        assert s["phase"] == "paid", s
        assert s["sale"]["transport"] == sim.spec and s["sale"]["tap_to_paid_ms"] > 0
        sim.leave()
        wait(lambda: not state(bridge)["wallet_present"], 20, "the page to see the wallet gone", 0.1)

        # the reader re-armed by itself: the next tap pays the next sale
        sale(bridge, 250, "tea")
        wait(lambda: state(bridge)["phase"] == "waiting", 20, "the page waiting for a tap")
        sim.enter()
        wait(lambda: state(bridge)["phase"] in ("paid", "cancelled"), 40, "the second sale's outcome", 0.1)
        s = state(bridge)
        assert s["phase"] == "paid" and s["sale"]["amount"] == 250, s
        net.wait(lambda: shop.status()["balance"] == 650, 20, "the shop node has both sales")
    finally:
        if bridge is not None:
            bridge.stop()
        board.stop()
        sim.stop()
        net.close()
