"""Asyncio client of the shop node's control API (amiko.node.control: JSON-RPC 2.0).

Over the node's unix socket (full permissions: the bridge runs as the node's operator), or
over BOLT 8 to the node's TCP port ("tcp://HOST:PORT?key=NODEKEY"), authenticated with the
bridge's own key (HOME of the bridge: state_dir/node-client.key, 0600; `amiko bridge key`
prints it) that the node's operator granted request, cancel and watch (amiko.node.grants).

One connection, reopened on the next call after any failure (a kept connection the node closed
meanwhile, e.g. after a restart, is retried once on a new one). Requests carry ids and are
matched to their answers; notifications of watches (`payment_state`) go to their Watch.
Every call has a time-out. Failures raise amiko.node.control.ControlError with a one-line
message (code "not_running" when the node cannot be reached, "timeout" when it did not answer,
"forbidden" when the node refuses this bridge's key or method).
"""

import asyncio
import json
import os

from amiko.node.control import JSONRPC, MAX_RESPONSE, ControlError, _line

KEY_FILE = "node-client.key"


def key_path(state_dir):
    return os.path.join(state_dir, KEY_FILE)


def load_key(state_dir):
    """The bridge's BOLT 8 identity (created on first use, 0600 in a 0700 state_dir)."""
    from amiko.node.identity import Identity

    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    return Identity.load_or_create(key_path(state_dir))


class _Lines:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def send(self, obj):
        self.writer.write(_line(obj))

    async def drain(self):
        await self.writer.drain()

    async def recv(self):
        line = await self.reader.readline()
        if not line:
            raise EOFError("closed")
        return line

    def close(self):
        self.writer.close()


class Watch:
    """A `watch` subscription: .state (the answer), `await next()` -> the next payment_state
    params; ControlError when the connection to the node ended (watch again)."""

    def __init__(self, client, state):
        self.client = client
        self.state = state
        self.id = state["watch"]
        self.queue = asyncio.Queue()
        self.chan = client._chan

    async def next(self):
        item = await self.queue.get()
        if isinstance(item, ControlError):
            raise item
        return item

    def close(self):
        self.client._watches.pop(self.id, None)
        if self.client._chan is self.chan and self.chan is not None:
            self.client._spawn_unwatch(self.id)


class NodeClient:
    def __init__(self, address, timeout=10.0, state_dir=None):
        self.address = address  # ("unix", path, home) or ("tcp", host, port, node key bytes)
        self.timeout = timeout
        self.state_dir = state_dir
        self._chan = None
        self._reader_task = None
        self._pending = {}  # id -> (future, method)
        self._watches = {}
        self._lock = asyncio.Lock()
        self._next_id = 1
        self._bg = set()

    def describe(self):
        if self.address[0] == "tcp":
            return "tcp://%s:%d" % (self.address[1], self.address[2])
        return self.address[2] or self.address[1]

    async def _connect(self):
        kind = self.address[0]
        try:
            if kind == "unix":
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.address[1], limit=MAX_RESPONSE), self.timeout)
                chan = _Lines(reader, writer)
            else:
                from amiko.node.control_stream import ControlChannel
                from amiko.wire.stream import StreamError, connect

                identity = load_key(self.state_dir)
                try:
                    stream = await connect(self.address[1], self.address[2], identity, self.address[3],
                                           timeout=self.timeout)
                except StreamError as e:
                    hint = ("the node's key is not the key= of the bridge's `node` URL: use the key `amiko info` prints"
                            if e.code == "auth" else "is the node running?")
                    raise ControlError("not_running", "cannot reach the shop node at %s (%s): %s"
                                       % (self.describe(), e.reason, hint)) from None
                chan = ControlChannel(stream)
        except (OSError, asyncio.TimeoutError) as e:
            what = getattr(e, "strerror", None) or type(e).__name__
            hint = ("start it with `amiko node --home %s`" % self.address[2] if kind == "unix" and self.address[2]
                    else "is the node running?")
            raise ControlError("not_running", "cannot reach the shop node at %s (%s): %s"
                               % (self.describe(), what, hint)) from None
        self._chan = chan
        self._reader_task = asyncio.ensure_future(self._read(chan))

    async def _read(self, chan):
        why = ControlError("not_running", "the shop node at %s closed the connection: is it still running?"
                           % self.describe())
        try:
            while True:
                raw = await chan.recv()
                try:
                    obj = json.loads(raw)
                except ValueError:
                    why = ControlError("internal", "the shop node at %s sent an unreadable answer" % self.describe())
                    break
                if not isinstance(obj, dict):
                    continue
                if "id" in obj:
                    self._answer(obj)
                elif obj.get("method") == "payment_state" and isinstance(obj.get("params"), dict):
                    params = obj["params"]
                    w = self._watches.get(params.get("watch"))
                    if w is not None:
                        w.queue.put_nowait(params)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not isinstance(e, EOFError):
                why = ControlError("not_running", "lost the connection to the shop node at %s (%s)"
                                   % (self.describe(), getattr(e, "reason", None) or e))
        finally:
            self._lost(chan, why)

    def _answer(self, obj):
        entry = self._pending.pop(obj.get("id"), None)
        if entry is None:
            if "error" in obj and obj.get("id") is None:  # refused before any request could be matched
                err = ControlError.from_dict(obj["error"])
                for fut, _ in list(self._pending.values()):
                    if not fut.done():
                        fut.set_exception(err)
                self._pending.clear()
            return
        fut, method = entry
        if fut.done():
            return
        if obj.get("jsonrpc") != JSONRPC:
            fut.set_exception(ControlError("internal", "the shop node at %s does not speak JSON-RPC 2.0" % self.describe()))
        elif "error" in obj:
            fut.set_exception(ControlError.from_dict(obj["error"]))
        else:
            result = obj.get("result")
            if method == "watch" and isinstance(result, dict) and type(result.get("watch")) is int:
                w = Watch(self, result)
                self._watches[w.id] = w
                result = w
            fut.set_result(result)

    def _lost(self, chan, why):
        if self._chan is not chan:
            return
        self._chan = None
        try:
            chan.close()
        except Exception:
            pass
        for fut, _ in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(why)
        self._pending.clear()
        for w in list(self._watches.values()):
            w.queue.put_nowait(why)
        self._watches.clear()

    async def close(self):
        chan, task = self._chan, self._reader_task
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if chan is not None:
            self._lost(chan, ControlError("not_running", "the bridge closed its connection to the shop node"))
        for t in list(self._bg):
            t.cancel()

    async def _request(self, method, params, timeout):
        timeout = self.timeout if timeout is None else timeout
        for attempt in (1, 2):
            async with self._lock:
                reused = self._chan is not None
                if not reused:
                    await self._connect()
                chan = self._chan
                req_id = self._next_id
                self._next_id += 1
                fut = asyncio.get_running_loop().create_future()
                self._pending[req_id] = (fut, method)
                try:
                    chan.send({"jsonrpc": JSONRPC, "id": req_id, "method": method, "params": params or {}})
                except Exception as e:
                    self._lost(chan, ControlError("not_running", "lost the connection to the shop node at %s (%s)"
                                                  % (self.describe(), e)))
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                self._pending.pop(req_id, None)
                raise ControlError("timeout", "the shop node at %s did not answer %s within %s s"
                                   % (self.describe(), method, timeout)) from None
            except ControlError as e:
                # A kept connection the node closed meanwhile (it restarted): once more on a new one.
                if not (reused and e.code == "not_running" and attempt == 1):
                    raise

    async def call(self, method, params=None, timeout=None):
        result = await self._request(method, params, timeout)
        if isinstance(result, Watch):
            result = result.state
        return result

    async def watch(self, params, timeout=None):
        """Subscribe (`watch` {txid} or {payment_id}): a Watch."""
        w = await self._request("watch", params, timeout)
        if not isinstance(w, Watch):
            raise ControlError("internal", "the shop node at %s answered watch without a watch id" % self.describe())
        return w

    def _spawn_unwatch(self, wid):
        async def unwatch():
            try:
                await self.call("unwatch", {"watch": wid}, timeout=5)
            except ControlError:
                pass

        t = asyncio.ensure_future(unwatch())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)
