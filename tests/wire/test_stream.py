"""amiko.wire.stream over real sockets on 127.0.0.1: the contract's happy paths and errors."""

import asyncio
import contextlib
import threading

import pytest

from amiko_core import frame, messages
from amiko.wire import stream as st
from amiko.wire.stream import StreamClosed, StreamError
from amiko_testing.waits import run
from wirekit import Server, connected, new_identity

PAY = messages.Message(messages.PAY, id="p1")


def test_connect_accept_both_ways():
    async def scenario():
        a, b = new_identity(), new_identity()
        async with Server(b) as srv:
            client = await st.connect("127.0.0.1", srv.port, a, b.pubkey)
            server = await srv.next()
            assert client.remote_key == b.pubkey and client.local_key == a.pubkey
            assert server.remote_key == a.pubkey and server.local_key == b.pubkey
            assert server.peer.startswith("127.0.0.1:") and client.peer == "127.0.0.1:%d" % srv.port
            client.send_message(PAY)
            client.send(frame.encode(9, b"\x01\x02"))
            assert (await server.recv_message(timeout=5)).fields == PAY.fields
            fr = await server.recv(timeout=5)
            assert (fr.type, fr.body) == (9, b"\x01\x02")
            for i in range(1100):  # across two key rotations each way
                server.send(frame.encode(7, i.to_bytes(2, "big")))
            await server.drain()
            for i in range(1100):
                assert (await client.recv(timeout=5)).body == i.to_bytes(2, "big")
            client.close()
            with pytest.raises(StreamClosed):
                await server.recv(timeout=5)
            assert server.is_closing()
            with pytest.raises(StreamClosed):
                client.send(frame.encode(7, b""))

    run(scenario())


def test_wrong_key_is_auth_error_and_responder_refuses():
    async def scenario():
        a, b, other = new_identity(), new_identity(), new_identity()
        async with Server(b) as srv:
            with pytest.raises(StreamError) as e:
                await st.connect("127.0.0.1", srv.port, a, other.pubkey)
            assert e.value.code == "auth"
            assert other.pubkey.hex() in e.value.reason
            refused = await srv.next()
            assert isinstance(refused, StreamError) and refused.code == "auth"
            assert "act one MAC" in refused.reason

    run(scenario())


def test_recv_timeout_keeps_the_stream():
    async def scenario():
        async with connected() as (client, server):
            with pytest.raises(StreamError) as e:
                await server.recv(timeout=0.05)
            assert e.value.code == "timeout" and not server.is_closing()
            client.send_message(PAY)
            assert (await server.recv_message(timeout=5)).type == messages.PAY
            client.abort()
            server.abort()

    run(scenario())


def test_plaintext_that_is_not_a_frame_is_refused():
    async def scenario():
        async with connected() as (client, server):
            client.send_plaintext(frame.encode(1, b"") + b"x")  # a frame and one byte more
            with pytest.raises(StreamError) as e:
                await server.recv(timeout=5)
            assert e.value.code == "frame" and server.is_closing()
            with pytest.raises(StreamClosed):
                await client.recv(timeout=5)

    run(scenario())


def test_send_refuses_over_max_frame():
    async def scenario():
        async with connected(server=dict(max_frame=100), client=dict(max_frame=100)) as (client, server):
            with pytest.raises(StreamError) as e:
                client.send(b"\0" * 101)
            assert e.value.code == "oversize"
            client.close()
            server.close()

    run(scenario())


def test_connect_refused_is_stream_closed():
    async def scenario():
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        with pytest.raises(StreamClosed) as e:
            await st.connect("127.0.0.1", port, new_identity(), new_identity().pubkey)
        assert "127.0.0.1:%d" % port in e.value.reason

    run(scenario())


@contextlib.contextmanager
def server_thread(identity, on_accept):
    """A Server for identity in a thread of its own (for the blocking client): yields its port;
    on_accept(result) is awaited with the first accepted Stream (or StreamError)."""
    ready = threading.Event()
    box = {}

    async def serve():
        async with Server(identity) as srv:
            box["port"] = srv.port
            ready.set()
            await on_accept(await srv.next())

    t = threading.Thread(target=lambda: asyncio.run(serve()))
    t.start()
    try:
        assert ready.wait(10)
        yield box["port"]
    finally:
        t.join(20)


def test_connect_blocking_against_accept():
    a, b = new_identity(), new_identity()
    seen = {}

    async def echo_once(server):
        seen["remote"] = server.remote_key
        server.send_message(await server.recv_message(timeout=10))
        server.close()
        await asyncio.sleep(0.2)

    with server_thread(b, echo_once) as port:
        c = st.connect_blocking("127.0.0.1", port, a, b.pubkey, timeout=10)
        assert c.remote_key == b.pubkey
        c.send_message(PAY)
        assert c.recv_message(timeout=10).fields == PAY.fields
        with pytest.raises(StreamClosed):
            c.recv(timeout=10)
        c.close()
    assert seen["remote"] == a.pubkey


def test_connect_blocking_wrong_key():
    a, b = new_identity(), new_identity()
    seen = {}

    async def keep(result):
        seen["result"] = result

    with server_thread(b, keep) as port:
        with pytest.raises(StreamError) as e:
            st.connect_blocking("127.0.0.1", port, a, new_identity().pubkey, timeout=10)
        assert e.value.code == "auth"
    assert seen["result"].code == "auth"


def test_recv_timeout_zero_returns_what_is_buffered_only():
    async def scenario():
        async with connected() as (client, server):
            for i in range(5):
                client.send(frame.encode(21, bytes([i])))
            assert (await server.recv(timeout=5)).body == b"\x00"  # waits for the first
            await asyncio.sleep(0.1)
            got = []
            while True:
                try:
                    got.append((await server.recv(timeout=0)).body)
                except StreamError as e:
                    assert e.code == "timeout"
                    break
            assert got == [b"\x01", b"\x02", b"\x03", b"\x04"]
            assert not server.is_closing()
            client.send(frame.encode(21, b"\x05"))
            assert (await server.recv(timeout=5)).body == b"\x05"
            client.close()
            server.close()

    run(scenario())


def test_close_flushes_what_was_sent():
    async def scenario():
        async with connected() as (client, server):
            for i in range(2000):
                client.send(frame.encode(21, i.to_bytes(2, "big") * 50))
            client.close()  # no drain: close itself flushes
            for i in range(2000):
                assert (await server.recv(timeout=5)).body == i.to_bytes(2, "big") * 50
            with pytest.raises(StreamClosed):
                await server.recv(timeout=5)

    run(scenario())


def test_a_peer_that_does_not_read_shows_in_buffered_and_close_aborts_it():
    async def scenario():
        a, b = new_identity(), new_identity()
        async with Server(b) as srv:
            client = await st.connect("127.0.0.1", srv.port, a, b.pubkey)
            server = await srv.next()  # never reads
            big = frame.encode(21, b"x" * 4000)
            for _ in range(3000):  # ~12 MB: more than the kernel buffers hold
                client.send(big)
            await asyncio.sleep(0.2)
            assert client.buffered() > 1_000_000
            t0 = asyncio.get_running_loop().time()
            client.close()
            await asyncio.wait_for(client.wait_closed(), st.CLOSE_GRACE + 3)
            assert asyncio.get_running_loop().time() - t0 >= st.CLOSE_GRACE - 0.1
            assert client.is_closing()
            server.abort()

    run(scenario())
