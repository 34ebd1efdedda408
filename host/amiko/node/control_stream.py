"""The control API over BOLT 8: a granted key (a shop's bridge) on the node's TCP port.

A connection whose first frame is a Control frame (type CONTROL) carries the JSON-RPC 2.0 of
amiko.node.control, each JSON object in one or more Control frames: body = one flag byte
(MORE: more of this object follows; LAST: its last part) + up to CHUNK bytes of its UTF-8
JSON, at most MAX_MESSAGE bytes per object. The BOLT 8 handshake authenticated the initiator's
static key; amiko.node.grants says which methods it may call (an ungranted key's first request
is answered with a `forbidden` error, then the connection is closed). Notifications of its
watches come on the same connection.

serve(grants, methods, stream, first) is the node's side (amiko.node.daemon dispatches Control to it);
ControlChannel is a client's side (amiko.bridge.nodeclient).
"""

import json
import logging

from amiko_core import frame as frames

from amiko.node import control as controls
from amiko.node.control import ControlError
from amiko.node.grants import methods_of
from amiko.wire.stream import StreamClosed, StreamError

log = logging.getLogger("amiko.control")

CONTROL = 60  # frame type (amiko_core frame types in use: 1-9, 20-29, 40-49, 50-51)
MORE = 0
LAST = 1
CHUNK = 4000  # < amiko_core.frame.DEFAULT_MAX_FRAME - frame overhead - flag byte
MAX_MESSAGE = controls.MAX_RESPONSE


def frames_of(obj):
    """The Control frames (bytes) of one JSON-RPC object."""
    data = controls.encode(obj)
    parts = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    return [frames.encode(CONTROL, bytes([LAST if i == len(parts) - 1 else MORE]) + part)
            for i, part in enumerate(parts)]


class Assembler:
    """Control frames in, whole JSON texts out; StreamError for anything else."""

    def __init__(self, limit):
        self.limit = limit
        self._parts = []
        self._size = 0

    def feed(self, fr):
        if fr.type != CONTROL or not fr.body or fr.body[0] not in (MORE, LAST):
            raise StreamError("expected a Control frame, got type %d" % fr.type, "frame")
        self._size += len(fr.body) - 1
        if self._size > self.limit:
            raise StreamError("control message longer than %d bytes" % self.limit, "oversize")
        self._parts.append(bytes(fr.body[1:]))
        if fr.body[0] == MORE:
            return None
        data, self._parts, self._size = b"".join(self._parts), [], 0
        return data


def _send(stream, obj):
    for f in frames_of(obj):
        stream.send(f)


def _request_id(raw):
    try:
        obj = json.loads(raw)
        return obj.get("id") if isinstance(obj, dict) and type(obj.get("id")) in (int, str) else None
    except ValueError:
        return None


async def serve(grants, methods, stream, first, check=False):
    """One control connection from a BOLT 8 peer; returns when it closes. grants: the node's
    amiko.node.grants.Grants; methods: the control methods by name; check: see
    amiko.node.control.Connection."""
    key = bytes(stream.remote_key)
    granted = grants.lookup(key)
    assembler = Assembler(controls.MAX_REQUEST)
    try:
        raw = assembler.feed(first)
        while raw is None:
            raw = assembler.feed(await stream.recv())
    except StreamError as e:
        log.info("control connection from %s (key %s): %s", stream.peer, key.hex(), e.reason)
        return
    if granted is None:
        log.warning("control connection from %s refused: key %s has no grant", stream.peer, key.hex())
        _send(stream, controls.error_response(_request_id(raw), ControlError(
            "forbidden", "this key (%s) is not granted the node's control API: on the node run `amiko grant %s "
            "--permissions request,cancel,watch`" % (key.hex(), key.hex()))))
        await _drain(stream)
        return
    conn = controls.Connection(send=lambda obj: _send(stream, obj), permissions=methods_of(granted), key=key,
                               check=check)
    live = grants.live.setdefault(key, set())
    live.add(stream)
    log.info("control connection from %s, key %s (%s)", stream.peer, key.hex(), ",".join(granted))
    try:
        while True:
            if raw is not None:
                response = await controls.dispatch(methods, raw, conn)
                if response is not None:
                    _send(stream, response)
                await _drain(stream)
            raw = assembler.feed(await stream.recv())
    except StreamClosed:
        pass
    except StreamError as e:
        log.info("control connection from %s (key %s) closed: %s", stream.peer, key.hex(), e.reason)
    finally:
        live.discard(stream)
        if not live and grants.live.get(key) is live:
            grants.live.pop(key, None)
        await conn._close()


async def _drain(stream):
    try:
        await stream.drain()
    except StreamError:
        pass


class ControlChannel:
    """A client's side: send(obj) and `await recv()` -> the JSON text of the next object."""

    def __init__(self, stream):
        self.stream = stream
        self._assembler = Assembler(MAX_MESSAGE)

    def send(self, obj):
        _send(self.stream, obj)

    async def drain(self):
        await self.stream.drain()

    async def recv(self):
        while True:
            data = self._assembler.feed(await self.stream.recv())
            if data is not None:
                return data

    def close(self):
        self.stream.close()
