"""Asyncio client of the shop node's control protocol (amiko.node.control: JSON lines).

Over the node's unix socket, or over TCP to a forwarded control socket ("tcp://HOST:PORT").
One connection, reopened on the next call after any failure (a kept connection the node closed
meanwhile, e.g. after a restart, is retried once on a new one); calls are serialised. Every
call has a time-out. Failures raise amiko.node.control.ControlError with a one-line message
(code "not_running" when the node cannot be reached, "timeout" when it did not answer).
"""

import asyncio
import json

from amiko.node.control import MAX_RESPONSE, ControlError


class NodeClient:
    def __init__(self, address, timeout=10.0):
        self.address = address  # ("unix", path, home) or ("tcp", host, port)
        self.timeout = timeout
        self._reader = None
        self._writer = None
        self._lock = asyncio.Lock()
        self._next_id = 1

    def describe(self):
        if self.address[0] == "tcp":
            return "tcp://%s:%d" % (self.address[1], self.address[2])
        return self.address[2] or self.address[1]

    async def _connect(self):
        kind = self.address[0]
        try:
            if kind == "unix":
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.address[1], limit=MAX_RESPONSE), self.timeout)
            else:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.address[1], self.address[2], limit=MAX_RESPONSE), self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            what = getattr(e, "strerror", None) or type(e).__name__
            hint = ("start it with `amiko node --home %s`" % self.address[2] if kind == "unix" and self.address[2]
                    else "is the node running?")
            raise ControlError("not_running", "cannot reach the shop node at %s (%s): %s"
                               % (self.describe(), what, hint)) from None

    async def close(self):
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, asyncio.CancelledError, Exception):
                pass
        self._reader = self._writer = None

    async def _exchange(self, method, params, timeout):
        req_id = self._next_id
        self._next_id += 1
        line = json.dumps({"id": req_id, "method": method, "params": params or {}}) + "\n"
        try:
            self._writer.write(line.encode("utf-8"))
            await asyncio.wait_for(self._writer.drain(), timeout)
            answer = await asyncio.wait_for(self._reader.readline(), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise ControlError("timeout", "the shop node at %s did not answer %s within %s s"
                               % (self.describe(), method, timeout)) from None
        except (OSError, ValueError, asyncio.LimitOverrunError) as e:
            await self.close()
            raise ControlError("not_running", "lost the connection to the shop node at %s (%s)"
                               % (self.describe(), e)) from None
        if not answer:
            await self.close()
            raise ControlError("not_running", "the shop node at %s closed the connection: is it still running?"
                               % self.describe())
        return answer

    async def call(self, method, params=None, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        async with self._lock:
            for attempt in (1, 2):
                reused = self._writer is not None
                if not reused:
                    await self._connect()
                try:
                    answer = await self._exchange(method, params, timeout)
                    break
                except ControlError as e:
                    # A kept connection the node closed meanwhile (it restarted): once more on a new one.
                    if not (reused and e.code == "not_running" and attempt == 1):
                        raise
        try:
            resp = json.loads(answer)
        except ValueError:
            await self.close()
            raise ControlError("internal", "the shop node at %s sent an unreadable answer" % self.describe()) from None
        if not isinstance(resp, dict):
            raise ControlError("internal", "the shop node at %s sent an unreadable answer" % self.describe())
        if "error" in resp:
            err = resp["error"] if isinstance(resp["error"], dict) else {}
            raise ControlError(err.get("code", "internal"), err.get("message", "unknown error"), err.get("data"))
        return resp.get("result")
