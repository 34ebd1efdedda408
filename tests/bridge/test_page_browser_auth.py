"""The cashier page is the shop's, in real headless Chromium against a real `amiko bridge` on a
real shop node: an unpaired browser sees only the sign-in; pairing with the console's code
works; a DNS-rebinding page is refused; a stranger's websockets do not lock the cashier out;
nested JSON is a 400; tokens and proofs stay with signed-in devices; a customer's receipt link
shows its one payment.

A "stranger" is this browser on http://localhost:PORT: cookies belong to a host name, so the
cashier's cookie (of 127.0.0.1) is not sent there. The rebinding attacker's name is
rebind.localhost (Chromium resolves *.localhost to loopback by itself: the name's DNS answer
"flipped" to the terminal); the attacker's first page load is answered by Playwright's route,
as the attacker's own server would, and everything after it reaches the bridge."""

import json
import re

from playwright.sync_api import expect

from amiko_testing.bridges import SHOTS, enter_sale, open_page, sign_in
from amiko_testing.network import run_amiko
from test_page_browser import pay_in_background

from amiko.bridge.web import SOCKETS_PER_DEVICE

OPEN_SOCKETS = """(n) => new Promise((done) => {
  const result = {opened: 0, messages: 0, closed: 0, codes: []};
  let pending = n;
  for (let i = 0; i < n; i++) {
    const ws = new WebSocket('ws://' + location.host + '/ws');
    ws.onopen = () => { result.opened++; };
    ws.onmessage = () => { result.messages++; };
    ws.onclose = (e) => { result.closed++; result.codes.push(e.code); if (--pending === 0) done(result); };
  }
  setTimeout(() => done(result), 8000);
})"""


def stranger_url(bridge, path=""):
    return bridge.url.replace("127.0.0.1", "localhost") + path


def test_an_unpaired_browser_sees_only_the_login_and_pairing_works(shop_net, browser):
    bridge = shop_net.bridge
    page = browser.new_page()
    page.set_default_timeout(15000)
    page.goto(bridge.url)
    assert page.url == bridge.url + "login"
    expect(page.locator("#code")).to_be_visible()
    expect(page.locator("#keypad")).to_have_count(0)
    page.screenshot(path=SHOTS % "login-800x480")
    for path in ("api/state", "api/payments"):
        assert page.evaluate("(p) => fetch(p).then(r => r.status)", "/" + path) == 401
    r = page.evaluate(OPEN_SOCKETS, 3)
    assert r["opened"] == 0 and r["messages"] == 0, r
    # a wrong code: said clearly, and counted
    sign_in(page, "00000000" if bridge.pairing_code != "00000000" else "11111111")
    expect(page.locator("#login-error")).to_contain_text("wrong code (4 more tries for this code)")
    # the code the terminal printed at start signs this browser in (typed on the page's own keypad,
    # as on a touch screen without a keyboard)
    page.locator("#code").fill("")
    for digit in bridge.pairing_code:
        page.locator('#login-keypad button[data-key="%s"]' % digit).tap()
    expect(page.locator("#code")).to_have_value(bridge.pairing_code)
    page.locator("#name").fill("counter tablet")
    page.screenshot(path=SHOTS % "login-typed-800x480")
    page.locator("#pair").tap()
    page.wait_for_url(bridge.url)
    expect(page.locator("#live")).to_have_text("live")
    cookies = [c for c in browser.cookies(bridge.url) if c["name"].startswith("amiko_cashier_")]
    assert len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict", cookies
    assert cookies[0]["expires"] > 0  # persistent, not a session cookie
    assert "amiko_cashier" not in page.evaluate("() => document.cookie")  # HttpOnly: no script reads it
    # the code was used up
    r = run_amiko(["bridge", "devices", "--config", bridge.config, "--json"], timeout=30)
    [device] = r.json["devices"]
    assert device["name"] == "counter tablet" and device["via"] == "code"
    # revoking the device from the terminal sends its open page back to the sign-in
    r = run_amiko(["bridge", "devices", "--config", bridge.config, "--revoke", device["id"], "--json"], timeout=30)
    assert r.returncode == 0 and r.json["revoked"] == [device["id"]]
    page.wait_for_url(bridge.url + "login", timeout=15000)
    expect(page.locator("#code")).to_be_visible()
    r = run_amiko(["bridge", "devices", "--config", bridge.config, "--revoke", "nope", "--json"], timeout=30)
    assert r.returncode == 2 and "no paired device 'nope'" in r.json["error"]["message"]
    page.close()


def test_a_dns_rebinding_page_is_refused(shop_net, browser):
    bridge = shop_net.bridge
    cashier = open_page(browser, bridge)  # the cashier is signed in in this same browser
    attacker_origin = "http://rebind.localhost:%d" % bridge.port
    page = browser.new_page()
    page.set_default_timeout(15000)
    page.route(attacker_origin + "/", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<!doctype html><title>cute cats</title><p>cats</p>"))
    page.goto(attacker_origin + "/")
    # after the attacker's name points at the terminal: same origin for the browser, Host = attacker's name
    result = page.evaluate("""() => Promise.all([
        fetch('/api/sale', {method: 'POST', headers: {'Content-Type': 'application/json'},
                            body: JSON.stringify({amount: 666, receipt: 'rebind'})})
          .then(r => r.text().then(t => [r.status, t])),
        fetch('/api/payments').then(r => r.status),
        fetch('/login').then(r => r.status),
        new Promise((done) => { const ws = new WebSocket('ws://' + location.host + '/ws');
          ws.onopen = () => done('open'); ws.onclose = () => done('closed'); }),
    ])""")
    (status, text), payments, login, ws = result
    assert status == 421 and "does not answer to the name 'rebind.localhost'" in text, result
    assert payments == 421 and login == 421 and ws == "closed", result
    expect(cashier.locator("#charge")).to_be_visible()  # no sale started
    assert bridge.api("api/state")["phase"] == "idle"
    page.close()
    cashier.close()


def test_a_strangers_websockets_do_not_lock_the_cashier_out(shop_net, browser):
    bridge = shop_net.bridge
    stranger = browser.new_page()
    stranger.set_default_timeout(15000)
    stranger.goto(stranger_url(bridge))
    assert stranger.url.endswith("/login")  # not signed in on this name
    r = stranger.evaluate(OPEN_SOCKETS, 80)  # more than the 64 that used to lock the cashier out
    assert r["opened"] == 0 and r["messages"] == 0 and r["closed"] == 80, r
    cashier = open_page(browser, bridge)
    enter_sale(cashier, "42", "still works")
    expect(cashier.locator("#phase")).to_have_text("Waiting for wallet")
    cashier.locator("#cancel").tap()
    expect(cashier.locator("#phase")).to_have_text("Cancelled")
    # the cashier's own device opening many pages: the newest win, the oldest are told why
    r = cashier.evaluate("""(n) => new Promise((done) => {
        const codes = []; let open = 0;
        for (let i = 0; i < n; i++) {
          const ws = new WebSocket('ws://' + location.host + '/ws');
          ws.onopen = () => { open++; };
          ws.onclose = (e) => codes.push(e.code);
        }
        setTimeout(() => done({open, codes}), 3000);
    })""", SOCKETS_PER_DEVICE + 3)
    assert r["open"] == SOCKETS_PER_DEVICE + 3 and r["codes"].count(4001) == 3, r
    expect(cashier.locator("#live")).to_have_text("replaced")  # the page's own socket was the oldest
    expect(cashier.locator("#banner-text")).to_contain_text("replaced by a newer page")
    cashier.reload()
    expect(cashier.locator("#live")).to_have_text("live")
    cashier.locator("#dismiss").tap()
    expect(cashier.locator("#charge")).to_be_visible()
    stranger.close()
    cashier.close()


def test_nested_json_is_a_400_and_the_socket_stays(shop_net, browser):
    bridge = shop_net.bridge
    page = open_page(browser, bridge)
    deep = '{"amount": 5, "x": ' + "[" * 2000 + "]" * 2000 + "}"
    status, body = page.evaluate("""(body) => fetch('/api/sale', {method: 'POST', body,
        headers: {'Content-Type': 'application/json'}}).then(r => r.json().then(j => [r.status, j]))""", deep)
    assert status == 400 and body["error"] == "bad request: JSON nested deeper than 8 levels", body
    reply = page.evaluate("""(text) => new Promise((done) => {
        const ws = new WebSocket('ws://' + location.host + '/ws');
        ws.onopen = () => ws.send(text);
        ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === 'error') done(m.message); };
    })""", '{"op": "sale", "a": ' + "[" * 1500 + "]" * 1500 + "}")
    assert reply == "JSON nested deeper than 8 levels"
    expect(page.locator("#live")).to_have_text("live")
    assert bridge.api("api/state")["phase"] == "idle"
    page.close()


def test_tokens_stay_with_the_shop_and_a_customer_link_shows_only_its_payment(shop_net, browser):
    shop = shop_net
    bridge = shop.bridge
    page = open_page(browser, bridge)
    paid = []
    for digits, what in (("1111", "first coffee"), ("2222", "second coffee")):
        enter_sale(page, digits, what)
        expect(page.locator("#phase")).to_have_text("Waiting for wallet")
        payer = pay_in_background(shop, page.locator("#url").inner_text())
        expect(page.locator("#phase")).to_have_text("Paid", timeout=30000)
        out, err = payer.communicate(timeout=60)
        assert payer.returncode == 0, (out, err)
        expect(page.locator("#customer-link")).to_be_visible()
        paid.append((page.locator("#customer-link").get_attribute("href"), json.loads(out)))
        page.locator("#dismiss").tap()
    rows = {r["txid"]: r for r in bridge.api("api/payments")}
    (link1, _), (link2, _) = paid
    assert re.fullmatch(r"/r/[A-Za-z0-9_-]{22}", link1) and link1 != link2
    first, second = sorted(rows.values(), key=lambda r: r["amount"])
    assert first["receipt_link"] == link1 and second["receipt_link"] == link2
    # a stranger (no session): no payments, no receipts by txid, no tokens anywhere
    stranger = browser.new_page()
    stranger.set_default_timeout(15000)
    stranger.goto(stranger_url(bridge))
    assert stranger.url.endswith("/login")
    text = stranger.evaluate("""(txid) => Promise.all([fetch('/api/payments'), fetch('/api/state'),
        fetch('/receipt/' + txid)].map(p => p.then(r => r.status + ' ' + r.url + ' ').then(s => s)))""", first["txid"])
    assert text[0].startswith("401") and text[1].startswith("401") and text[2].startswith("200") and "/login" in text[2]
    login_html = stranger.content()
    for row in (first, second):
        assert row["token"] not in login_html
    # the customer's link: that payment's amount, receipt, state and proof, nothing of the other
    stranger.goto(stranger_url(bridge, link1[1:]))
    body = stranger.locator("body").inner_text().replace("\n", " ")
    assert "1111 sat" in body and "first coffee" in body and "paid" in body
    cells = dict(zip(stranger.locator("table th").all_inner_texts(), stranger.locator("table td").all_inner_texts()))
    assert cells["Token (proof)"].replace("\n", "") == first["token"]
    assert cells["Transaction"].replace("\n", "") == first["txid"]
    html_text = stranger.content()
    for leak in (second["txid"], second["token"], "second coffee", "2222"):
        assert leak not in html_text, leak
    assert stranger.locator("a[href='/']").count() == 0  # no way into the cashier page from there
    stranger.screenshot(path=SHOTS % "customer-receipt-phone")
    stranger.goto(stranger_url(bridge, "r/" + "A" * 22))
    expect(stranger.locator("h1")).to_have_text("No such receipt")
    # the printed receipt (signed in) carries the customer's link as a QR code
    page.goto(bridge.url + "receipt/" + first["txid"])
    expect(page.locator("#customer-link")).to_have_text(re.compile(re.escape(link1) + "$"))
    expect(page.locator(".receipt-qr svg")).to_be_visible()
    stranger.close()
    page.close()
