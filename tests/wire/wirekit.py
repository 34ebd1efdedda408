"""Helpers for the transport tests (real sockets on 127.0.0.1); imported as wirekit (pytest puts this directory on the path)."""

import asyncio
import contextlib

from amiko.node.identity import Identity
from amiko.wire import noise, stream as st


class Loopback:
    """A listener on a free 127.0.0.1 port (self.port) while in `async with`; subclasses
    handle each connection in _on_connection(reader, writer)."""

    server = port = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


class Server(Loopback):
    """A real listener whose accepted connections run accept(); results land in a queue."""

    def __init__(self, identity, timeout=st.HANDSHAKE_TIMEOUT, max_frame=st.DEFAULT_MAX_FRAME):
        self.identity = identity
        self.timeout = timeout
        self.max_frame = max_frame
        self.results = asyncio.Queue()  # Stream or StreamError, one per connection

    async def _on_connection(self, reader, writer):
        try:
            s = await st.accept(reader, writer, self.identity, timeout=self.timeout, max_frame=self.max_frame)
        except st.StreamError as e:
            await self.results.put(e)
            return
        await self.results.put(s)

    async def __aexit__(self, *exc):
        self.server.close()

    async def next(self, timeout=10):
        async with asyncio.timeout(timeout):
            return await self.results.get()


def new_identity():
    return Identity.generate()


@contextlib.asynccontextmanager
async def connected(server=None, client=None):
    """(client, server): the two ends of one real BOLT 8 stream on 127.0.0.1 between fresh
    identities; server and client are keyword arguments of Server and of stream.connect."""
    a, b = new_identity(), new_identity()
    async with Server(b, **(server or {})) as srv:
        yield await st.connect("127.0.0.1", srv.port, a, b.pubkey, **(client or {})), await srv.next()


async def _pump(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        writer.close()


class TamperProxy(Loopback):
    """A man in the middle on 127.0.0.1: passes the handshake through untouched, then hands
    every client->server BOLT 8 message (record_size bytes each, the test sends messages of
    one size) to tamper(records, record) -> bytes to forward now ("records" are the ones
    seen before). tamper returning None closes both sides, as a cut cable does."""

    def __init__(self, target_port, record_size, tamper):
        self.target_port = target_port
        self.record_size = record_size
        self.tamper = tamper
        self._tasks = set()

    async def _on_connection(self, creader, cwriter):
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        try:
            swriter.write(await creader.readexactly(noise.ACT_ONE_SIZE))
            cwriter.write(await sreader.readexactly(noise.ACT_TWO_SIZE))
            self._tasks.add(asyncio.create_task(_pump(sreader, cwriter)))  # server -> client as is
            swriter.write(await creader.readexactly(noise.ACT_THREE_SIZE))
            seen = []
            while True:
                record = await creader.readexactly(self.record_size)
                out = self.tamper(seen, record)
                seen.append(record)
                if out is None:
                    break
                swriter.write(out)
                await swriter.drain()
        except (asyncio.IncompleteReadError, OSError, ConnectionError):
            pass
        finally:
            swriter.close()
            cwriter.close()

    async def __aexit__(self, *exc):
        self.server.close()
        for t in self._tasks:
            t.cancel()


async def raw_initiator(port, responder_key, identity=None):
    """An attacker that speaks BOLT 8 itself on a raw socket: (reader, writer, Encrypter, Decrypter)."""
    ini = noise.Initiator(identity or Identity.generate(), responder_key)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ini.act_one())
    writer.write(ini.read_act_two(await reader.readexactly(noise.ACT_TWO_SIZE)))
    enc, dec = ini.split()
    return reader, writer, enc, dec


async def sees_closed(reader, timeout=5):
    """True if the other end closed (EOF or reset) within timeout, with no bytes sent first."""
    try:
        async with asyncio.timeout(timeout):
            data = await reader.read(1)
    except (ConnectionError, OSError):
        return True
    return data == b""
