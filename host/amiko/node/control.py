"""The control API: how `amiko` commands (and the shop's bridge) talk to a running node.

Protocol: JSON-RPC 2.0 (as Core Lightning's lightning-rpc), UTF-8, one object per message;
every method and its params and result are described by a JSON schema in
schemas/control/METHOD.json (amiko.node.schemas):

    request       {"jsonrpc": "2.0", "id": ID, "method": "status", "params": {...}}
    result        {"jsonrpc": "2.0", "id": ID, "result": VALUE}
    error         {"jsonrpc": "2.0", "id": ID, "error": {"code": INT, "message": "one line that says
                   what to do", "data": {"reason": REASON}}}
    notification  {"jsonrpc": "2.0", "method": "payment_state", "params": {...}}   (node -> client,
                   for a subscription such as `watch`; a client's request without "id" is run, unanswered)

REASON is one of ERROR_CODES (the string codes `amiko --json` prints); INT is the JSON-RPC code
of ERROR_NUMBERS: -32700 parse error, -32600 invalid request, -32601 unknown method, -32602
invalid params, -32603 internal, and our own positive codes for the rest.

Transports: the unix stream socket HOME/control.sock (mode 0600: the node's user, the operator,
with every method), one message per line, at most MAX_REQUEST bytes; and BOLT 8 connections to
the node's TCP port for a key the operator granted some methods (amiko.node.control_stream,
amiko.node.grants). Requests on one connection are answered in order. State a method creates
for its connection (a payment waiting for the user's answer, a watch) is dropped when the
connection closes: see Connection.on_close. A node started with `--developer --dev-check-schemas`
(every node of the tests) checks its control API against the schemas: a call the schema forbids
must be refused by the method, and every answer and notification must fit; what breaks that is
answered with an internal error and logged as SCHEMA VIOLATION.
(asyncio is imported where the server needs it: the CLI's client starts faster without it.)
"""

import inspect
import json
import logging
import os
import socket

from amiko_core.errors import AmikoError

from amiko.node import schemas

log = logging.getLogger("amiko.control")

MAX_REQUEST = 64 * 1024
MAX_RESPONSE = 64 * 1024 * 1024
ERROR_CODES = (
    "bad_request",  # not a JSON object with a string method
    "unknown_method",
    "invalid",  # bad parameters
    "not_found",  # no such link / channel / payment
    "refused",  # the node refuses (e.g. channel has pending payments)
    "cancelled",  # a payment was cancelled
    "timeout",
    "internal",  # a bug: details in HOME/node.log
    "forbidden",  # the connection's key is not granted the method (amiko.node.grants)
)
ERROR_NUMBERS = {
    "parse_error": -32700,  # (reported with reason bad_request)
    "bad_request": -32600,
    "unknown_method": -32601,
    "invalid": -32602,
    "internal": -32603,
    "not_found": 1,
    "refused": 2,
    "cancelled": 3,
    "timeout": 4,
    "forbidden": 5,
    "not_running": 6,
}
_REASONS = {v: k for k, v in ERROR_NUMBERS.items() if k != "parse_error"}
_REASONS[-32700] = "bad_request"
JSONRPC = "2.0"
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux; leave room for the NUL


class ControlError(Exception):
    """An error answer of the control protocol: code is its REASON (ERROR_CODES)."""

    def __init__(self, code, message, data=None, number=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.number = number

    def as_dict(self):
        """The JSON-RPC error object."""
        data = {"reason": self.code}
        if isinstance(self.data, dict):
            data.update((k, v) for k, v in self.data.items() if k != "reason")
        elif self.data is not None:
            data["detail"] = self.data
        number = self.number if self.number is not None else ERROR_NUMBERS.get(self.code, ERROR_NUMBERS["internal"])
        return {"code": number, "message": self.message, "data": data}

    @classmethod
    def from_dict(cls, err):
        """The ControlError of a JSON-RPC error object (a client's side of as_dict)."""
        err = err if isinstance(err, dict) else {}
        number = err.get("code")
        data = err.get("data") if isinstance(err.get("data"), dict) else {}
        reason = data.get("reason") if isinstance(data.get("reason"), str) else _REASONS.get(number, "internal")
        rest = {k: v for k, v in data.items() if k != "reason"}
        message = err.get("message") if isinstance(err.get("message"), str) else "unknown error"
        return cls(reason, message, rest.get("detail", rest or None), number if type(number) is int else None)


class NodeNotRunning(ControlError):
    def __init__(self, home_path, detail=None):
        message = "node at %s is not running: start it with `amiko node --home %s`" % (home_path, home_path)
        super().__init__("not_running", message, detail)


class _ShortPath:
    """A path usable in sun_path: long ones go through /proc/self/fd/N of their directory."""

    def __init__(self, path):
        self.path = path
        self._fd = None

    def __enter__(self):
        if len(os.fsencode(self.path)) <= _SUN_PATH_MAX:
            return self.path
        directory, name = os.path.split(self.path)
        self._fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        return "/proc/self/fd/%d/%s" % (self._fd, name)

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _line(obj):
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def encode(obj):
    """One protocol message as UTF-8 JSON (no newline)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_response(req_id, err):
    return {"jsonrpc": JSONRPC, "id": req_id, "error": err.as_dict()}


class Connection:
    """One client connection; methods may attach state that lives as long as it.

    send(obj) writes one message to the client (set by the transport); permissions is None
    (every method: the unix socket) or the set of method names the client's key may call;
    key is the client's BOLT 8 static key (None on the unix socket); check: every call, answer
    and notification is validated against schemas/control/ (`amiko node --dev-check-schemas`)."""

    def __init__(self, send=None, permissions=None, key=None, check=False):
        self._on_close = []
        self.closed = False
        self.send = send
        self.permissions = permissions
        self.key = key
        self.check = check

    def on_close(self, fn):
        """Call fn() (sync, or a coroutine function) when the client disconnects."""
        self._on_close.append(fn)

    def notify(self, method, params):
        """Push a JSON-RPC notification to the client (False if it is gone)."""
        if self.closed or self.send is None:
            return False
        if self.check:
            try:
                schemas.validate_notification_named(method, params)
            except schemas.SchemaViolation as e:
                log.error("control: SCHEMA VIOLATION: %s", e)
                raise
        try:
            self.send({"jsonrpc": JSONRPC, "method": method, "params": params})
            return True
        except Exception:
            return False

    async def _close(self):
        self.closed = True
        for fn in reversed(self._on_close):
            try:
                result = fn()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("control: error in close handler")
        self._on_close = []


def _outside_schema(method, params):
    try:
        schemas.validate_call(method, params)
    except schemas.SchemaViolation as e:
        return e
    return None


async def dispatch(methods, raw, conn):
    """Answer one request (bytes or str of one JSON value) on conn: the response object, or
    None for a notification (a request without "id")."""
    import asyncio

    req_id = None
    answer = True
    method = params = None
    try:
        try:
            req = json.loads(raw)
        except ValueError as e:
            raise ControlError("bad_request", "request is not JSON: %s" % e, number=ERROR_NUMBERS["parse_error"]) from None
        if not isinstance(req, dict):
            raise ControlError("bad_request", "request must be a JSON object")
        req_id = req.get("id")
        if type(req_id) not in (int, str) and req_id is not None:
            req_id = None
            raise ControlError("bad_request", "\"id\" must be a number or a string")
        answer = "id" in req
        if req.get("jsonrpc") != JSONRPC:
            answer = True
            raise ControlError("bad_request", "request lacks \"jsonrpc\": \"2.0\" (the control API is JSON-RPC 2.0)")
        method = req.get("method")
        params = req.get("params")
        params = {} if params is None else params
        if not isinstance(method, str):
            answer = True
            raise ControlError("bad_request", "request lacks a string \"method\"")
        if not isinstance(params, dict):
            raise ControlError("invalid", "\"params\" must be a JSON object of named parameters")
        allowed = methods if conn.permissions is None else [n for n in methods if n in conn.permissions]
        fn = methods.get(method)
        if fn is None:
            raise ControlError("unknown_method", "unknown method %r (known: %s)" % (method, ", ".join(sorted(allowed))))
        if conn.permissions is not None and method not in conn.permissions:
            raise ControlError("forbidden", "method %r is not granted to this key (granted: %s): only the node's "
                               "operator may call it, on the node's own machine" % (method, ", ".join(sorted(allowed))))
        outside = _outside_schema(method, params) if conn.check else None
        result = fn(params, conn)
        if inspect.isawaitable(result):
            result = await result
        if outside is not None:
            raise outside  # the node did what its schema forbids (a method refusing it is fine)
        if conn.check:
            schemas.validate_result(method, result)
        response = {"jsonrpc": JSONRPC, "id": req_id, "result": result}
    except ControlError as e:
        response = error_response(req_id, e)
    except AmikoError as e:
        response = error_response(req_id, ControlError("refused", e.reason))
    except schemas.SchemaViolation as e:  # only with conn.check (a developer node under test)
        log.error("control: SCHEMA VIOLATION: %s", e)
        response = error_response(req_id, ControlError("internal", "outside the control API's schema: %s" % e))
    except asyncio.CancelledError:
        raise
    except Exception as e:
        # Parameter values stay out of the log: they include invitation secrets and tokens.
        log.exception("control: %r failed (params: %s)", method,
                      ", ".join(sorted(str(k) for k in params)) if isinstance(params, dict) else "-")
        response = error_response(req_id, ControlError(
            "internal", "internal error in the node (%s: %s): see node.log" % (type(e).__name__, e)))
    return response if answer else None


class ControlServer:
    """Serves methods {name: fn(params: dict, conn: Connection) -> JSON value (or awaitable)}
    on the unix socket, with every permission. check: validate against the schemas (Connection)."""

    def __init__(self, path, methods, check=False):
        self.path = path
        self.methods = dict(methods)
        self.check = check
        self._server = None
        self._tasks = set()

    async def start(self):
        import asyncio

        try:
            os.unlink(self.path)  # stale: the caller holds the home's lock
        except FileNotFoundError:
            pass
        with _ShortPath(self.path) as bind_path:
            old = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(self._serve, bind_path, limit=MAX_REQUEST)
            finally:
                os.umask(old)

    async def close(self):
        import asyncio

        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass
            self._server = None
        try:
            os.unlink(self.path)
        except OSError:
            pass

    async def _serve(self, reader, writer):
        import asyncio

        task = asyncio.current_task()
        self._tasks.add(task)
        conn = Connection(send=lambda obj: writer.write(_line(obj)), check=self.check)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_line(error_response(None, ControlError(
                        "bad_request", "request longer than %d bytes" % MAX_REQUEST))))
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                response = await dispatch(self.methods, line, conn)
                if response is not None:
                    writer.write(_line(response))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await conn._close()
            writer.close()
            self._tasks.discard(task)


def _is_notification(line):
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and "id" not in obj and "method" in obj


def parse_response(line, where):
    """The result of one response line, or raise its ControlError."""
    try:
        resp = json.loads(line)
    except ValueError:
        raise ControlError("internal", "the node at %s sent an unreadable answer" % where) from None
    if not isinstance(resp, dict) or resp.get("jsonrpc") != JSONRPC:
        raise ControlError("internal", "the node at %s sent an answer that is not JSON-RPC 2.0" % where)
    if "error" in resp:
        raise ControlError.from_dict(resp["error"])
    return resp.get("result")


class ControlClient:
    """Blocking client (the CLI is synchronous). Raises NodeNotRunning or ControlError."""

    def __init__(self, home_path, socket_path, timeout=30.0):
        self.home_path = home_path
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock = None
        self._file = None
        self._next_id = 1

    def connect(self):
        if self._sock is not None:
            return self
        if not os.path.exists(self.socket_path):
            raise NodeNotRunning(self.home_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with _ShortPath(self.socket_path) as path:
                sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise NodeNotRunning(self.home_path) from None
        except OSError as e:
            sock.close()
            raise ControlError("not_running", "cannot reach the node at %s (%s): is `amiko node --home %s` running?"
                               % (self.home_path, e.strerror or e, self.home_path)) from None
        self._sock = sock
        self._file = sock.makefile("rb")
        return self

    def call(self, method, params=None, timeout=None):
        """Send one request and wait for its answer (timeout seconds; None = the client's)."""
        self.connect()
        req_id = self._next_id
        self._next_id += 1
        self._sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            self._sock.sendall(_line({"jsonrpc": JSONRPC, "id": req_id, "method": method, "params": params or {}}))
            while True:
                line = self._file.readline(MAX_RESPONSE)
                if not line or not _is_notification(line):
                    break  # (this client subscribes to nothing: a notification is skipped)
        except socket.timeout:
            self.close()
            raise ControlError("timeout", "the node at %s did not answer %s in time" % (self.home_path, method)) from None
        except OSError as e:
            self.close()
            raise ControlError("not_running", "lost the connection to the node at %s (%s): is it still running?"
                               % (self.home_path, e.strerror or e)) from None
        if not line:
            self.close()
            raise ControlError("not_running", "the node at %s closed the control connection: is it still running?" % self.home_path)
        try:
            result = parse_response(line, self.home_path)
        except ControlError as e:
            if e.code == "internal" and e.number is None:
                self.close()
            raise
        return result

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()
