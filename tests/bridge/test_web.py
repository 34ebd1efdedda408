"""The bridge service and its HTTP/websocket API in-process, against a scripted shop node:
hostile and malformed input gets clear errors, the node's answers drive the sale."""

import asyncio
import contextlib
import json
import tempfile

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from amiko.bridge import config as configs
from amiko.bridge.auth import CashierAuth
from amiko.bridge.service import Bridge, qr_svg
from amiko.bridge.web import MAX_MESSAGE, make_app
from amiko.node.control import ControlError
from amiko.node import schemas
from amiko_testing.node_methods import real_node_methods

TXID = "ab" * 20
TOKEN = "cd" * 20


class FakeWatch:
    def __init__(self, node, state):
        self.node, self.state, self.id = node, state, state["watch"]
        self.queue = asyncio.Queue()

    async def next(self):
        item = await self.queue.get()
        if isinstance(item, ControlError):
            raise item
        return item

    def close(self):
        self.node.watches.pop(self.id, None)


class FakeNode:
    """The control methods the bridge uses, with scripted payee states pushed to its watches.
    It offers only methods a real node has (real_node_methods): a call to any other gets the
    real node's unknown_method; every call's params and every answer are checked against the
    method's schema (schemas/control/METHOD.json), as the test nodes check themselves."""

    def __init__(self):
        self.calls = []
        self._state = "requested"
        self.reason = None
        self._down = False
        self.methods = {"request", "cancel", "watch", "unwatch", "payments"}
        self.refuse_cancel = None  # a ControlError code the node answers `cancel` with
        self.n = 0
        self.watches = {}
        self._next_watch = 1
        assert self.methods <= real_node_methods(), self.methods - real_node_methods()

    @property
    def state(self):
        return self._state

    @state.setter
    def state(self, value):
        self._state = value
        for w in list(self.watches.values()):
            note = self._watch_state(w.id)
            schemas.validate_notification("watch", "payment_state", note)
            w.queue.put_nowait(note)

    @property
    def down(self):
        return self._down

    @down.setter
    def down(self, value):
        self._down = value
        if value:  # the connection drops: every watch ends
            for w in list(self.watches.values()):
                w.queue.put_nowait(ControlError("not_running", "the shop node at fake-node closed the connection"))
            self.watches.clear()

    def describe(self):
        return "fake-node"

    def _watch_state(self, wid):
        return {"watch": wid, "txid": TXID, "payment_id": "pay%d" % self.n, "state": self._state,
                "reason": self.reason, "token": TOKEN if self._state == "committed" else None, "updated": 2 ** 40}

    def _row(self):
        return {"txid": TXID, "role": "payee", "state": self._state, "reason": self.reason,
                "token": TOKEN if self._state == "committed" else None, "payment_id": "pay%d" % self.n,
                "amount": 5, "receipt": "r", "created": 2 ** 40, "updated": 2 ** 40}

    async def watch(self, params, timeout=None):
        state = await self.call("watch", params, timeout)
        w = FakeWatch(self, state)
        self.watches[w.id] = w
        return w

    async def call(self, method, params=None, timeout=None):
        params = {} if params is None else params
        self.calls.append((method, params))
        if self._down:
            raise ControlError("not_running", "cannot reach the shop node at fake-node (Connection refused)")
        if method not in self.methods or method not in real_node_methods():
            raise ControlError("unknown_method", "unknown method %r" % method)
        schemas.validate_call(method, params)
        result = self._answer(method, params)
        schemas.validate_result(method, result)
        return result

    def _answer(self, method, params):
        if method == "cancel":
            if self.refuse_cancel:
                raise ControlError(self.refuse_cancel, "payment %s is locked: it can no longer be cancelled" % params["id"])
            self.state, self.reason = "cancelled", params.get("reason") or "cancelled by payee"
            return {"role": "payee", "result": "cancelled", "reason": self.reason}
        if method == "request":
            self.n += 1
            self._state, self.reason = "requested", None
            return {"url": "amikopay://127.0.0.1:4000/pay%d" % self.n, "payment_id": "pay%d" % self.n,
                    "txid": TXID, "amount": params["amount"], "receipt": params["receipt"]}
        if method == "watch":
            wid, self._next_watch = self._next_watch, self._next_watch + 1
            return self._watch_state(wid)
        if method == "unwatch":
            self.watches.pop(params["watch"], None)
            return {"watch": params["watch"], "watching": False}
        if method == "payments":
            return {"payments": [self._row()] if self.n else []}
        raise AssertionError("the bridge does not call %s" % method)

    async def close(self):
        pass


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make_bridge(node=None, clock=None, **values):
    values.setdefault("node", "/nonexistent/home")
    values.setdefault("state_dir", tempfile.mkdtemp(prefix="amiko-bridge-state-"))
    values.setdefault("poll_interval", 0.02)
    cfg = configs.Config(values)
    return Bridge(cfg, node=node or FakeNode(), clock=clock or Clock())


def run(coro):
    """Run coro on a fresh loop in its own thread (the session's Playwright keeps a loop on this one)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, 30)).result()


async def sign_in(client, bridge, name="till"):
    """Pair this client like a cashier: a fresh code from the terminal, typed at /login."""
    code, _ = CashierAuth(bridge.config.state_dir).new_code()
    r = await client.post("/login", data={"code": code, "name": name}, allow_redirects=False)
    assert r.status == 303, await r.text()
    return r


def new_client(app_or_server):
    server = app_or_server if isinstance(app_or_server, TestServer) else TestServer(app_or_server)
    return TestClient(server, cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: keep cookies of 127.0.0.1


async def client_for(bridge, signed_in=True, app=None):
    client = new_client(app or make_app(bridge))
    await client.start_server()
    await bridge.start()
    if signed_in:
        await sign_in(client, bridge)
    return client


@contextlib.asynccontextmanager
async def page(node=None, signed_in=True, **values):
    """(bridge, client): a started Bridge (make_bridge(node, **values)) and a test client of its
    page, signed in unless signed_in is False; both closed afterwards."""
    bridge = make_bridge(node, **values)
    client = await client_for(bridge, signed_in=signed_in)
    try:
        yield bridge, client
    finally:
        await bridge.close()
        await client.close()


async def until(pred, what, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


async def next_of(ws, kind):
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == WSMsgType.TEXT, msg
        obj = json.loads(msg.data)
        if obj["type"] == kind:
            return obj


def test_sale_over_http_follows_the_node_to_paid():
    async def main():
        node = FakeNode()
        async with page(node) as (bridge, client):
            r = await client.post("/api/sale", json={"amount": 5, "receipt": "tea"})
            assert r.status == 200 and (await r.json())["phase"] == "preparing"
            await until(lambda: bridge.machine.phase == "waiting", "waiting")
            snap = await (await client.get("/api/state")).json()
            assert snap["sale"]["url"] == "amikopay://127.0.0.1:4000/pay1" and "<svg" in snap["sale"]["qr_svg"]
            r = await client.post("/api/sale", json={"amount": 6})
            assert r.status == 409 and "in progress" in (await r.json())["error"]
            node.state = "locked"
            await until(lambda: bridge.machine.phase == "locked", "locked")
            r = await client.post("/api/cancel")
            assert r.status == 409 and "already on its way" in (await r.json())["error"]
            node.state = "committed"
            await until(lambda: bridge.machine.phase == "paid", "paid")
            await asyncio.sleep(0.1)
            assert bridge._watches == {}
            rows = await (await client.get("/api/payments")).json()
            assert rows and rows[0]["state"] == "committed" and rows[0]["bridge_state"] == "paid"
            receipt = await client.get("/receipt/" + TXID)
            text = await receipt.text()
            assert receipt.status == 200 and "Amiko shop" in text and "5 sat" in text and TXID in text
            r = await client.post("/api/dismiss")
            assert (await r.json())["phase"] == "idle"
    run(main())


def test_node_down_ends_the_sale_with_a_clear_reason_and_cancel_reaches_the_node():
    async def main():
        node = FakeNode()
        node.down = True
        async with page(node) as (bridge, client):
            await client.post("/api/sale", json={"amount": 5})
            await until(lambda: bridge.machine.phase == "cancelled", "cancelled")
            assert bridge.machine.sale.reason.startswith("no payment request from the shop node: cannot reach the shop node")
            r = await client.get("/api/payments")
            assert r.status == 503 and "cannot reach" in (await r.json())["error"]
            node.down = False
            await client.post("/api/sale", json={"amount": 5})
            await until(lambda: bridge.machine.phase == "waiting", "waiting")
            await client.post("/api/cancel")
            await until(lambda: ("cancel", {"id": "pay1", "reason": "cancelled by the cashier"}) in node.calls,
                        "the node's cancel")
            assert bridge.machine.sale.reason == "cancelled by the cashier" and node.state == "cancelled"
            assert bridge.machine.notice is None
            rows = await (await client.get("/api/payments")).json()
            assert rows[0]["state"] == "cancelled" and rows[0]["reason"] == "cancelled by the cashier"
            # node unreachable while watching: shown, then cleared
            await client.post("/api/sale", json={"amount": 5})
            await until(lambda: bridge.machine.phase == "waiting", "waiting")
            node.down = True
            await until(lambda: bridge.node_problem is not None, "node problem shown")
            assert "closed the connection" in bridge.snapshot()["node_problem"]
            await until(lambda: "cannot reach" in (bridge.node_problem or ""), "the bridge watches again: node down")
            node.down = False
            await until(lambda: bridge.node_problem is None, "node problem cleared")
    run(main())


def test_timeouts_fire_from_the_ticker_on_a_fake_clock():
    async def main():
        clock = Clock()
        async with page(clock=clock, timeouts={"waiting": 30}) as (bridge, client):
            ws = await client.ws_connect("/ws")
            await client.post("/api/sale", json={"amount": 5})
            await until(lambda: bridge.machine.phase == "waiting", "waiting")
            clock.t += 29.5
            await asyncio.sleep(0.3)
            assert bridge.machine.phase == "waiting"
            clock.t += 0.5
            await until(lambda: bridge.machine.phase == "cancelled", "time-out")
            while True:
                st = (await next_of(ws, "state"))["state"]
                if st["phase"] == "cancelled":
                    break
            assert st["sale"]["reason"] == "timed out: no wallet connected within 30 s" and st["dismissable"]
            # it stays: much later still cancelled, until dismissed
            clock.t += 3600
            await asyncio.sleep(0.3)
            assert bridge.machine.phase == "cancelled"
            await ws.close()
    run(main())


@pytest.mark.parametrize("body,status,message", [
    (b"not json", 400, "message is not JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b'{"amount": "12x"}', 409, "amount must be a whole number"),
    ('{"amount": "\u00b2"}'.encode(), 409, "amount must be a whole number"),
    (b'{"amount": true}', 409, "amount must be a whole number"),
    (b'{"amount": 1.5}', 409, "amount must be a whole number"),
    (b'{"amount": -3}', 409, "amount must be a whole number"),
    (b'{"amount": 99999999999999999999}', 409, "amount must be a whole number"),
    (b'{"amount": 5, "receipt": 7}', 409, "receipt must be text"),
    (b'{"amount": 5, "receipt": "a\\u0000b"}', 409, "control character"),
    (b'{"amount": 5, "receipt": "' + b"x" * 600 + b'"}', 409, "at most 512"),
    (b"{" + b" " * MAX_MESSAGE + b"}", 413, "longer than"),
    (b"", 409, "amount must be a whole number"),
])
def test_hostile_http_sale_bodies_get_clear_errors(body, status, message):
    async def main():
        async with page() as (bridge, client):
            r = await client.post("/api/sale", data=body, headers={"Content-Type": "application/json"})
            assert r.status == status
            assert message in (await r.json())["error"]
            assert bridge.machine.phase == "idle"
    run(main())


def test_hostile_http_other_requests():
    async def main():
        async with page() as (bridge, client):
            r = await client.post("/api/sale", json={"amount": 5}, headers={"Origin": "http://evil.example"})
            assert r.status == 403 and "cross-origin" in (await r.json())["error"] and bridge.machine.phase == "idle"
            r = await client.post("/api/dismiss")
            assert r.status == 409 and "nothing to dismiss" in (await r.json())["error"]
            r = await client.post("/api/cancel")
            assert r.status == 409 and "no sale in progress" in (await r.json())["error"]
            r = await client.get("/receipt/../../etc/passwd")
            assert r.status == 404
            r = await client.get("/receipt/zz")
            assert r.status == 400 and "40-hex-digit" in (await r.json())["error"]
            r = await client.get("/receipt/" + "cd" * 20)
            assert r.status == 404 and "no payment" in (await r.json())["error"]
            r = await client.get("/static/..%2Fweb.py")
            assert r.status == 404
            r = await client.get("/static/page.html")
            assert r.status == 404
            r = await client.get("/api/sale")
            assert r.status == 405 and "error" in await r.json()
            r = await client.get("/")
            assert r.status == 200 and "<script src=\"/static/app.js\"></script>" in await r.text()
            assert "Content-Security-Policy" in r.headers
            for name in ("app.js", "app.css"):
                assert (await client.get("/static/" + name)).status == 200
    run(main())


def test_hostile_websocket_messages_get_clear_errors_and_the_socket_stays():
    async def main():
        async with page() as (bridge, client):
            r = await client.get("/ws", headers={"Origin": "http://evil.example", "Upgrade": "websocket",
                                                 "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            assert r.status == 403
            ws = await client.ws_connect("/ws")
            first = await next_of(ws, "state")
            assert first["state"]["phase"] == "idle"
            cases = [
                ("nope", "message is not JSON"),
                ("[]", "must be a JSON object"),
                ('{"op": 5}', "lacks a string \"op\""),
                ('{"op": "explode"}', "unknown op 'explode'"),
                ('{"op": "sale", "amount": {"$gt": 0}}', "amount must be a whole number"),
                ('{"op": "sale", "amount": 1e400}', "amount must be a whole number"),
                ('{"op": "sale", "amount": 5, "receipt": ["x"]}', "receipt must be text"),
                ('{"op": "cancel"}', "no sale in progress"),
                ('{"op": "dismiss"}', "nothing to dismiss"),
                ('{"op": "sale", "amount": 5, "receipt": "' + "é" * 300 + '"}', "at most 512"),
            ]
            for text, message in cases:
                await ws.send_str(text)
                err = await next_of(ws, "error")
                assert message in err["message"], (text, err)
            await ws.send_bytes(b"\x00\x01")
            assert "binary messages" in (await next_of(ws, "error"))["message"]
            assert bridge.machine.phase == "idle"
            # still usable: a real command works, and two sales at once are refused
            await ws.send_str('{"op": "sale", "amount": 42, "receipt": "ok"}')
            assert (await next_of(ws, "ok"))["op"] == "sale"
            await ws.send_str('{"op": "sale", "amount": 43}')
            assert "in progress" in (await next_of(ws, "error"))["message"]
            await ws.send_str('{"op": "payments"}')
            assert isinstance((await next_of(ws, "payments"))["payments"], list)
            # an oversized message closes that socket (aiohttp's limit), the bridge goes on
            await ws.send_str('{"op": "x", "pad": "' + "y" * (MAX_MESSAGE * 2) + '"}')
            msg = await asyncio.wait_for(ws.receive(), 5)
            while msg.type == WSMsgType.TEXT:
                msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR)
            ws2 = await client.ws_connect("/ws")
            assert (await next_of(ws2, "state"))["state"]["sale"]["amount"] == 42
            await ws2.close()
    run(main())


def test_config_defaults_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("AMIKO_HOME", str(tmp_path / "shop"))
    c = configs.load()
    assert c.node == ("unix", str(tmp_path / "shop" / "control.sock"), str(tmp_path / "shop"))
    assert (c.host, c.port, c.transports, c.page_url) == ("127.0.0.1", 8080, [], "http://127.0.0.1:8080/")
    f = tmp_path / "b.toml"
    f.write_text('node = "tcp://10.0.0.2:7000?key=0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"\nlisten = "0.0.0.0:9000"\ntransports = ["serial:/dev/ttyACM0"]\n'
                 '[timeouts]\nwaiting = 30\n')
    c = configs.load(str(f))
    assert c.node == ("tcp", "10.0.0.2", 7000, bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")) and c.page_url == "http://127.0.0.1:9000/" and c.timeouts == {"waiting": 30}
    f.write_text('node = "rel/home"\n')
    assert configs.load(str(f)).node[2] == str(tmp_path / "rel" / "home")
    for text, message in [
        ("nonsense = 1\n", "unknown setting(s) nonsense"),
        ("listen = \"8080\"\n", "listen must be"),
        ("listen = \"h:99999\"\n", "port in 1..65535"),
        ("transports = \"serial:/dev/x\"\n", "transports must be a list"),
        ("transports = [\"usb:/dev/x\"]\n", "kind must be one of serial, nfc, ble"),
        ("transports = [\"serial:\"]\n", "names no device"),
        ("[timeouts]\npaid = 3\n", "no time-out for phase 'paid'"),
        ("[timeouts]\nwaiting = -1\n", "0 < seconds"),
        ("poll_interval = 0\n", "poll_interval"),
        ("node = \"tcp://10.0.0.2:7000\"\n", "a tcp:// node needs ?key=NODEKEY"),
        ("node = \"tcp://10.0.0.2:7000?key=02ab\"\n", "a tcp:// node needs ?key=NODEKEY"),
        ("receipt = \"a\\u0001\"\n", "control character"),
        ("= broken", "is not valid TOML"),
    ]:
        f.write_text(text)
        with pytest.raises(configs.ConfigError, match=None) as e:
            configs.load(str(f))
        assert message in str(e.value), (text, str(e.value))
    with pytest.raises(configs.ConfigError, match="no bridge config at"):
        configs.load(str(tmp_path / "missing.toml"))
    monkeypatch.delenv("AMIKO_HOME")
    with pytest.raises(configs.ConfigError, match="no shop node given"):
        configs.load()


def test_qr_svg_scales_and_encodes_the_url():
    svg = qr_svg("amikopay://127.0.0.1:4000/abc")
    assert svg.startswith("<svg viewBox=") and 'width="100%"' in svg and "<script" not in svg


def test_any_websocket_text_gets_ok_or_a_clear_error():
    """Random text and random JSON objects: never an exception, only ok or an error message."""
    from hypothesis import given, settings, strategies as st

    from amiko.bridge.web import handle_ws_text

    values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                          max_leaves=8)
    ops = st.sampled_from(["sale", "cancel", "dismiss", "payments", "x"]) | st.text(max_size=5)
    objects = st.fixed_dictionaries({"op": ops}, optional={"amount": values, "receipt": values})

    class Q:
        def put_nowait(self, item):
            pass

    bridge = make_bridge()
    bridge._spawn = lambda coro: coro.close()  # no node calls: only the parsing and the machine

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(max_size=200), objects.map(json.dumps), values.map(json.dumps)))
    def check(text):
        reply = handle_ws_text(bridge, text, Q())
        assert reply is None or reply["type"] in ("ok", "error")
        if reply and reply["type"] == "error":
            assert isinstance(reply["message"], str) and reply["message"]
        if bridge.machine.phase != "idle":  # a valid sale got through: back to idle for the next example
            bridge.machine.cancel(0)
            bridge.machine.dismiss(0)

    check()
