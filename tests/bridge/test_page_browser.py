"""The cashier page in real headless Chromium (Debian's, driven by Playwright) against a real
`amiko bridge` on a real shop node; payments are real payments from a real payer node paying
the page's amikopay URL through the network (the virtual wallet plugs in through the relay).

Screenshots land in /tmp/amiko-page-*.png (checked by eye: 800x480 touch screen and a phone)."""

import re
import subprocess
import time

from playwright.sync_api import expect

from amiko_core.hashing import hash160

from amiko_testing.bridges import SHOTS, BridgeProcess, enter_sale, open_page
from amiko_testing.network import amiko_argv, amiko_env

def pay_in_background(shop, url):
    argv = amiko_argv() + ["pay", "--home", str(shop.payer.home), "--json", url, "--yes", "--timeout", "30"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=amiko_env())


def test_cashier_sells_a_wallet_pays_the_page_shows_paid(shop_net, browser):
    shop = shop_net
    page = open_page(browser, shop.bridge)
    expect(page.locator("#shop")).to_have_text("Test shop")
    page.screenshot(path=SHOTS % "keypad-800x480")
    enter_sale(page, "1250", "2 coffees")
    expect(page.locator("#phase")).to_have_text("Waiting for wallet")
    expect(page.locator("#qr svg")).to_be_visible()
    expect(page.locator("#waiting-for")).to_contain_text("Tap or connect your wallet")
    expect(page.locator("#cancel")).to_be_visible()
    url = page.locator("#url").inner_text()
    assert re.fullmatch(r"amikopay://127\.0\.0\.1:%d/[A-Za-z0-9_-]+\?key=%s" % (shop.shop.port, shop.shop.key), url), url
    page.screenshot(path=SHOTS % "waiting-800x480")

    # the same sale on a phone (a second page follows it live)
    phone = open_page(browser, shop.bridge, 390, 844)
    expect(phone.locator("#phase")).to_have_text("Waiting for wallet")
    phone.screenshot(path=SHOTS % "waiting-phone")
    # a second sale started meanwhile (another device, straight over the websocket) is refused clearly
    phone.evaluate("() => { const ws = new WebSocket('ws://' + location.host + '/ws');"
                   " ws.onopen = () => ws.send(JSON.stringify({op: 'sale', amount: 9})); "
                   " ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === 'error') window.refusal = m.message; }; }")
    phone.wait_for_function("() => window.refusal")
    assert phone.evaluate("() => window.refusal") == (
        "a sale of 1250 is in progress (waiting): finish or cancel it before starting another")

    started = time.monotonic()
    payer = pay_in_background(shop, url)
    expect(page.locator("#phase")).to_have_text("Paid", timeout=30000)
    elapsed = time.monotonic() - started
    out, err = payer.communicate(timeout=60)
    assert payer.returncode == 0 and '"committed"' in out, (out, err)
    assert elapsed < 20
    expect(page.locator("#paid-mark")).to_be_visible()
    expect(page.locator("#cancel")).to_be_hidden()
    expect(phone.locator("#phase")).to_have_text("Paid")
    row = page.locator('#payments li[data-state="committed"]')
    expect(row).to_have_count(1)
    expect(row).to_contain_text("1,250 sat")
    expect(row).to_contain_text("2 coffees")
    page.screenshot(path=SHOTS % "paid-800x480")
    phone.screenshot(path=SHOTS % "paid-phone", full_page=True)

    # the printable receipt with its proof
    page.locator("#print-link").tap()
    expect(page.locator("h1")).to_have_text("Test shop")
    expect(page.locator(".receipt-text")).to_have_text("2 coffees")
    expect(page.locator("table")).to_contain_text("paid")
    cells = dict(zip(page.locator("table th").all_inner_texts(), page.locator("table td").all_inner_texts()))
    token, txid = cells["Token (proof)"].replace("\n", ""), cells["Transaction"].replace("\n", "")
    assert hash160(bytes.fromhex(token)).hex() == txid  # the token is the proof the payment committed
    assert cells["Shop key"].replace("\n", "") == shop.shop.key and len(cells["Receipt signature"].replace("\n", "")) == 128
    page.screenshot(path=SHOTS % "receipt-800x480")
    page.go_back()

    # paid stays until the cashier starts the next sale
    expect(page.locator("#phase")).to_have_text("Paid")
    page.locator("#dismiss").tap()
    expect(page.locator("#charge")).to_be_visible()
    expect(page.locator("#amount")).to_have_text("0")
    expect(page.locator("#today-total")).to_have_text("1,250 sat")
    phone.set_viewport_size({"width": 390, "height": 844})
    expect(phone.locator("#charge")).to_be_visible()
    phone.screenshot(path=SHOTS % "keypad-phone", full_page=True)
    box = phone.locator('button[data-key="5"]').bounding_box()
    assert box["width"] >= 44 and box["height"] >= 44  # touch targets
    phone.close()
    page.close()


def test_cancelled_sales_show_their_reason_until_dismissed(shop_net, browser):
    shop = shop_net
    page = open_page(browser, shop.bridge)
    # 1. the cashier cancels: the shop node's request is cancelled, its URL can no longer be paid
    enter_sale(page, "300", "sandwich")
    expect(page.locator("#phase")).to_have_text("Waiting for wallet")
    cancelled_url = page.locator("#url").inner_text()
    page.locator("#cancel").tap()
    expect(page.locator("#phase")).to_have_text("Cancelled")
    expect(page.locator("#reason")).to_have_text("cancelled by the cashier")
    expect(page.locator("#notice")).to_be_hidden()  # no "the shop node did not cancel"
    payer = pay_in_background(shop, cancelled_url)
    out, err = payer.communicate(timeout=60)
    assert payer.returncode != 0 and "cancelled" in out + err, (out, err)
    history = [r for r in shop.shop.status()["history"] if r.get("role") == "payee" and r.get("amount") == 300]
    assert [r["state"] for r in history] == ["cancelled"], history
    page.wait_for_timeout(1500)  # it does not vanish by itself
    expect(page.locator("#reason")).to_have_text("cancelled by the cashier")
    page.screenshot(path=SHOTS % "cancelled-800x480")
    expect(page.locator('#payments li[data-state="cancelled"]')).to_have_count(1)

    # 2. the network cancels: the payer cannot route more than its channel holds
    page.locator("#dismiss").tap()
    enter_sale(page, "500000", "too expensive")
    expect(page.locator("#phase")).to_have_text("Waiting for wallet")
    url = page.locator("#url").inner_text()
    payer = pay_in_background(shop, url)
    out, err = payer.communicate(timeout=60)
    assert payer.returncode == 1 and "cancelled" in out, (out, err)
    expect(page.locator("#phase")).to_have_text("Cancelled", timeout=20000)
    reason = page.locator("#reason").inner_text()
    assert reason.startswith("the shop node cancelled the payment: "), reason
    page.wait_for_timeout(1000)
    expect(page.locator("#reason")).to_have_text(reason)

    # 3. the shop node is down: the sale ends at once with what to do, and works again once it is back
    page.locator("#dismiss").tap()
    assert shop.shop.stop() == 0
    enter_sale(page, "80", "bagel")
    expect(page.locator("#phase")).to_have_text("Cancelled")
    expect(page.locator("#reason")).to_contain_text("no payment request from the shop node: cannot reach the shop node")
    expect(page.locator("#reason")).to_contain_text("start it with `amiko node --home")
    page.screenshot(path=SHOTS % "node-down-800x480")
    shop.shop.start()
    page.locator("#dismiss").tap()
    enter_sale(page, "80", "bagel")
    expect(page.locator("#phase")).to_have_text("Waiting for wallet")
    page.locator("#cancel").tap()
    expect(page.locator("#reason")).to_have_text("cancelled by the cashier")

    # 4. a sale nobody pays times out (a second bridge on the same node, 3 s to connect a wallet)
    page.locator("#dismiss").tap()
    expect(page.locator("#charge")).to_be_visible()
    page.close()
    quick = BridgeProcess(shop.net.dir / "quick", shop.shop.home, "[timeouts]\nwaiting = 3\n")
    try:
        page = open_page(browser, quick)
        enter_sale(page, "7", "gum")
        expect(page.locator("#phase")).to_have_text("Waiting for wallet")
        expect(page.locator("#phase")).to_have_text("Cancelled", timeout=10000)
        expect(page.locator("#reason")).to_have_text("timed out: no wallet connected within 3 s")
        page.wait_for_timeout(1500)
        expect(page.locator("#reason")).to_have_text("timed out: no wallet connected within 3 s")
        page.screenshot(path=SHOTS % "timed-out-800x480")
        page.locator("#dismiss").tap()
        expect(page.locator("#charge")).to_be_visible()
        page.close()
    finally:
        assert quick.stop() == 0
