"""Helpers for the transport tests (real sockets on 127.0.0.1); imported as wire.wirekit."""

import asyncio

from amiko.node.identity import Identity
from amiko.wire import stream as st


class Server:
    """A real listener whose accepted connections run accept(); results land in a queue."""

    def __init__(self, identity, timeout=st.HANDSHAKE_TIMEOUT, max_frame=st.DEFAULT_MAX_FRAME):
        self.identity = identity
        self.timeout = timeout
        self.max_frame = max_frame
        self.results = asyncio.Queue()  # Stream or StreamError, one per connection
        self.server = None
        self.port = None

    async def _on_connection(self, reader, writer):
        try:
            s = await st.accept(reader, writer, self.identity, timeout=self.timeout, max_frame=self.max_frame)
        except st.StreamError as e:
            await self.results.put(e)
            return
        await self.results.put(s)

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def next(self, timeout=10):
        async with asyncio.timeout(timeout):
            return await self.results.get()


def new_identity():
    return Identity.generate()
