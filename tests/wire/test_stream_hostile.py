"""Hostile peers and men in the middle against amiko.wire.stream, with real sockets.

Every case: a clear StreamError (code and one-line reason), the attacked connection is
closed, and the other end sees it closed. The man in the middle (wirekit.TamperProxy) lets
the genuine handshake through and then replays, reorders, flips bits or cuts the
ciphertext; the hostile peer (wirekit.raw_initiator) speaks BOLT 8 itself to send what a
genuine stream never would (an oversize length, stalls, garbage).
"""

import asyncio
import os

import pytest

from amiko_core import frame
from amiko.wire import noise, stream as st
from amiko.wire.stream import StreamClosed, StreamError
from amiko_testing.waits import run
from wirekit import Server, TamperProxy, connected, new_identity, raw_initiator, sees_closed

BODY = b"hello"
FRAME = frame.encode(21, BODY)
RECORD = noise.HEADER_SIZE + len(FRAME) + noise.MAC_SIZE  # one message on the wire


async def through_proxy(tamper, frames=3):
    """Client -> proxy(tamper) -> server; the client sends `frames` copies of FRAME.
    Returns (what the server's recv() gave: list of Frames then the StreamError, client stream)."""
    a, b = new_identity(), new_identity()
    async with Server(b) as srv, TamperProxy(srv.port, RECORD, tamper) as proxy:
        client = await st.connect("127.0.0.1", proxy.port, a, b.pubkey, timeout=5)
        server = await srv.next()
        assert isinstance(server, st.Stream), server
        for _ in range(frames):
            client.send(FRAME)
        got = []
        while True:
            try:
                got.append(await server.recv(timeout=5))
            except StreamError as e:
                got.append(e)
                break
        assert server.is_closing()
        with pytest.raises(StreamClosed):  # the other end sees the connection closed
            await client.recv(timeout=5)
        return got


def test_untampered_proxy_delivers():
    got = run(through_proxy(lambda seen, rec: rec if len(seen) < 2 else None))
    assert got[:2] == [frame.decode_one(FRAME)] * 2
    assert isinstance(got[2], StreamClosed)


def test_replayed_ciphertext_is_refused():
    got = run(through_proxy(lambda seen, rec: rec if not seen else seen[0]))
    assert got[0] == frame.decode_one(FRAME)
    err = got[1]
    assert type(err) is StreamError and err.code == "mac", err
    assert "MAC does not verify" in err.reason


def test_reordered_ciphertext_is_refused():
    got = run(through_proxy(lambda seen, rec: b"" if not seen else (rec + seen[0] if len(seen) == 1 else rec)))
    err = got[0]
    assert type(err) is StreamError and err.code == "mac", err


def test_a_dropped_message_is_refused():
    got = run(through_proxy(lambda seen, rec: b"" if len(seen) == 1 else rec))
    assert got[0] == frame.decode_one(FRAME)
    assert got[1].code == "mac"


@pytest.mark.parametrize("pos", range(RECORD))
def test_a_flipped_bit_anywhere_in_a_message_is_refused(pos):
    # positions 0-1: encrypted length, 2-17: its MAC, 18..: body, last 16: the body's MAC
    def flip(seen, rec):
        if seen:
            return rec
        rec = bytearray(rec)
        rec[pos] ^= 1 << (pos % 8)
        return bytes(rec)

    got = run(through_proxy(flip))
    err = got[0]
    assert type(err) is StreamError and err.code == "mac", err
    assert ("length header" in err.reason) == (pos < noise.HEADER_SIZE)


@pytest.mark.parametrize("keep", [1, 17, 18, 19, RECORD - 1])
def test_truncated_message_peer_closes_mid_frame(keep):
    async def scenario():
        a, b = new_identity(), new_identity()
        async with Server(b) as srv:
            reader, writer, enc, _dec = await raw_initiator(srv.port, b.pubkey, a)
            server = await srv.next()
            writer.write(enc.encrypt(FRAME)[:keep])
            await writer.drain()
            writer.close()
            with pytest.raises(StreamClosed) as e:
                await server.recv(timeout=5)
            assert "in the middle of a message" in e.value.reason
            assert server.is_closing()

    run(scenario())


def test_wrong_static_key_fails_auth_on_both_ends():
    async def scenario():
        a, b, impostor = new_identity(), new_identity(), new_identity()
        async with Server(impostor) as srv:  # a listener that does not hold b's key
            with pytest.raises(StreamError) as e:
                await st.connect("127.0.0.1", srv.port, a, b.pubkey, timeout=5)
            assert e.value.code == "auth" and b.pubkey.hex() in e.value.reason
            refused = await srv.next()
            assert refused.code == "auth" and "act one MAC" in refused.reason

    run(scenario())


def test_stalled_before_act_one():
    async def scenario():
        async with Server(new_identity(), timeout=0.3) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            err = await srv.next()
            assert err.code == "timeout" and "no act one" in err.reason
            assert await sees_closed(reader)
            writer.close()

    run(scenario())


def test_stalled_in_the_middle_of_act_one():
    async def scenario():
        b = new_identity()
        async with Server(b, timeout=0.3) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(noise.Initiator(new_identity(), b.pubkey).act_one()[:20])
            err = await srv.next()
            assert err.code == "timeout" and "no act one" in err.reason
            assert await sees_closed(reader)
            writer.close()

    run(scenario())


def test_stalled_before_act_two():
    async def scenario():
        seen = asyncio.Queue()

        async def silent(reader, writer):  # reads act one, never answers
            data = await reader.readexactly(noise.ACT_ONE_SIZE)
            await seen.put(await sees_closed(reader, timeout=5) and len(data))
            writer.close()

        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            with pytest.raises(StreamError) as e:
                await st.connect("127.0.0.1", port, new_identity(), new_identity().pubkey, timeout=0.3)
            assert e.value.code == "timeout" and "no act two" in e.value.reason
            assert await seen.get() == noise.ACT_ONE_SIZE  # and the silent side saw us close
        finally:
            srv.close()

    run(scenario())


def test_stalled_before_act_three():
    async def scenario():
        b = new_identity()
        async with Server(b, timeout=0.3) as srv:
            ini = noise.Initiator(new_identity(), b.pubkey)
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(ini.act_one())
            ini.read_act_two(await reader.readexactly(noise.ACT_TWO_SIZE))  # genuine act two
            err = await srv.next()  # ... and no act three
            assert err.code == "timeout" and "no act three" in err.reason
            assert await sees_closed(reader)
            writer.close()

    run(scenario())


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".ljust(noise.ACT_ONE_SIZE, b"x"),
        bytes(noise.ACT_ONE_SIZE),
        b"\x00\x02" + os.urandom(noise.ACT_ONE_SIZE - 2),
        b"\x00\x04" + os.urandom(noise.ACT_ONE_SIZE - 2),
        os.urandom(noise.ACT_ONE_SIZE),
        frame.encode(16, b"\xa0").ljust(noise.ACT_ONE_SIZE, b"\0"),  # a plain amiko frame (old peers)
    ],
    ids=["http", "zeros", "random-02", "random-04", "random", "plain-frame"],
)
def test_garbage_instead_of_act_one(garbage):
    async def scenario():
        async with Server(new_identity()) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(garbage)
            err = await srv.next()
            assert type(err) is StreamError and err.code == "auth", err
            assert "\n" not in err.reason
            assert await sees_closed(reader)  # closed without a single byte of act two
            writer.close()

    run(scenario())


@pytest.mark.parametrize("announced", [4097, 65535])
def test_oversize_length_is_refused_from_the_header(announced):
    async def scenario():
        b = new_identity()
        async with Server(b) as srv:
            reader, writer, enc, _dec = await raw_initiator(srv.port, b.pubkey)
            server = await srv.next()
            writer.write(enc.encrypt(b"\0" * announced)[: noise.HEADER_SIZE])  # the header only
            with pytest.raises(StreamError) as e:
                await server.recv(timeout=5)  # refused at once, not after a body
            assert e.value.code == "oversize" and "%d-byte" % announced in e.value.reason
            assert await sees_closed(reader)
            writer.close()

    run(scenario())


def test_a_valid_message_that_is_not_a_frame():
    async def scenario():
        b = new_identity()
        async with Server(b) as srv:
            reader, writer, enc, _dec = await raw_initiator(srv.port, b.pubkey)
            server = await srv.next()
            bad = bytearray(FRAME)
            bad[-1] ^= 1  # CRC-32 wrong
            writer.write(enc.encrypt(bytes(bad)))
            with pytest.raises(StreamError) as e:
                await server.recv(timeout=5)
            assert e.value.code == "frame" and "CRC-32" in e.value.reason
            assert await sees_closed(reader)
            writer.close()

    run(scenario())


def test_errors_stay_raised_after_the_stream_failed():
    async def scenario():
        b = new_identity()
        async with Server(b) as srv:
            reader, writer, enc, _dec = await raw_initiator(srv.port, b.pubkey)
            server = await srv.next()
            writer.write(os.urandom(RECORD))
            with pytest.raises(StreamError) as first:
                await server.recv(timeout=5)
            with pytest.raises(StreamError) as again:
                await server.recv(timeout=5)
            assert again.value is first.value
            with pytest.raises(StreamClosed):
                server.send(FRAME)
            writer.close()

    run(scenario())


def test_stalled_in_the_middle_of_a_message_times_out_and_resumes():
    async def scenario():
        b = new_identity()
        async with Server(b) as srv:
            reader, writer, enc, _dec = await raw_initiator(srv.port, b.pubkey)
            server = await srv.next()
            wire = enc.encrypt(FRAME)
            writer.write(wire[:25])  # the header and a bit of the body, then silence
            with pytest.raises(StreamError) as e:
                await server.recv(timeout=0.2)
            assert e.value.code == "timeout" and not server.is_closing()
            writer.write(wire[25:])  # the idle deadline is the caller's; the stream resumes
            assert await server.recv(timeout=5) == frame.decode_one(FRAME)
            server.close()
            assert await sees_closed(reader)
            writer.close()

    run(scenario())


def test_recv_batch_delivers_the_good_frames_before_the_bad_one():
    async def scenario():
        b = new_identity()
        async with Server(b) as srv:
            reader, writer, enc, _dec = await raw_initiator(srv.port, b.pubkey)
            server = await srv.next()
            good = [enc.encrypt(frame.encode(21, bytes([i]))) for i in range(3)]
            bad = bytearray(enc.encrypt(FRAME))
            bad[20] ^= 0x80
            writer.write(b"".join(good) + bytes(bad))
            await writer.drain()
            await asyncio.sleep(0.2)  # let everything arrive: one read holds all four
            batch = await server.recv_batch(timeout=5)
            assert [fr.body for fr in batch] == [b"\x00", b"\x01", b"\x02"]
            with pytest.raises(StreamError) as e:
                await server.recv(timeout=5)
            assert e.value.code == "mac"
            assert await sees_closed(reader)
            writer.close()

    run(scenario())


def test_recv_batch_limit():
    async def scenario():
        async with connected() as (client, server):
            for i in range(10):
                client.send(frame.encode(21, bytes([i])))
            await asyncio.sleep(0.2)
            got = []
            while len(got) < 10:
                batch = await server.recv_batch(timeout=5, limit=4)
                assert 1 <= len(batch) <= 4
                got += batch
            assert [fr.body for fr in got] == [bytes([i]) for i in range(10)]
            client.close()
            server.close()

    run(scenario())
