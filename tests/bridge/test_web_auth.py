"""The cashier page is the shop's: sign-in by pairing, Host and Origin checks, websockets per
device, JSON depth, customer receipt links and cancel, in-process (aiohttp's test client)
against the bridge with a fake node that offers only the real node's methods."""

import asyncio
import os
import stat

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError

from amiko.bridge.auth import MAX_WRONG, CashierAuth
from amiko.bridge.web import MAX_MESSAGE, SOCKETS_KEY, SOCKETS_PER_DEVICE, make_app
from amiko.node.control import ControlError
from amiko_testing.node_methods import real_node_methods
from test_web import TOKEN, TXID, Clock, FakeNode, client_for, make_bridge, new_client, next_of, page, run, sign_in, until

CASHIER_TOKEN = "t0ken-" + "x" * 40


def cookie_of(client):
    return {c.key: c.value for c in client.session.cookie_jar}


async def ws_refused(client, path="/ws", headers=None):
    with pytest.raises(WSServerHandshakeError) as e:
        await client.ws_connect(path, headers=headers)
    return e.value.status


def test_an_unpaired_client_gets_only_the_login():
    async def main():
        async with page(signed_in=False) as (bridge, client):
            r = await client.get("/", allow_redirects=False)
            assert r.status == 303 and r.headers["Location"] == "/login"
            r = await client.get("/login")
            text = await r.text()
            assert r.status == 200 and 'name="code"' in text and "amiko bridge pair" in text
            assert "Content-Security-Policy" in r.headers
            for path in ("/api/state", "/api/payments"):
                r = await client.get(path)
                assert r.status == 401 and "not signed in" in (await r.json())["error"], path
            for path in ("/api/sale", "/api/cancel", "/api/dismiss", "/logout"):
                r = await client.post(path, json={"amount": 5})
                assert r.status == 401, path
            assert bridge.machine.phase == "idle"
            r = await client.get("/receipt/" + TXID, allow_redirects=False)
            assert r.status == 303
            assert await ws_refused(client) == 401
            # a forged cookie is nobody
            client.session.cookie_jar.update_cookies({"amiko_cashier_%d" % bridge.config.port: "A" * 43})
            assert (await client.get("/api/state")).status == 401
            # what the login page itself needs is public
            assert (await client.get("/static/app.css")).status == 200
    run(main())


def test_pairing_code_signs_in_once_with_a_strict_httponly_cookie_stored_hashed():
    async def main():
        async with page(signed_in=False) as (bridge, client):
            code, _ = CashierAuth(bridge.config.state_dir).new_code()
            assert len(code) == 8 and code.isdigit()
            r = await client.post("/login", data={"code": code[:4] + " " + code[4:], "name": "counter tablet"},
                                  allow_redirects=False)
            assert r.status == 303 and r.headers["Location"] == "/"
            set_cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Max-Age=" in set_cookie
            session = cookie_of(client)["amiko_cashier_%d" % bridge.config.port]
            assert len(session) >= 43
            assert (await client.get("/api/state")).status == 200
            # single use: a second device cannot use the same code
            other = new_client(client.server)
            await other.start_server()
            r = await other.post("/login", data={"code": code})
            assert r.status == 401 and "no pairing code is valid now" in await r.text()
            await other.close()
            # stored: 0600, the session only as its hash
            path = os.path.join(bridge.config.state_dir, "devices.json")
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(bridge.config.state_dir).st_mode) == 0o700
            text = open(path).read()
            assert session not in text and code not in text and "counter tablet" in text

        # the session survives a restart of the bridge (a new app on the same state dir)
        bridge2 = make_bridge(state_dir=bridge.config.state_dir)
        client2 = await client_for(bridge2, signed_in=False)
        try:
            client2.session.cookie_jar.update_cookies({"amiko_cashier_%d" % bridge2.config.port: session})
            assert (await client2.get("/api/state")).status == 200
        finally:
            await bridge2.close()
            await client2.close()
    run(main())


def test_guessing_the_code_is_limited_then_the_code_dies():
    async def main():
        async with page(signed_in=False) as (bridge, client):
            code, _ = CashierAuth(bridge.config.state_dir).new_code()
            wrong = "%08d" % ((int(code) + 1) % 10 ** 8)
            for i in range(1, MAX_WRONG):
                r = await client.post("/login", data={"code": wrong})
                assert r.status == 401 and "%d more tries" % (MAX_WRONG - i) in await r.text()
            r = await client.post("/login", data={"code": wrong})
            assert r.status == 429 and "no longer works" in await r.text()
            r = await client.post("/login", data={"code": code}, allow_redirects=False)  # the right one, too late
            assert r.status == 401 and (await client.get("/api/state")).status == 401
            # junk in the form: a clear refusal, never a crash
            for data in ({"code": "x" * 5000}, {}, {"code": "1234", "name": "\x00" * 100}):
                r = await client.post("/login", data=data)
                assert r.status in (400, 401), (data, r.status)
    run(main())


def test_a_code_expires():
    async def main():
        clock = Clock()
        bridge = make_bridge()
        auth = CashierAuth(bridge.config.state_dir, clock=clock)
        client = await client_for(bridge, signed_in=False, app=make_app(bridge, auth=auth))
        try:
            code, expires = auth.new_code()
            clock.t = expires + 1
            r = await client.post("/login", data={"code": code})
            assert r.status == 401 and "no pairing code is valid now" in await r.text()
        finally:
            await bridge.close()
            await client.close()
    run(main())


def test_cashier_token_signs_in_and_authorises_scripts():
    async def main():
        async with page(cashier_token=CASHIER_TOKEN, signed_in=False) as (bridge, client):
            assert (await client.get("/api/state", headers={"Authorization": "Bearer " + CASHIER_TOKEN})).status == 200
            assert (await client.get("/api/state", headers={"Authorization": "Bearer " + CASHIER_TOKEN[:-1]})).status == 401
            r = await client.post("/api/sale", json={"amount": 5}, headers={"Authorization": "Bearer nope"})
            assert r.status == 401 and bridge.machine.phase == "idle"
            r = await client.post("/login", data={"code": CASHIER_TOKEN, "name": "kiosk"}, allow_redirects=False)
            assert r.status == 303
            assert (await client.get("/api/state")).status == 200
            assert [d["via"] for d in CashierAuth(bridge.config.state_dir).devices()] == ["token"]
    run(main())


def test_revoked_devices_are_out_at_once_and_their_pages_close():
    async def main():
        async with page() as (bridge, client):
            ws = await client.ws_connect("/ws")
            await next_of(ws, "state")
            auth = CashierAuth(bridge.config.state_dir)
            [device] = auth.devices()
            assert device["name"] == "till" and "session_sha256" not in device
            assert auth.revoke(device["id"]) == [device["id"]]
            assert (await client.get("/api/state")).status == 401
            msg = await asyncio.wait_for(ws.receive(), 5)
            while msg.type == WSMsgType.TEXT:
                msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == WSMsgType.CLOSE and msg.data == 4401, msg
            # sign in again, then sign out from the page itself
            await sign_in(client, bridge)
            assert (await client.get("/api/state")).status == 200
            r = await client.post("/logout", allow_redirects=False)
            assert r.status == 303 and (await client.get("/api/state")).status == 401
            assert auth.devices() == []
    run(main())


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "rebind.attacker.test.", "", "[::1"])
def test_dns_rebinding_host_is_refused_even_with_a_session(host):
    async def main():
        async with page(hostnames=["shop-pi.local"]) as (bridge, client):
            # a rebinding page has Host and Origin of its own name: both match each other, not the terminal
            h = {"Host": host, "Origin": "http://" + host}
            for method, path in (("GET", "/"), ("GET", "/login"), ("GET", "/api/state"), ("POST", "/api/sale"),
                                 ("GET", "/static/app.js"), ("POST", "/login")):
                r = await client.request(method, path, headers=h, json={"amount": 5}, allow_redirects=False)
                assert r.status == 421, (method, path, r.status)
            assert await ws_refused(client, headers=h) == 421
            assert bridge.machine.phase == "idle"
    run(main())


def test_configured_names_and_ip_addresses_are_served():
    async def main():
        async with page(hostnames=["shop-pi.local"]) as (bridge, client):
            for host in ("shop-pi.local", "SHOP-PI.local:8080", "127.0.0.1:1", "192.168.1.20:8080", "[::1]:8080"):
                r = await client.get("/api/state", headers={"Host": host})
                assert r.status == 200, host
            assert (await client.get("/api/state", headers={"Host": "localhost"})).status == 421  # not configured
        bridge = make_bridge()  # default names
        assert "localhost" in bridge.config.hostnames and os.uname().nodename.lower() in bridge.config.hostnames
    run(main())


def test_cross_origin_post_and_websocket_refused():
    async def main():
        async with page() as (bridge, client):
            r = await client.post("/api/sale", json={"amount": 5}, headers={"Origin": "http://evil.example"})
            assert r.status == 403 and "cross-origin" in (await r.json())["error"]
            r = await client.post("/login", data={"code": "1"}, headers={"Origin": "null"})
            assert r.status == 403
            assert await ws_refused(client, headers={"Origin": "http://evil.example"}) == 403
            assert bridge.machine.phase == "idle"
            origin = "http://%s:%d" % (client.server.host, client.server.port)
            r = await client.post("/api/sale", json={"amount": 5}, headers={"Origin": origin})
            assert r.status == 200
    run(main())


def test_strangers_websockets_never_lock_the_cashier_out_and_a_device_keeps_its_newest_pages():
    async def main():
        bridge = make_bridge()
        cashier = await client_for(bridge)
        stranger = new_client(cashier.server)
        await stranger.start_server()
        try:
            for _ in range(80):  # more than the old global limit of 64
                assert await ws_refused(stranger) == 401
            mine = []
            for _ in range(SOCKETS_PER_DEVICE + 5):  # one device, many pages: the oldest give way
                ws = await cashier.ws_connect("/ws")
                await next_of(ws, "state")
                mine.append(ws)
            for ws in mine[:5]:
                msg = await asyncio.wait_for(ws.receive(), 5)
                while msg.type == WSMsgType.TEXT:
                    msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type == WSMsgType.CLOSE and msg.data == 4001, msg
            await until(lambda: sum(map(len, cashier.server.app[SOCKETS_KEY].values())) == SOCKETS_PER_DEVICE,
                        "old pages closed")
            newest = mine[-1]
            await newest.send_str('{"op": "sale", "amount": 7}')
            assert (await next_of(newest, "ok"))["op"] == "sale"
            # a second device is not affected by the first one's pages
            other = new_client(cashier.server)
            await other.start_server()
            await sign_in(other, bridge, "phone")
            ws = await other.ws_connect("/ws")
            assert (await next_of(ws, "state"))["state"]["sale"]["amount"] == 7
            await other.close()
        finally:
            await bridge.close()
            await stranger.close()
            await cashier.close()
    run(main())


def test_deeply_nested_json_is_a_400_not_a_recursion_error():
    async def main():
        async with page() as (bridge, client):
            deep = '{"amount": 5, "x": ' + "[" * 2000 + "]" * 2000 + "}"
            assert len(deep) < MAX_MESSAGE
            r = await client.post("/api/sale", data=deep, headers={"Content-Type": "application/json"})
            assert r.status == 400 and "nested deeper than" in (await r.json())["error"]
            quoted = '{"amount": 5, "receipt": "' + '[{\\"' * 100 + '"}'  # brackets (and escaped quotes) in a string are text
            r = await client.post("/api/sale", data=quoted, headers={"Content-Type": "application/json"})
            assert r.status == 200, await r.text()
            await client.post("/api/cancel")
            ws = await client.ws_connect("/ws")
            await next_of(ws, "state")
            await ws.send_str('{"op": "sale", "a": ' + "[" * 1500 + "]" * 1500 + "}")
            assert "nested deeper than" in (await next_of(ws, "error"))["message"]
            await ws.send_str('{"op": "payments"}')  # the socket stays
            assert isinstance((await next_of(ws, "payments"))["payments"], list)
    run(main())


def test_customer_receipt_link_shows_that_payment_to_anyone_with_the_link_only():
    async def main():
        node = FakeNode()
        bridge = make_bridge(node)
        client = await client_for(bridge)
        stranger = new_client(client.server)
        await stranger.start_server()
        try:
            await client.post("/api/sale", json={"amount": 5, "receipt": "tea"})
            await until(lambda: bridge.machine.phase == "waiting", "waiting")
            node.state = "committed"
            await until(lambda: bridge.machine.phase == "paid", "paid")
            [row] = await (await client.get("/api/payments")).json()
            link = row["receipt_link"]
            assert link.startswith("/r/") and len(link) == 3 + 22 and row["token"] == TOKEN
            again = (await (await client.get("/api/payments")).json())[0]["receipt_link"]
            assert again == link  # one link per payment
            printed = await (await client.get("/receipt/" + TXID)).text()
            assert link in printed and "<svg" in printed  # the printed receipt carries the customer's link
            # the stranger has no session: no payments, no tokens, but the link works
            assert (await stranger.get("/api/payments")).status == 401
            r = await stranger.get(link)
            text = await r.text()
            assert r.status == 200 and TXID in text and TOKEN in text and "5 sat" in text and "paid" in text
            assert r.headers["Referrer-Policy"] == "same-origin" and "content=no-referrer" in text and "href='/'" not in text
            assert "pay1" not in text  # the payment id (in the QR code's URL) is not the customer's business
            for guess in ("/r/" + "A" * 22, "/r/x", "/r/" + TXID, "/r/../receipt/" + TXID):
                r = await stranger.get(guess, allow_redirects=False)
                assert r.status in (303, 404) and TOKEN not in await r.text(), guess
            # kept across a restart
            bridge2 = make_bridge(FakeNode(), state_dir=bridge.config.state_dir)
            c2 = await client_for(bridge2, signed_in=False)
            assert TOKEN in await (await c2.get(link)).text()
            await bridge2.close()
            await c2.close()
        finally:
            await bridge.close()
            await stranger.close()
            await client.close()
    run(main())


def test_a_refused_cancel_is_shown_and_the_payment_followed():
    async def main():
        node = FakeNode()
        node.refuse_cancel = "refused"
        async with page(node) as (bridge, client):
            await client.post("/api/sale", json={"amount": 5})
            await until(lambda: bridge.machine.phase == "waiting", "waiting")
            await client.post("/api/cancel")
            await until(lambda: bridge.machine.notice is not None, "the notice")
            assert "did not cancel the payment request" in bridge.machine.notice
            assert "it may still be paid" in bridge.snapshot()["notice"]
            node.state = "committed"  # the payer got through meanwhile: the page says so
            await until(lambda: bridge.machine.sale.late == "committed", "late paid")
    run(main())


def test_a_cancel_refused_because_the_node_cancelled_already_is_no_alarm():
    async def main():
        node = FakeNode()
        async with page(node) as (bridge, client):
            await client.post("/api/sale", json={"amount": 5})
            await until(lambda: bridge.machine.phase == "waiting", "waiting")
            node.refuse_cancel = "refused"
            node.state = "cancelled"  # e.g. the customer declined: the node ended the payment itself
            bridge.wallet_arrived("serial:x")
            bridge.wallet_declined()
            await until(lambda: any(c[0] == "cancel" for c in node.calls), "the node's cancel")
            await asyncio.sleep(0.2)
            assert bridge.machine.phase == "cancelled" and bridge.machine.notice is None
    run(main())


def test_fake_nodes_cannot_offer_what_the_real_node_lacks():
    methods = real_node_methods()
    assert "cancel" in methods and "cancel_request" not in methods
    node = FakeNode()
    node.methods.add("cancel_request")  # what the old fake did: the real node's answer all the same

    async def main():
        with pytest.raises(ControlError) as e:
            await node.call("cancel_request", {"payment_id": "x"})
        assert e.value.code == "unknown_method"
    run(main())


def test_auth_config_keys_and_their_errors(tmp_path):
    from amiko.bridge import config as configs

    f = tmp_path / "b.toml"
    f.write_text('node = "/n"\nhostnames = ["Shop-Pi.local."]\nstate_dir = "st"\ncashier_token = "%s"\n' % CASHIER_TOKEN)
    c = configs.load(str(f))
    assert c.hostnames == ["shop-pi.local"] and c.state_dir == str(tmp_path / "st") and c.cashier_token == CASHIER_TOKEN
    f.write_text('node = "/n"\n')
    assert configs.load(str(f)).state_dir == str(tmp_path / "bridge-state") and configs.load(str(f)).cashier_token is None
    for text, message in [
        ('hostnames = "shop"\n', "hostnames must be a list"),
        ('hostnames = ["shop:8080"]\n', "no ports"),
        ('state_dir = ""\n', "state_dir must be a directory path"),
        ('cashier_token = "too short"\n', "cashier_token must be a secret of 32..200"),
        ('cashier_token = " %s"\n' % CASHIER_TOKEN, "cashier_token must be a secret"),
    ]:
        f.write_text('node = "/n"\n' + text)
        with pytest.raises(configs.ConfigError) as e:
            configs.load(str(f))
        assert message in str(e.value), (text, str(e.value))


def test_the_raspberry_pi_config_keeps_devices_where_systemd_lets_the_bridge_write():
    from pathlib import Path

    from amiko.bridge import config as configs

    shipped = Path(__file__).resolve().parents[2] / "hardware" / "systemd"
    c = configs.load(str(shipped / "bridge.toml"))
    assert c.state_dir == "/var/lib/amiko/bridge"  # StateDirectory=amiko; /etc/amiko is read-only there
    assert "StateDirectory=amiko" in (shipped / "amiko-bridge.service").read_text()
