"""The whole shop terminal: the wallet firmware on a virtual board (real MicroPython on a pty),
provisioned with a real provider node, connected to `amiko bridge` over serial; the cashier
drives the page in real headless Chromium; the customer confirms or declines on the wallet's
buttons. Every payment is real, through real nodes."""

import os

from playwright.sync_api import expect


from amiko_testing.bridges import SHOTS, BridgeProcess, enter_sale, open_page  # noqa: E402
from amiko_testing.network import Net  # noqa: E402
from amiko_testing.wallets import provider_and_shop, provision, start_wallet, wallet_cli  # noqa: E402


def state(bridge):
    return bridge.api("api/state", timeout=5)


def wallet_shop(tmp_path, net):
    """prov (the wallet's provider) --channel--> shop (meeting point); a virtual wallet board
    provisioned at prov (auto-confirms up to 1000) with 8000 on its channel."""
    prov, shop = provider_and_shop(net)
    board = start_wallet(tmp_path)
    wallet = provision(board, prov, "--limit", "5000", "--daily", "20000", balance=8000)["wallet"]
    return prov, shop, board, wallet


def test_virtual_wallet_on_serial_pays_and_declines_on_the_page(tmp_path, browser):
    net = Net(tmp_path)
    board = bridge = None
    try:
        prov, shop, board, wallet = wallet_shop(tmp_path, net)
        transport = "serial:" + board.pty
        bridge = BridgeProcess(tmp_path / "bridge", shop.home, 'transports = ["%s"]\nproviders = ["127.0.0.1:%d"]\n'
                               % (transport, prov.port))
        page = open_page(browser, bridge)

        # 1. below the wallet's auto-confirm amount: tap, paid
        enter_sale(page, "400", "croissant")
        expect(page.locator("#phase")).to_have_text("Paid", timeout=30000)
        s = state(bridge)
        assert s["sale"]["transport"] == transport and s["sale"]["tap_to_paid_ms"] > 0
        assert {"connected", "confirming", "paid"} <= set(s["sale"]["timeline_ms"])
        expect(page.locator("#countdown")).to_contain_text("wallet to paid:")
        page.screenshot(path=SHOTS % "wallet-paid-800x480")

        # 2. above it: the customer confirms on the wallet's button
        page.locator("#dismiss").tap()
        enter_sale(page, "1500", "lunch")
        expect(page.locator("#phase")).to_have_text("Confirming", timeout=20000)
        expect(page.locator("#waiting-for")).to_have_text("Confirm the payment on your wallet")
        page.screenshot(path=SHOTS % "wallet-confirming-800x480")
        board.wait_for_screen(lambda lines: any("1500" in line for line in lines), timeout=10)
        board.press("confirm")
        expect(page.locator("#phase")).to_have_text("Paid", timeout=30000)

        # 3. the customer declines on the wallet: cancelled, with the reason, until dismissed
        page.locator("#dismiss").tap()
        enter_sale(page, "2000", "dinner")
        expect(page.locator("#phase")).to_have_text("Confirming", timeout=20000)
        board.wait_for_screen(lambda lines: any("2000" in line for line in lines), timeout=10)
        board.press("cancel")
        expect(page.locator("#phase")).to_have_text("Cancelled", timeout=20000)
        expect(page.locator("#reason")).to_have_text("the customer declined on the wallet")
        page.wait_for_timeout(1000)
        expect(page.locator("#reason")).to_have_text("the customer declined on the wallet")
        page.screenshot(path=SHOTS % "wallet-declined-800x480")

        # the reader is re-armed: the next sale is paid by the same wallet
        page.locator("#dismiss").tap()
        enter_sale(page, "100", "water")
        expect(page.locator("#phase")).to_have_text("Paid", timeout=30000)
        committed = page.locator('#payments li[data-state="committed"]')
        expect(committed).to_have_count(3)
        net.wait(lambda: shop.status()["balance"] == 400 + 1500 + 100, 20, "the shop node has the money")
        info = wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json
        assert info["balance"] == 8000 - 2000
        page.close()
    finally:
        if bridge is not None:
            bridge.stop()
        if board is not None:
            board.stop()
        net.close()


def plug(link, pty):
    """Point the wallet's stable port name at a pty (like udev's /dev/serial/by-id links)."""
    tmp = str(link) + ".new"
    os.symlink(pty, tmp)
    os.replace(tmp, link)


def test_wallet_pulled_out_mid_payment_and_plugged_in_again(tmp_path, browser):
    net = Net(tmp_path)
    board = bridge = None
    try:
        prov, shop, board, wallet = wallet_shop(tmp_path, net)
        link = tmp_path / "wallet-port"
        plug(link, board.pty)
        bridge = BridgeProcess(tmp_path / "bridge", shop.home, 'transports = ["serial:%s"]\nproviders = ["127.0.0.1:%d"]\n'
                               % (link, prov.port))
        page = open_page(browser, bridge)

        # pulled out while the customer is asked to confirm: a clear end, nothing moved
        enter_sale(page, "1500", "lunch")
        expect(page.locator("#phase")).to_have_text("Confirming", timeout=20000)
        board.stop()
        expect(page.locator("#phase")).to_have_text("Cancelled", timeout=20000)
        expect(page.locator("#reason")).to_contain_text("the wallet left before the payment was confirmed")
        page.screenshot(path=SHOTS % "wallet-unplugged-800x480")

        # a sale while no wallet is plugged in waits for one; plugging it in pays it
        page.locator("#dismiss").tap()
        enter_sale(page, "300", "tea")
        expect(page.locator("#phase")).to_have_text("Waiting for wallet")
        page.wait_for_timeout(1000)
        expect(page.locator("#phase")).to_have_text("Waiting for wallet")
        board.start()
        plug(link, board.pty)
        expect(page.locator("#phase")).to_have_text("Paid", timeout=30000)
        net.wait(lambda: shop.status()["balance"] == 300, 20, "the shop node has exactly the paid sale")
        info = wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json
        assert info["balance"] == 8000 - 300
        page.close()
    finally:
        if bridge is not None:
            bridge.stop()
        if board is not None:
            board.stop()
        net.close()
