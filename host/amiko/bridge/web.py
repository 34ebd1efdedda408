"""The cashier's page and its API (aiohttp), served by `amiko bridge`.

    GET  /login, POST /login     sign a device in: form {code, name}; code = the pairing code shown on
                                the terminal's console (or the config's cashier_token) -> session cookie
    POST /logout                this device signs out (its session is revoked)
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
    GET  /api/payments          today's payments (JSON list; committed ones with their "receipt_link")
    GET  /receipt/{txid}        printable receipt of one of today's payments, with the customer's link
    GET  /r/{id}                the customer's receipt: that one payment (amiko.bridge.receiptlinks)

The page is the shop's (amiko.bridge.auth): everything except /login, /static/* and /r/* needs
a paired device's session cookie (HttpOnly, SameSite=Strict) or "Authorization: Bearer
CASHIER_TOKEN"; without it the API answers 401 and pages redirect to /login. Every request's
Host must be an IP address or one of the config's `hostnames` (421 otherwise: a DNS-rebinding
page has its own name). POSTs and websockets whose Origin names another host are refused (403).
A device keeps at most SOCKETS_PER_DEVICE websockets: a new one closes its oldest (code 4001),
so nobody locks the cashier out, and strangers get no websocket at all.

Input is hostile until checked: bodies and websocket messages are at most MAX_MESSAGE bytes of
JSON objects nested at most MAX_DEPTH deep; anything else gets a clear error (the websocket
stays open).
"""

import asyncio
import hmac
import html
import ipaddress
import json
import logging
import os
import re
import time

from aiohttp import WSMsgType, web

from amiko.bridge import sale as sales
from amiko.bridge.auth import CashierAuth, PairingError, format_code
from amiko.bridge.receiptlinks import ReceiptLinks
from amiko.node.control import ControlError

log = logging.getLogger("amiko.bridge.web")

MAX_MESSAGE = 4096
MAX_DEPTH = 8
SOCKETS_PER_DEVICE = 6
REVOKE_CHECK = 1.0  # seconds between looks at the devices file for revoked devices
CLOSE_REPLACED = 4001  # websocket close code: a newer page of the same device took this one's place
CLOSE_SIGNED_OUT = 4401  # websocket close code: the device's session was revoked
TOKEN_DEVICE = "token"  # the device id of requests signed with the config's cashier_token
STATIC = os.path.join(os.path.dirname(__file__), "static")
STATIC_FILES = {"app.css": "text/css", "app.js": "application/javascript"}
PUBLIC_PREFIXES = ("/static/", "/r/")
# no Referer (a /r/ link in it) leaves the terminal; "no-referrer" would make Chromium send
# "Origin: null" with the page's own form posts, which the Origin check refuses
REFERRER_POLICY = "same-origin"
_TXID = re.compile(r"^[0-9a-f]{40}$")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
BRIDGE_KEY = web.AppKey("bridge", object)
AUTH_KEY = web.AppKey("auth", CashierAuth)
LINKS_KEY = web.AppKey("links", ReceiptLinks)
SOCKETS_KEY = web.AppKey("sockets", dict)  # device id -> [websocket, ...] oldest first
TASKS_KEY = web.AppKey("tasks", list)
DEVICE_KEY = web.RequestKey("device", str)  # the signed-in device of a request


def _json_error(status, message):
    return web.json_response({"error": message}, status=status)


def _nesting_ok(text, limit):
    """False when JSON text nests arrays/objects deeper than limit (checked before parsing, so
    json.loads never recurses deep enough to raise RecursionError)."""
    depth = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return False
        elif c in "]}":
            depth -= 1
    return True


def _parse_object(text):
    """A JSON object from untrusted text; ValueError says what is wrong."""
    if len(text) > MAX_MESSAGE:
        raise ValueError("message longer than %d bytes" % MAX_MESSAGE)
    if not _nesting_ok(text, MAX_DEPTH):
        raise ValueError("JSON nested deeper than %d levels" % MAX_DEPTH)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("message is not JSON") from None
    if not isinstance(obj, dict):
        raise ValueError("message must be a JSON object")
    return obj


def _parse_command(text):
    """A websocket/HTTP command as a dict with a string op; ValueError says what is wrong."""
    obj = _parse_object(text)
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


# -- who is asking

def host_name(host_header):
    """The name part of a Host header ("[::1]:8080" -> "::1", "Shop.local.:80" -> "shop.local")."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def host_allowed(host_header, config):
    """IP addresses always (a DNS-rebinding page is reached by a name), names only if configured."""
    name = host_name(host_header)
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in config.hostnames


def _same_origin(request):
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser (curl, scripts with the token)
        return True
    m = re.match(r"^https?://([^/]+)$", origin)
    return bool(m) and m.group(1).lower() == request.host.lower()


def cookie_name(config):
    # one cookie per bridge port: browsers share a host's cookies between its ports
    return "amiko_cashier_%d" % config.port


def signed_in_device(request):
    """The device id of this request's session cookie or bearer token, or None."""
    bridge = request.app[BRIDGE_KEY]
    token = bridge.config.cashier_token
    authz = request.headers.get("Authorization", "")
    if token and authz.startswith("Bearer "):
        return TOKEN_DEVICE if hmac.compare_digest(authz[len("Bearer "):].encode(), token.encode()) else None
    session = request.cookies.get(cookie_name(bridge.config))
    return request.app[AUTH_KEY].device_for(session) if session else None


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

def _html(body, status=200):
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})


async def page(request):
    with open(os.path.join(STATIC, "page.html"), "rb") as f:
        body = f.read()
    return web.Response(body=body, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})


def render_login(config, error=None, status=200):
    e = html.escape
    with open(os.path.join(STATIC, "login.html"), "r", encoding="utf-8") as f:
        text = f.read()
    text = text.replace("{{shop}}", e(config.shop_name))
    text = text.replace("{{error}}", "<p class=login-error role=alert id=login-error>%s</p>" % e(error) if error else "")
    return _html(text, status)


async def login_page(request):
    bridge = request.app[BRIDGE_KEY]
    if signed_in_device(request):
        raise web.HTTPSeeOther("/")
    return render_login(bridge.config)


async def login(request):
    bridge = request.app[BRIDGE_KEY]
    try:
        form = await request.post()
    except (ValueError, web.HTTPException):
        return render_login(bridge.config, "the sign-in form could not be read: try again", 400)
    code, name = form.get("code"), form.get("name")
    if not isinstance(code, str) or not isinstance(name or "", str) or len(code) > 200:
        return render_login(bridge.config, "type the pairing code shown on the terminal", 400)
    try:
        device_id, session = request.app[AUTH_KEY].pair(code, name, request.remote)
    except PairingError as e:
        log.warning("cashier page: failed sign-in from %s: %s", request.remote, e.message)
        return render_login(bridge.config, e.message, e.status)
    log.info("cashier page: device %s (%s) paired from %s", device_id, name or "unnamed", request.remote)
    resp = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
    resp.set_cookie(cookie_name(bridge.config), session, max_age=10 * 365 * 86400, path="/", httponly=True,
                    samesite="Strict", secure=request.secure)
    return resp


async def logout(request):
    device = request[DEVICE_KEY]
    if device != TOKEN_DEVICE:
        request.app[AUTH_KEY].revoke(device)
        await close_device_sockets(request.app, device, CLOSE_SIGNED_OUT, "signed out")
    resp = web.Response(status=303, headers={"Location": "/login", "Cache-Control": "no-store"})
    resp.del_cookie(cookie_name(request.app[BRIDGE_KEY].config), path="/")
    return resp


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
            obj = _parse_object(text) if text.strip() else {}
        except ValueError as e:
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


async def payments_with_links(app):
    """Today's payments; each committed one gets its customer receipt link."""
    rows = await app[BRIDGE_KEY].payments_today()
    for row in rows:
        if row.get("state") == "committed" and row.get("txid"):
            row["receipt_link"] = "/r/" + app[LINKS_KEY].link_for(row)
    return rows


async def api_payments(request):
    try:
        rows = await payments_with_links(request.app)
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
    link = None
    if row.get("state") == "committed":
        link = "%s://%s/r/%s" % (request.scheme, request.host, request.app[LINKS_KEY].link_for(row))
    return _html(render_receipt(bridge.config, row, link))


async def customer_receipt(request):
    row = request.app[LINKS_KEY].get(request.match_info["link"])
    if row is None:
        return _html("<!doctype html><html lang=en><head><meta charset=utf-8><title>No receipt</title>"
                     "<link rel=stylesheet href='/static/app.css'></head><body class=receipt-page><main class=receipt>"
                     "<h1>No such receipt</h1><p>Check the link on your printed receipt.</p></main></body></html>", 404)
    return _html(render_receipt(request.app[BRIDGE_KEY].config, row, customer=True))


def render_receipt(config, row, link=None, customer=False):
    """One payment's receipt: printable for the shop (with the customer's link), or the
    customer's own view (no way back into the cashier page)."""
    from amiko.bridge.service import qr_svg

    e = lambda v: html.escape("" if v is None else str(v))  # noqa: E731
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.get("updated") or row.get("created") or 0))
    lines = [
        ("Amount", "%s %s" % (row.get("amount"), config.currency)),
        ("State", ("paid" if row.get("state") == "committed" else row.get("state"))
                  + (" (%s)" % row["reason"] if row.get("reason") else "")),
        ("Time", when),
        ("Transaction", row.get("txid")),
        ("Payment id", None if customer else row.get("payment_id")),
        ("Meeting point", None if customer else row.get("meeting_point")),
        ("Token (proof)", row.get("token") if row.get("state") == "committed" else None),
        ("Shop key", row.get("payee_key")),
        ("Receipt signature", row.get("signature")),
    ]
    rows = "".join("<tr><th>%s</th><td class=mono>%s</td></tr>" % (e(k), e(v)) for k, v in lines if v)
    extra = ""
    if link:
        extra = ("<div class=customer-link><p>Your receipt and proof online:</p><div class=receipt-qr>%s</div>"
                 "<p class=mono id=customer-link>%s</p></div>" % (qr_svg(link), e(link)))
    actions = ("" if customer else "<p class=noprint><a class=btn href='/'>Back</a> "
               "<a class='btn primary' id=print href='javascript:void 0'>Print</a></p>"
               "<script src='/static/app.js'></script>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<meta name=referrer content=no-referrer>"
            "<title>Receipt %s</title><link rel=stylesheet href='/static/app.css'></head>"
            "<body class=receipt-page><main class=receipt><h1>%s</h1><pre class=receipt-text>%s</pre>"
            "<table>%s</table>%s%s</main></body></html>"
            % (e(row.get("txid"))[:8], e(config.shop_name), e(row.get("receipt") or "(no receipt text)"), rows,
               extra, actions))


async def close_device_sockets(app, device, code, message):
    for ws in list(app[SOCKETS_KEY].get(device, ())):
        await ws.close(code=code, message=message.encode())


async def websocket(request):
    bridge = request.app[BRIDGE_KEY]
    device = request[DEVICE_KEY]
    sockets = request.app[SOCKETS_KEY]
    mine = sockets.setdefault(device, [])
    while len(mine) >= SOCKETS_PER_DEVICE:  # this device's newest page wins: never locked out
        oldest = mine.pop(0)
        asyncio.ensure_future(oldest.close(code=CLOSE_REPLACED, message=b"replaced by a newer page of this device"))
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20)
    await ws.prepare(request)
    mine.append(ws)
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
                    msg = {"type": "payments", "payments": await payments_with_links(request.app)}
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
        if ws in mine:
            mine.remove(ws)
        if not mine and sockets.get(device) is mine:
            del sockets[device]
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
        resp = await handler(request)
    except web.HTTPException as e:
        if e.status >= 400 and request.path.startswith("/api/"):
            return _json_error(e.status, e.reason)
        e.headers.setdefault("Referrer-Policy", REFERRER_POLICY)
        raise
    if not resp.prepared:
        resp.headers.setdefault("Referrer-Policy", REFERRER_POLICY)
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


@web.middleware
async def guard_middleware(request, handler):
    """Host, Origin and sign-in checks in front of every handler."""
    config = request.app[BRIDGE_KEY].config
    if not host_allowed(request.host, config):
        log.warning("cashier page: refused Host %r from %s", request.host[:80], request.remote)
        return _json_error(421, "this terminal does not answer to the name %r: open it by its address or a "
                                "name in `hostnames` of the bridge config" % host_name(request.host)[:80])
    is_ws = request.path == "/ws"
    if (request.method == "POST" or is_ws) and not _same_origin(request):
        return _json_error(403, "cross-origin %s refused: open the cashier page itself"
                                % ("websocket" if is_ws else "request"))
    if request.path == "/login" or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    device = signed_in_device(request)
    if device is None:
        if is_ws or request.path.startswith("/api/") or request.method != "GET":
            return _json_error(401, "this device is not signed in to the cashier page: open /login and type "
                                    "the pairing code shown on the terminal")
        raise web.HTTPSeeOther("/login")
    request[DEVICE_KEY] = device
    return await handler(request)


async def _watch_revocations(app):
    """Close the websockets of devices revoked meanwhile (e.g. by `amiko bridge devices --revoke`)."""
    while True:
        await asyncio.sleep(REVOKE_CHECK)
        try:
            known = app[AUTH_KEY].device_ids()
        except OSError as e:
            log.warning("cashier page: %s", e)
            continue
        for device in list(app[SOCKETS_KEY]):
            if device != TOKEN_DEVICE and device not in known:
                log.info("cashier page: device %s was revoked: closing its pages", device)
                await close_device_sockets(app, device, CLOSE_SIGNED_OUT, "this device was signed out")


ROUTES = (
    ("GET", "/login", login_page), ("POST", "/login", login), ("POST", "/logout", logout),
    ("GET", "/", page), ("GET", "/static/{name}", static), ("GET", "/ws", websocket),
    ("GET", "/api/state", api_state), ("POST", "/api/sale", api_sale), ("POST", "/api/cancel", api_cancel),
    ("POST", "/api/dismiss", api_dismiss), ("GET", "/api/payments", api_payments),
    ("GET", "/receipt/{txid}", receipt_page), ("GET", "/r/{link}", customer_receipt),
)


def make_app(bridge, auth=None):
    config = bridge.config
    app = web.Application(client_max_size=MAX_MESSAGE * 4, middlewares=[errors_middleware, guard_middleware])
    app[BRIDGE_KEY] = bridge
    app[AUTH_KEY] = auth or CashierAuth(config.state_dir, config.cashier_token)
    app[LINKS_KEY] = ReceiptLinks(config.state_dir)
    app[SOCKETS_KEY] = {}
    app[TASKS_KEY] = []
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def on_startup(app):
        app[TASKS_KEY].append(asyncio.ensure_future(_watch_revocations(app)))

    async def on_shutdown(app):
        for task in app[TASKS_KEY]:
            task.cancel()
        for mine in list(app[SOCKETS_KEY].values()):
            for ws in list(mine):
                await ws.close(code=1001, message=b"bridge stopping")

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


def format_pairing(code, expires):
    """The console line that shows a pairing code."""
    return "pairing code for the cashier page: %s (valid until %s, once; `amiko bridge pair` shows a fresh one)" % (
        format_code(code), time.strftime("%H:%M", time.localtime(expires)))
