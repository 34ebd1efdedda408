"""The cashier's page and its API (aiohttp), served by `amiko bridge`.

    GET  /                      the page (static/page.html; CSS and JS from /static, no external assets)
    GET  /static/{app.css,app.js}
    GET  /ws                    websocket: the server pushes {"type": "state", "state": SNAPSHOT} on connect
                                and on every change, {"type": "payments", "payments": [...]} after each
                                outcome; the page sends {"op": "sale", "amount": INT, "receipt": TEXT},
                                {"op": "cancel"}, {"op": "dismiss"}, {"op": "payments"}; a request that
                                cannot be done gets {"type": "error", "op": OP, "message": TEXT}
    GET  /api/state             the snapshot (JSON)
    POST /api/sale              {"amount": INT, "receipt": TEXT} -> snapshot | 400/409 {"error": TEXT}
    POST /api/cancel, /api/dismiss
    GET  /api/payments          today's payments (JSON list)
    GET  /receipt/{txid}        printable receipt of one of today's payments

Input is hostile until checked: bodies and websocket messages are at most MAX_MESSAGE bytes
of JSON objects; anything else gets a clear error (the websocket stays open). Requests that
change state and websockets from another origin (the Origin header names a different host)
are refused, so a web page elsewhere cannot drive the terminal through the cashier's browser.
"""

import asyncio
import html
import json
import logging
import os
import re
import time

from aiohttp import WSMsgType, web

from amiko.bridge import sale as sales
from amiko.node.control import ControlError

log = logging.getLogger("amiko.bridge.web")

MAX_MESSAGE = 4096
MAX_SOCKETS = 64
STATIC = os.path.join(os.path.dirname(__file__), "static")
STATIC_FILES = {"app.css": "text/css", "app.js": "application/javascript"}
_TXID = re.compile(r"^[0-9a-f]{40}$")
BRIDGE_KEY = web.AppKey("bridge", object)
SOCKETS_KEY = web.AppKey("sockets", set)


def _json_error(status, message):
    return web.json_response({"error": message}, status=status)


def _parse_command(text):
    """A websocket/HTTP command as a dict with a string op; ValueError says what is wrong."""
    if len(text) > MAX_MESSAGE:
        raise ValueError("message longer than %d bytes" % MAX_MESSAGE)
    try:
        obj = json.loads(text)
    except ValueError:
        raise ValueError("message is not JSON") from None
    if not isinstance(obj, dict):
        raise ValueError("message must be a JSON object")
    if not isinstance(obj.get("op"), str):
        raise ValueError("message lacks a string \"op\" (sale, cancel, dismiss or payments)")
    return obj


def _amount(obj):
    amount = obj.get("amount")
    if isinstance(amount, str) and re.fullmatch(r"[0-9]{1,19}", amount):  # a form's text field
        amount = int(amount)
    if type(amount) is not int:
        raise sales.SaleError("amount must be a whole number of base units, got %s" % json.dumps(amount)[:40])
    return amount


def _receipt(obj, default):
    receipt = obj.get("receipt", default)
    if receipt is None:
        receipt = default
    if not isinstance(receipt, str):
        raise sales.SaleError("receipt must be text")
    return receipt


def _same_origin(request):
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser's cross-site request (curl, the page's own GETs)
        return True
    m = re.match(r"^https?://([^/]+)$", origin)
    return bool(m) and m.group(1).lower() == request.host.lower()


def run_command(bridge, obj):
    """Do one cashier command; returns the snapshot (or payments coroutine marker)."""
    op = obj["op"]
    if op == "sale":
        return bridge.start_sale(_amount(obj), _receipt(obj, bridge.config.receipt))
    if op == "cancel":
        return bridge.cancel_sale()
    if op == "dismiss":
        return bridge.dismiss()
    raise sales.SaleError("unknown op %r (known: sale, cancel, dismiss, payments)" % op[:40])


# -- handlers

async def page(request):
    with open(os.path.join(STATIC, "page.html"), "rb") as f:
        body = f.read()
    return web.Response(body=body, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                 "style-src 'self'; script-src 'self'; connect-src 'self'"})


async def static(request):
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        return _json_error(404, "no such file")
    with open(os.path.join(STATIC, name), "rb") as f:
        body = f.read()
    return web.Response(body=body, content_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


async def api_state(request):
    return web.json_response(request.app[BRIDGE_KEY].snapshot())


async def _post(request, op):
    if not _same_origin(request):
        return _json_error(403, "cross-origin request refused: use the cashier page itself")
    obj = {}
    if op == "sale":
        if request.content_length is not None and request.content_length > MAX_MESSAGE:
            return _json_error(413, "request body longer than %d bytes" % MAX_MESSAGE)
        raw = await request.content.read(MAX_MESSAGE + 1)
        if len(raw) > MAX_MESSAGE:
            return _json_error(413, "request body longer than %d bytes" % MAX_MESSAGE)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _json_error(400, "bad request: body is not UTF-8 JSON")
        try:
            obj = _parse_command(text) if text.strip() else {}
        except ValueError as e:
            if str(e).startswith("message lacks"):  # the op comes from the URL
                obj = json.loads(text)
            else:
                return _json_error(400, "bad request: %s" % e)
    obj["op"] = op
    try:
        return web.json_response(run_command(request.app[BRIDGE_KEY], obj))
    except sales.SaleError as e:
        return _json_error(409, str(e))


async def api_sale(request):
    return await _post(request, "sale")


async def api_cancel(request):
    return await _post(request, "cancel")


async def api_dismiss(request):
    return await _post(request, "dismiss")


async def api_payments(request):
    try:
        rows = await request.app[BRIDGE_KEY].payments_today()
    except ControlError as e:
        return _json_error(503, e.message)
    return web.json_response(rows)


async def receipt_page(request):
    txid = request.match_info["txid"]
    if not _TXID.match(txid):
        return _json_error(400, "a receipt is addressed by its 40-hex-digit transaction id")
    bridge = request.app[BRIDGE_KEY]
    try:
        row = await bridge.payment(txid)
    except ControlError as e:
        return _json_error(503, e.message)
    if row is None:
        return _json_error(404, "no payment %s in the shop node's recent history" % txid)
    return web.Response(text=render_receipt(bridge.config, row), content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": "default-src 'self'; style-src 'self'"})


def render_receipt(config, row):
    e = lambda v: html.escape("" if v is None else str(v))  # noqa: E731
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.get("updated") or row.get("created") or 0))
    lines = [
        ("Amount", "%s %s" % (row.get("amount"), config.currency)),
        ("State", ("paid" if row.get("state") == "committed" else row.get("state"))
                  + (" (%s)" % row["reason"] if row.get("reason") else "")),
        ("Time", when),
        ("Transaction", row.get("txid")),
        ("Payment id", row.get("payment_id")),
        ("Meeting point", row.get("meeting_point")),
        ("Token (proof)", row.get("token") if row.get("state") == "committed" else None),
        ("Shop key", row.get("payee_key")),
        ("Receipt signature", row.get("signature")),
    ]
    rows = "".join("<tr><th>%s</th><td class=mono>%s</td></tr>" % (e(k), e(v)) for k, v in lines if v)
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<title>Receipt %s</title><link rel=stylesheet href='/static/app.css'></head>"
            "<body class=receipt-page><main class=receipt><h1>%s</h1><pre class=receipt-text>%s</pre>"
            "<table>%s</table><p class=noprint><a class=btn href='/'>Back</a> "
            "<a class='btn primary' id=print href='javascript:void 0'>Print</a></p></main>"
            "<script src='/static/app.js'></script></body></html>"
            % (e(row.get("txid"))[:8], e(config.shop_name), e(row.get("receipt") or "(no receipt text)"), rows))


async def websocket(request):
    bridge = request.app[BRIDGE_KEY]
    sockets = request.app[SOCKETS_KEY]
    if not _same_origin(request):
        return _json_error(403, "cross-origin websocket refused: open the cashier page itself")
    if len(sockets) >= MAX_SOCKETS:
        return _json_error(503, "too many open pages (%d)" % MAX_SOCKETS)
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20)
    await ws.prepare(request)
    sockets.add(ws)
    queue = asyncio.Queue(maxsize=100)
    last_phase = [None]

    def push(snapshot):
        try:
            queue.put_nowait({"type": "state", "state": snapshot})
        except asyncio.QueueFull:
            pass
        if snapshot["phase"] != last_phase[0]:
            if snapshot["phase"] in sales.FINAL or last_phase[0] is None:
                try:
                    queue.put_nowait({"type": "refresh_payments"})
                except asyncio.QueueFull:
                    pass
            last_phase[0] = snapshot["phase"]

    async def sender():
        while True:
            msg = await queue.get()
            if msg["type"] == "refresh_payments":
                try:
                    msg = {"type": "payments", "payments": await bridge.payments_today()}
                except ControlError as e:
                    msg = {"type": "error", "op": "payments", "message": e.message}
            await ws.send_json(msg)

    unsubscribe = bridge.subscribe(push)
    push(bridge.snapshot())
    send_task = asyncio.ensure_future(sender())
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                reply = handle_ws_text(bridge, msg.data, queue)
                if reply is not None:
                    await ws.send_json(reply)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_json({"type": "error", "op": None, "message": "binary messages are not understood: send JSON text"})
            elif msg.type == WSMsgType.ERROR:
                break
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        unsubscribe()
        send_task.cancel()
        sockets.discard(ws)
    return ws


def handle_ws_text(bridge, text, queue):
    """One text message from a page; returns the direct reply (None: the push says it)."""
    op = None
    try:
        obj = _parse_command(text)
        op = obj["op"]
        if op == "payments":
            queue.put_nowait({"type": "refresh_payments"})
            return None
        run_command(bridge, obj)
        return {"type": "ok", "op": op}
    except (ValueError, asyncio.QueueFull) as e:  # SaleError is a ValueError
        return {"type": "error", "op": op if isinstance(op, str) else None, "message": str(e) or "busy"}


@web.middleware
async def errors_middleware(request, handler):
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400 and request.path.startswith("/api/"):
            return _json_error(e.status, e.reason)
        raise


def make_app(bridge):
    app = web.Application(client_max_size=MAX_MESSAGE * 4, middlewares=[errors_middleware])
    app[BRIDGE_KEY] = bridge
    app[SOCKETS_KEY] = set()
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/state", api_state)
    app.router.add_post("/api/sale", api_sale)
    app.router.add_post("/api/cancel", api_cancel)
    app.router.add_post("/api/dismiss", api_dismiss)
    app.router.add_get("/api/payments", api_payments)
    app.router.add_get("/receipt/{txid}", receipt_page)

    async def on_shutdown(app):
        for ws in list(app[SOCKETS_KEY]):
            await ws.close(code=1001, message=b"bridge stopping")

    app.on_shutdown.append(on_shutdown)
    return app
