"""amiko.wire.listener over real sockets on 127.0.0.1: bounds, eviction order, deadlines."""

import asyncio

import pytest

from amiko_core import frame, messages
from amiko.wire import noise
from amiko.wire import stream as st
from amiko.wire.listener import Limits, Listener
from wirekit import new_identity

from amiko_testing.waits import run, wait_until

pytestmark = pytest.mark.timeout(60)

PAY = messages.Message(messages.PAY, id="p1")




class Echo:
    """A listener whose handler keeps every authenticated stream open and echoes frames."""

    def __init__(self, limits):
        self.identity = new_identity()
        self.served = []
        self.listener = Listener(self.identity, self.handle, limits, name="test")

    async def handle(self, stream, first):
        self.served.append(first.type)
        stream.send(frame.encode(first.type, first.body))
        while True:
            try:
                fr = await stream.recv()
            except st.StreamError:
                return
            stream.send(frame.encode(fr.type, fr.body))

    async def __aenter__(self):
        await self.listener.start("127.0.0.1", 0)
        self.port = self.listener.port
        return self

    async def __aexit__(self, *exc):
        await self.listener.close()

    async def client(self):
        s = await st.connect("127.0.0.1", self.port, new_identity(), self.identity.pubkey, timeout=5)
        s.send_message(PAY)
        assert (await s.recv_message(timeout=5)).type == messages.PAY
        return s


async def closed(reader, timeout=5):
    async with asyncio.timeout(timeout):
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
    return True


def test_stalled_connections_evict_each_other_never_an_authenticated_one():
    async def scenario():
        async with Echo(Limits(handshake_timeout=30, first_frame_timeout=30, max_connections=20,
                               max_per_address=10)) as srv:
            good = [await srv.client() for _ in range(3)]
            stalled = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(50)]
            await wait_until(lambda: srv.listener.counts["accepted"] >= 53, "accepted")
            # 10 per address: 3 authenticated + 7 stalled; the 43 others were evicted, oldest first
            assert srv.listener.counts["evicted"] == 43
            stats = srv.listener.stats()
            assert stats["open"] == 10 and stats["unauthenticated"] == 7 and stats["refused"] == 0
            for reader, _ in stalled[:43]:
                assert await closed(reader, 2)
            for s in good:  # the authenticated ones still work
                s.send_message(PAY)
                assert (await s.recv_message(timeout=5)).type == messages.PAY
            # a new peer still gets in (evicting a stalled connection)
            late = await srv.client()
            assert srv.listener.counts["evicted"] == 44
            for s in good + [late]:
                s.close()
            for _, w in stalled:
                w.close()

    run(scenario())


def test_only_authenticated_connections_left_means_refusal():
    async def scenario():
        async with Echo(Limits(max_connections=4, max_per_address=100)) as srv:
            good = [await srv.client() for _ in range(4)]
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            assert await closed(reader)
            await wait_until(lambda: srv.listener.counts["refused"] == 1, "refused")
            for s in good:
                s.send_message(PAY)
                assert (await s.recv_message(timeout=5)).type == messages.PAY
            good[0].close()
            await wait_until(lambda: srv.listener.stats()["open"] == 3, "one gone")
            (await srv.client()).close()  # room again
            for s in good[1:]:
                s.close()

    run(scenario())


@pytest.mark.parametrize("stall", ["nothing", "half act one", "act one", "handshake"])
def test_deadlines(stall):
    async def scenario():
        async with Echo(Limits(handshake_timeout=0.3, first_frame_timeout=0.3)) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            ini = noise.Initiator(new_identity(), srv.identity.pubkey)
            if stall == "half act one":
                writer.write(ini.act_one()[:20])
            elif stall in ("act one", "handshake"):
                writer.write(ini.act_one())
                act_three = ini.read_act_two(await reader.readexactly(noise.ACT_TWO_SIZE))
                if stall == "handshake":
                    writer.write(act_three)
            t0 = asyncio.get_running_loop().time()
            assert await closed(reader)
            assert asyncio.get_running_loop().time() - t0 >= 0.25
            key = "first_frame_timeouts" if stall == "handshake" else "handshake_timeouts"
            await wait_until(lambda: srv.listener.counts[key] == 1, key)
            assert srv.listener.stats()["open"] == 0 and srv.served == []

    run(scenario())


def test_bad_first_frame_is_answered_with_an_error():
    async def scenario():
        async with Echo(Limits()) as srv:
            s = await st.connect("127.0.0.1", srv.port, new_identity(), srv.identity.pubkey, timeout=5)
            s.send_plaintext(b"not a frame at all")
            err = await s.recv_message(timeout=5)
            assert err.type == messages.ERROR and err.code == 1 and "not one valid frame" in err.reason
            with pytest.raises(st.StreamClosed):
                await s.recv(timeout=5)
            assert srv.listener.counts["bad_first_frames"] == 1 and srv.served == []

    run(scenario())


def test_limits_are_checked():
    for bad in ({"handshake_timeout": 0}, {"first_frame_timeout": -1}, {"max_connections": 0},
                {"max_per_address": 1.5}, {"handshake_timeout": True}):
        with pytest.raises(ValueError):
            Limits(**bad)
