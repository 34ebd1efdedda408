"""The node's one TCP listener: bounded, BOLT 8 connections dispatched by their first frame.

Per accepted TCP connection:
  1. bounds: at most `max_per_address` connections from one IP address and
     `max_connections` in all. A connection over a bound evicts the OLDEST UNAUTHENTICATED
     connection (one that has not yet completed the Noise handshake and its first frame:
     of the same address for the per-address bound, of any address for the total); only
     when every counted connection is authenticated is the new one refused. So stalled
     connections, however many, churn among themselves and never push out a peer that
     authenticated (a node link, a payment in progress).
  2. the BOLT 8 handshake (amiko.wire.stream.accept) within `handshake_timeout`;
  3. the first frame within `first_frame_timeout` of the handshake;
  4. `await on_connection(stream, first_frame)`: the owner dispatches by the frame's type
     (the daemon: ConnectLink, Pay, Auth, ProvisionRequest). The handler owns the stream
     and its idle deadlines from then on; the listener closes the stream when it returns.
A first frame that does not decode is answered with Error{code: codes.PROTOCOL} and closed.
Every refusal, eviction and missed deadline is logged with the peer address (at most
LOG_BURST lines per address and kind of event per LOG_WINDOW seconds, then one line saying
how many were not logged) and counted in stats().

Limits: the module constants are the defaults; a node sets its own through Limits (node.toml
`handshake_timeout`, `first_frame_timeout`, `max_connections`, `max_connections_per_address`).
"""

import asyncio
import logging
import time
from collections import OrderedDict

from amiko_core import codes
from amiko_core import frame as frames
from amiko_core import messages as m

from amiko.wire.stream import HANDSHAKE_TIMEOUT, StreamClosed, StreamError, accept, decode_plaintext

log = logging.getLogger("amiko.listener")

FIRST_FRAME_TIMEOUT = 10.0  # seconds from the end of the handshake to the first frame
MAX_CONNECTIONS = 512  # connections served at once
MAX_PER_ADDRESS = 128  # connections from one IP address at once
LOG_BURST = 10  # log lines per address per LOG_WINDOW; the rest are counted
LOG_WINDOW = 10.0


class Limits:
    """The bounds of one listener (see the module docstring)."""

    __slots__ = ("handshake_timeout", "first_frame_timeout", "max_connections", "max_per_address")

    def __init__(self, handshake_timeout=HANDSHAKE_TIMEOUT, first_frame_timeout=FIRST_FRAME_TIMEOUT,
                 max_connections=MAX_CONNECTIONS, max_per_address=MAX_PER_ADDRESS):
        for name, value in (("handshake_timeout", handshake_timeout), ("first_frame_timeout", first_frame_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError("listener %s must be a positive number of seconds" % name)
        for name, value in (("max_connections", max_connections), ("max_per_address", max_per_address)):
            if type(value) is not int or value < 1:
                raise ValueError("listener %s must be a positive integer" % name)
        self.handshake_timeout = handshake_timeout
        self.first_frame_timeout = first_frame_timeout
        self.max_connections = max_connections
        self.max_per_address = max_per_address


class _Conn:
    __slots__ = ("address", "peer", "writer", "task", "authenticated", "evicted", "closed")

    def __init__(self, address, peer, writer, task):
        self.address = address
        self.peer = peer
        self.writer = writer
        self.task = task
        self.authenticated = False
        self.evicted = False
        self.closed = False


class _RateLog:
    """At most LOG_BURST lines per (address, kind of event) per LOG_WINDOW; then one line with
    the count left out (written with the next event of that kind after the window)."""

    def __init__(self):
        self._windows = {}

    def __call__(self, address, kind, level, fmt, *args):
        key = (address, kind)
        now = time.monotonic()
        start, count, dropped = self._windows.get(key, (now, 0, 0))
        if now - start >= LOG_WINDOW:
            if dropped:
                log.warning("connections from %s: %d more '%s' events not logged in the last %.0f s", address,
                            dropped, kind, now - start)
            start, count, dropped = now, 0, 0
        if count < LOG_BURST:
            log.log(level, fmt, *args)
            count += 1
        else:
            dropped += 1
        self._windows[key] = (start, count, dropped)
        if len(self._windows) > 4096:  # many addresses: forget the oldest windows
            for k in list(self._windows)[:1024]:
                del self._windows[k]


def _peer_of(writer):
    try:
        peer = writer.get_extra_info("peername")
    except Exception:
        peer = None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return host, ("[%s]:%s" if ":" in host else "%s:%s") % (host, peer[1])
    return str(peer), str(peer)


def _reason(text):
    """An Error reason: at most 200 bytes of UTF-8."""
    return text.encode("utf-8")[:200].decode("utf-8", "ignore") or "error"


def _abort(writer):
    try:
        writer.transport.abort()
    except Exception:
        pass


class Listener:
    """One TCP listener; on_connection(stream, first_frame) is awaited per authenticated connection."""

    def __init__(self, identity, on_connection, limits=None, max_frame=frames.DEFAULT_MAX_FRAME, name="listener"):
        self.identity = identity
        self.on_connection = on_connection
        self.limits = limits or Limits()
        self.max_frame = max_frame
        self.name = name
        self.server = None
        self._conns = {}  # _Conn -> None, every connection counted against the bounds
        self._pending = OrderedDict()  # _Conn -> None, unauthenticated, oldest first
        self._per_address = {}
        self._closing = False
        self._log = _RateLog()
        self.counts = {"accepted": 0, "authenticated": 0, "refused": 0, "evicted": 0, "handshake_timeouts": 0,
                       "handshake_failures": 0, "first_frame_timeouts": 0, "bad_first_frames": 0}

    async def start(self, host, port):
        self.server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        return self.server

    @property
    def port(self):
        return self.server.sockets[0].getsockname()[1]

    def stats(self):
        """Counters since start, and the connections open now (authenticated or not)."""
        return dict(self.counts, open=len(self._conns), unauthenticated=len(self._pending))

    async def close(self):
        """Stop accepting, drop every connection, wait (briefly) for their tasks."""
        self._closing = True
        if self.server is not None:
            self.server.close()
        tasks = [c.task for c in list(self._conns) if c.task is not None and not c.task.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=3)
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass

    # ---- bounds

    def _oldest_pending(self, address=None):
        for conn in self._pending:
            if address is None or conn.address == address:
                return conn
        return None

    def _evict(self, victim, why):
        victim.evicted = True
        self.counts["evicted"] += 1
        self._log(victim.address, "evicted", logging.WARNING, "%s: dropped unauthenticated connection from %s (%s)",
                  self.name, victim.peer, why)
        self._forget(victim)
        _abort(victim.writer)
        if victim.task is not None and victim.task is not asyncio.current_task():
            victim.task.cancel()

    def _admit(self, conn):
        """Count conn against the bounds (evicting as the docstring says); False: refuse it."""
        lim = self.limits
        if self._per_address.get(conn.address, 0) >= lim.max_per_address:
            victim = self._oldest_pending(conn.address)
            if victim is None:
                return "%d authenticated connections from %s already" % (lim.max_per_address, conn.address)
            self._evict(victim, "%d connections from this address, the most allowed" % lim.max_per_address)
        if len(self._conns) >= lim.max_connections:
            victim = self._oldest_pending()
            if victim is None:
                return "%d authenticated connections already" % lim.max_connections
            self._evict(victim, "%d connections open, the most allowed" % lim.max_connections)
        self._conns[conn] = None
        self._pending[conn] = None
        self._per_address[conn.address] = self._per_address.get(conn.address, 0) + 1
        return None

    def _forget(self, conn):
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn, None)
        self._pending.pop(conn, None)
        n = self._per_address.get(conn.address, 0) - 1
        if n > 0:
            self._per_address[conn.address] = n
        else:
            self._per_address.pop(conn.address, None)

    # ---- one connection

    async def _accept(self, reader, writer):
        address, peer = _peer_of(writer)
        if self._closing:
            _abort(writer)
            return
        conn = _Conn(address, peer, writer, asyncio.current_task())
        refusal = self._admit(conn)
        if refusal is not None:
            self.counts["refused"] += 1
            self._log(address, "refused", logging.WARNING, "%s: refused connection from %s: %s", self.name, peer, refusal)
            _abort(writer)
            return
        self.counts["accepted"] += 1
        stream = None
        try:
            stream = await self._handshake(conn, reader, writer)
            if stream is None:
                return
            first = await self._first_frame(conn, stream)
            if first is None:
                return
            conn.authenticated = True
            self._pending.pop(conn, None)
            self.counts["authenticated"] += 1
            await self.on_connection(stream, first)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("%s: connection from %s failed", self.name, peer)
        finally:
            self._forget(conn)
            if stream is not None:
                stream.close()
            else:
                _abort(writer)

    async def _handshake(self, conn, reader, writer):
        lim = self.limits
        try:
            return await accept(reader, writer, self.identity, timeout=lim.handshake_timeout, max_frame=self.max_frame)
        except StreamError as e:
            if conn.evicted:
                return None
            if e.code == "timeout":
                self.counts["handshake_timeouts"] += 1
                self._log(conn.address, "handshake timeout", logging.INFO, "%s: connection from %s closed: no handshake within %.1f s",
                          self.name, conn.peer, lim.handshake_timeout)
            else:
                self.counts["handshake_failures"] += 1
                self._log(conn.address, "handshake failed", logging.INFO, "%s: connection from %s closed: handshake failed: %s",
                          self.name, conn.peer, e.reason)
            return None

    async def _first_frame(self, conn, stream):
        lim = self.limits
        try:
            # recv_plaintext + decode_plaintext, not recv(): a plaintext that is not a frame
            # leaves the stream open, so the peer can be told why.
            plain = await stream.recv_plaintext(timeout=lim.first_frame_timeout)
            return decode_plaintext(plain, stream.max_frame, stream.peer)
        except StreamClosed:
            if not conn.evicted:
                self._log(conn.address, "closed", logging.INFO, "%s: connection from %s closed before its first frame",
                          self.name, stream.peer)
        except StreamError as e:
            if conn.evicted:
                return None
            if e.code == "timeout":
                self.counts["first_frame_timeouts"] += 1
                self._log(conn.address, "first frame timeout", logging.INFO, "%s: connection from %s closed: no first frame within %.1f s "
                          "of the handshake", self.name, stream.peer, lim.first_frame_timeout)
            else:
                self.counts["bad_first_frames"] += 1
                self._log(conn.address, "bad first frame", logging.INFO, "%s: connection from %s closed: bad first frame: %s",
                          self.name, stream.peer, e.reason)
                try:
                    stream.send_message(m.Message(m.ERROR, {"code": codes.PROTOCOL, "reason": _reason(e.reason)}))
                except StreamError:
                    pass
        return None
