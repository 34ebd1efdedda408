"""The control socket: how `amiko` commands talk to a running node.

Transport: a unix stream socket HOME/control.sock (mode 0600: only the node's user).
Protocol: JSON lines, UTF-8, one object per line, any number of requests per connection,
answered in order:

    request   {"id": ID, "method": "status", "params": {...}}
    result    {"id": ID, "result": VALUE}
    error     {"id": ID, "error": {"code": CODE, "message": "one line that says what to do"}}

CODE is one of ERROR_CODES. A request line is at most MAX_REQUEST bytes. State a method
creates for its connection (a payment waiting for the user's answer) is dropped when the
connection closes: see Connection.on_close.
(asyncio is imported where the server needs it: the CLI's client starts faster without it.)
"""

import inspect
import json
import logging
import os
import socket

from amiko_core.errors import AmikoError

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
)
_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux; leave room for the NUL


class ControlError(Exception):
    """An error answer of the control protocol."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_dict(self):
        d = {"code": self.code, "message": self.message}
        if self.data is not None:
            d["data"] = self.data
        return d


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


class Connection:
    """One client connection; methods may attach state that lives as long as it."""

    def __init__(self):
        self._on_close = []
        self.closed = False

    def on_close(self, fn):
        """Call fn() (sync, or a coroutine function) when the client disconnects."""
        self._on_close.append(fn)

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


class ControlServer:
    """Serves methods {name: fn(params: dict, conn: Connection) -> JSON value (or awaitable)}."""

    def __init__(self, path, methods):
        self.path = path
        self.methods = dict(methods)
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
        conn = Connection()
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_line({"id": None, "error": {
                        "code": "bad_request", "message": "request longer than %d bytes" % MAX_REQUEST}}))
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                response = await self._dispatch(line, conn)
                writer.write(_line(response))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await conn._close()
            writer.close()
            self._tasks.discard(task)

    async def _dispatch(self, line, conn):
        import asyncio

        req_id = None
        try:
            try:
                req = json.loads(line)
            except ValueError as e:
                raise ControlError("bad_request", "request is not JSON: %s" % e) from None
            if not isinstance(req, dict):
                raise ControlError("bad_request", "request must be a JSON object")
            req_id = req.get("id")
            method = req.get("method")
            params = req.get("params")
            params = {} if params is None else params
            if not isinstance(method, str):
                raise ControlError("bad_request", "request lacks a string \"method\"")
            if not isinstance(params, dict):
                raise ControlError("bad_request", "\"params\" must be a JSON object")
            fn = self.methods.get(method)
            if fn is None:
                raise ControlError("unknown_method", "unknown method %r (known: %s)" % (method, ", ".join(sorted(self.methods))))
            result = fn(params, conn)
            if inspect.isawaitable(result):
                result = await result
            return {"id": req_id, "result": result}
        except ControlError as e:
            return {"id": req_id, "error": e.as_dict()}
        except AmikoError as e:
            return {"id": req_id, "error": {"code": "refused", "message": e.reason}}
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("control: %s failed", line[:200])
            return {"id": req_id, "error": {"code": "internal", "message": "internal error in the node (%s: %s): see node.log" % (type(e).__name__, e)}}


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
            self._sock.sendall(_line({"id": req_id, "method": method, "params": params or {}}))
            line = self._file.readline(MAX_RESPONSE)
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
            resp = json.loads(line)
        except ValueError:
            self.close()
            raise ControlError("internal", "the node at %s sent an unreadable answer" % self.home_path) from None
        if "error" in resp:
            err = resp["error"] or {}
            raise ControlError(err.get("code", "internal"), err.get("message", "unknown error"), err.get("data"))
        return resp.get("result")

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
