"""Hostile peers against a LinkManager listening on 127.0.0.1: raw sockets speaking bytes,
bad frames and bad link protocol, before and after a valid handshake."""

import asyncio
import os

import pytest

from amiko_core import cbor
from amiko_core import frame as frames
from amiko_core import messages as m

from amiko.node import channels, links, outbox
from amiko.node.identity import Identity
from amiko.node.store import Store

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 0.4  # the manager's handshake time-out in these tests


def run(coro, timeout=45):
    async def main():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


async def wait_until(cond, what, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        await asyncio.sleep(0.005)


class Node:
    """A LinkManager with links "from-raw" and "from-good"; its handler records Deposits."""

    def __init__(self, tmp_path):
        self.identity = Identity.generate()
        self.store = Store(str(tmp_path / "node.db"), synchronous="OFF")
        with self.store.transaction() as db:
            db.execute("CREATE TABLE rx (link TEXT, channel INTEGER)")
            channels.add_link(db, "from-raw")
            channels.add_link(db, "from-good")
        self.mgr = links.LinkManager(self.store, self.identity, self.handle, backoff=(0.02, 0.1),
                                     handshake_timeout=TIMEOUT)
        self.port = None

    def handle(self, db, link, msg):
        if msg.type == m.DEPOSIT:
            db.execute("INSERT INTO rx VALUES (?, ?)", (link, msg.channel))

    def received(self, link="from-raw"):
        with self.store.read() as db:
            return [r[0] for r in db.execute("SELECT channel FROM rx WHERE link = ? ORDER BY rowid", (link,))]

    def last_in(self, link="from-raw"):
        with self.store.read() as db:
            return outbox.last_in(db, link)

    async def start(self):
        server = await self.mgr.listen("127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def close(self):
        await self.mgr.close()
        self.store.close()

    async def still_serves(self, tmp_path):
        """A well-behaved peer still links up and delivers: the manager is unaffected."""
        store = Store(str(tmp_path / ("good-%s.db" % os.urandom(4).hex())), synchronous="OFF")
        good = links.LinkManager(store, Identity.generate(), lambda db, link, msg: None, backoff=(0.02, 0.1))
        try:
            before = len(self.received("from-good"))
            with store.transaction() as db:
                outbox.enqueue(db, "to-node", m.Message(m.DEPOSIT, {"channel": 424242, "amount": 5}))
            good.connect("to-node", "amikolink://127.0.0.1:%d/from-good?key=%s" % (self.port, self.identity.pubkey.hex()))
            await wait_until(lambda: len(self.received("from-good")) > before, "a good peer's message")
        finally:
            await good.close()
            store.close()


async def raw(node):
    return await asyncio.open_connection("127.0.0.1", node.port)


async def closed_with(reader, timeout=3.0):
    """Read until the manager closes the connection; return the messages it sent first."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError("connection not closed within %.1f s (got %r)" % (timeout, data[:80])) from None
    dec = frames.FrameDecoder()
    return [m.from_frame(f) for f in dec.feed(data)]


def frame_of(mtype, body, version=frames.PROTOCOL_VERSION):
    return frames.encode(mtype, body, version)


def hello(ident, link="from-raw", **extra):
    fields = {"link": link, "key": ident.pubkey, "nonce": os.urandom(32)}
    fields.update(extra)
    return m.Message(m.CONNECT_LINK, fields)


def link_msg(seq, msg):
    return m.to_frame(m.Message(links.LINK_MSG, {"seq": seq, "msg_type": msg.type, "body": m.encode(msg)}))


def raw_link_msg(seq, msg_type, body):
    return m.to_frame(m.Message(links.LINK_MSG, {"seq": seq, "msg_type": msg_type, "body": body}))


def deposit(i):
    return m.Message(m.DEPOSIT, {"channel": i, "amount": 1})


async def authenticated(node, ident=None):
    """A raw peer that passed the handshake for link from-raw: (reader, writer, frame reader)."""
    ident = ident or Identity.generate()
    reader, writer = await raw(node)
    fr = await links.initiator_handshake(reader, writer, ident, "from-raw", node.identity.pubkey)
    await wait_until(lambda: node.mgr.is_connected("from-raw"), "raw peer linked")
    return reader, writer, fr


async def next_msg(fr, timeout=3.0):
    async with asyncio.timeout(timeout):
        return m.from_frame(await fr.next())


async def closed_after(fr, reader, timeout=3.0):
    """Messages already buffered in fr, then whatever arrives until the close."""
    out = [m.from_frame(f) for f in fr.pending]
    fr.pending.clear()
    return out + await closed_with(reader, timeout)


def hostile(test):
    """Run test(node, tmp_path) against a fresh listening node, then check it still serves."""

    def wrapper(tmp_path):
        async def main():
            node = Node(tmp_path)
            await node.start()
            try:
                await test(node, tmp_path)
                await node.still_serves(tmp_path)
            finally:
                await node.close()

        run(main())

    wrapper.__name__ = test.__name__
    return wrapper


# ---- before the handshake


@hostile
async def test_garbage_bytes(node, tmp_path):
    reader, writer = await raw(node)
    writer.write(bytes(range(256)) * 8)
    errors = await closed_with(reader)
    assert errors and errors[0].type == m.ERROR and errors[0].code == links.ERR_PROTOCOL
    assert "bad bytes" in errors[0].reason
    assert node.mgr.refused == 1


@hostile
async def test_oversized_frame(node, tmp_path):
    reader, writer = await raw(node)
    header = bytearray(b"\xa5\x4b\x01\x10\xf0\x00\x00")
    header[6] = frames.crc8(header, 0, 6)  # a well-formed header announcing a 61 KB body
    writer.write(bytes(header) + bytes(100))
    errors = await closed_with(reader)
    assert "over max frame" in errors[0].reason


@hostile
async def test_bad_crc(node, tmp_path):
    data = bytearray(m.to_frame(hello(Identity.generate())))
    data[-1] ^= 1
    reader, writer = await raw(node)
    writer.write(bytes(data))
    errors = await closed_with(reader)
    assert "CRC-32" in errors[0].reason
    assert not node.mgr.is_connected("from-raw")


@hostile
async def test_unknown_message_type_first(node, tmp_path):
    reader, writer = await raw(node)
    writer.write(frame_of(200, b"\xa0"))
    errors = await closed_with(reader)
    assert errors[0].code == links.ERR_PROTOCOL and errors[0].ref_type == 200
    assert "first message must be ConnectLink" in errors[0].reason


@hostile
async def test_unsupported_version(node, tmp_path):
    reader, writer = await raw(node)
    writer.write(frame_of(m.CONNECT_LINK, m.encode(hello(Identity.generate())), version=9))
    errors = await closed_with(reader)
    assert "unsupported protocol version" in errors[0].reason


@hostile
async def test_link_msg_before_handshake(node, tmp_path):
    reader, writer = await raw(node)
    writer.write(link_msg(1, deposit(1)))
    errors = await closed_with(reader)
    assert errors[0].code == links.ERR_PROTOCOL and errors[0].ref_type == links.LINK_MSG
    assert node.received() == []


@hostile
async def test_slowloris_silent(node, tmp_path):
    reader, writer = await raw(node)
    t0 = asyncio.get_running_loop().time()
    errors = await closed_with(reader, timeout=TIMEOUT + 2)
    assert asyncio.get_running_loop().time() - t0 >= TIMEOUT * 0.9
    assert errors[0].code == links.ERR_TIMEOUT


@hostile
async def test_slowloris_half_frame(node, tmp_path):
    reader, writer = await raw(node)
    data = m.to_frame(hello(Identity.generate()))
    writer.write(data[:9])  # header and a little of the body, then nothing
    errors = await closed_with(reader, timeout=TIMEOUT + 2)
    assert errors[0].code == links.ERR_TIMEOUT


@hostile
async def test_no_proof_after_hello(node, tmp_path):
    reader, writer = await raw(node)
    writer.write(m.to_frame(hello(Identity.generate())))
    msgs = await closed_with(reader, timeout=TIMEOUT + 2)
    assert msgs[0].type == m.CONNECT_LINK and msgs[0].signature is not None  # the reply, then nothing
    assert msgs[-1].type == m.ERROR and msgs[-1].code == links.ERR_TIMEOUT
    assert node.mgr._handshakes == 0
    with node.store.read() as db:
        assert channels.get_link(db, "from-raw")["remote_key"] is None


@hostile
async def test_bad_proof_signature(node, tmp_path):
    ident = Identity.generate()
    reader, writer = await raw(node)
    first = hello(ident)
    writer.write(m.to_frame(first))
    fr = links.FrameReader(reader)
    reply = await next_msg(fr)
    t = links.transcript("from-raw", ident.pubkey, first.nonce, reply.key, reply.nonce)
    wrong = Identity.generate().sign(t)
    writer.write(m.to_frame(m.Message(m.CONNECT_LINK, {"link": "from-raw", "key": ident.pubkey, "signature": wrong})))
    errors = await closed_after(fr, reader)
    assert errors[-1].code == links.ERR_AUTH
    with node.store.read() as db:
        assert channels.get_link(db, "from-raw")["remote_key"] is None


@hostile
async def test_replayed_proof_from_another_session(node, tmp_path):
    """A proof signed for one session's nonces does not open another session."""
    ident = Identity.generate()
    reader, writer = await raw(node)
    first = hello(ident)
    writer.write(m.to_frame(first))
    fr = links.FrameReader(reader)
    reply = await next_msg(fr)
    old_t = links.transcript("from-raw", ident.pubkey, first.nonce, reply.key, os.urandom(32))
    writer.write(m.to_frame(m.Message(m.CONNECT_LINK, {"link": "from-raw", "key": ident.pubkey,
                                                       "signature": ident.sign(old_t)})))
    errors = await closed_after(fr, reader)
    assert errors[-1].code == links.ERR_AUTH


@pytest.mark.parametrize("fields,code", [
    ({"key": b"\x02" + b"\xff" * 32}, links.ERR_AUTH),  # not a point on the curve
    ({"signature": bytes(64)}, links.ERR_PROTOCOL),  # a proof in the opening message
    ({"nonce": bytes(16)}, links.ERR_PROTOCOL),  # nonce shorter than 32 bytes
    ({"link": "nope"}, links.ERR_UNKNOWN_LINK),
])
def test_malformed_hello(tmp_path, fields, code):
    @hostile
    async def body(node, tmp_path):
        reader, writer = await raw(node)
        writer.write(m.to_frame(hello(Identity.generate(), **fields)))
        errors = await closed_with(reader)
        assert len(errors) == 1 and errors[0].code == code

    body(tmp_path)


@hostile
async def test_undecodable_hello(node, tmp_path):
    reader, writer = await raw(node)
    writer.write(frame_of(m.CONNECT_LINK, cbor.dumps({1: "from-raw", 2: b"short"})))
    errors = await closed_with(reader)
    assert errors[0].code == links.ERR_BAD_MESSAGE and "key" in errors[0].reason


@hostile
async def test_too_many_handshakes(node, tmp_path):
    old = links.MAX_HANDSHAKES
    links.MAX_HANDSHAKES = 2
    try:
        stalled = []
        for _ in range(2):
            reader, writer = await raw(node)
            writer.write(m.to_frame(hello(Identity.generate())))
            fr = links.FrameReader(reader)
            await next_msg(fr)  # replied, waiting for the proof
            stalled.append((reader, writer))
        reader, writer = await raw(node)
        writer.write(m.to_frame(hello(Identity.generate())))
        errors = await closed_with(reader)
        assert errors == [links.error_message(links.ERR_BUSY, "too many handshakes in progress")]
        for reader, writer in stalled:
            await closed_with(reader, timeout=TIMEOUT + 2)
        await wait_until(lambda: node.mgr._handshakes == 0, "handshakes ended")
    finally:
        links.MAX_HANDSHAKES = old


@hostile
async def test_wrong_key_after_pin(node, tmp_path):
    pinned = Identity.generate()
    reader, writer, fr = await authenticated(node, pinned)
    writer.close()
    await wait_until(lambda: not node.mgr.is_connected("from-raw"), "first peer gone")
    reader, writer = await raw(node)
    writer.write(m.to_frame(hello(Identity.generate())))
    errors = await closed_with(reader)
    assert errors[0].code == links.ERR_AUTH and "pinned" in errors[0].reason
    reader, writer, fr = await authenticated(node, pinned)  # the pinned key still gets in
    writer.close()


# ---- after the handshake


@hostile
async def test_duplicates_are_acked_and_ignored(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    writer.write(link_msg(1, deposit(11)) + link_msg(1, deposit(11)))
    assert await next_msg(fr) == m.Message(links.ACK, {"seq": 1})
    writer.write(link_msg(1, deposit(11)))  # again, later: acknowledged again
    assert await next_msg(fr) == m.Message(links.ACK, {"seq": 1})
    assert node.received() == [11]
    assert node.mgr.status("from-raw")["duplicates"] == 2
    writer.write(link_msg(2, deposit(12)))
    assert (await next_msg(fr)).seq == 2
    assert node.received() == [11, 12]
    writer.close()


@pytest.mark.parametrize("gap_seq", [3, 1000, 2**64 - 1])
def test_seq_gap_closes(tmp_path, gap_seq):
    @hostile
    async def body(node, tmp_path):
        ident = Identity.generate()
        reader, writer, fr = await authenticated(node, ident)
        writer.write(link_msg(1, deposit(1)) + link_msg(gap_seq, deposit(2)))
        msgs = await closed_after(fr, reader)
        assert msgs[0] == m.Message(links.ACK, {"seq": 1})
        assert msgs[-1].type == m.ERROR and "missing" in msgs[-1].reason
        assert node.received() == [1] and node.last_in() == 1
        reader, writer, fr = await authenticated(node, ident)  # reconnects and continues in sequence
        writer.write(link_msg(2, deposit(2)))
        assert (await next_msg(fr)).seq == 2
        assert node.received() == [1, 2]
        writer.close()

    body(tmp_path)


@hostile
async def test_seq_zero_closes(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    writer.write(link_msg(0, deposit(1)))
    msgs = await closed_after(fr, reader)
    assert msgs[-1].type == m.ERROR and node.received() == []


@hostile
async def test_unknown_top_level_message_is_rejected_not_fatal(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    writer.write(frame_of(200, b"\xa0"))
    err = await next_msg(fr)
    assert err.type == m.ERROR and err.code == links.ERR_BAD_MESSAGE and err.ref_type == 200
    writer.write(m.to_frame(deposit(5)))  # a node message outside a LinkMsg
    err = await next_msg(fr)
    assert err.code == links.ERR_PROTOCOL and "must travel in a LinkMsg" in err.reason
    writer.write(m.to_frame(hello(Identity.generate())))
    err = await next_msg(fr)
    assert "ConnectLink after the handshake" in err.reason
    writer.write(link_msg(1, deposit(5)))
    assert (await next_msg(fr)) == m.Message(links.ACK, {"seq": 1})
    assert node.received() == [5]
    writer.close()


@hostile
async def test_too_many_rejected_messages_close(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    writer.write(frame_of(200, b"\xa0") * (links.MAX_BAD_MESSAGES + 1))
    msgs = await closed_after(fr, reader)
    assert len(msgs) == links.MAX_BAD_MESSAGES + 1 and "too many" in msgs[-1].reason


@pytest.mark.parametrize("msg_type,body,code", [
    (m.DEPOSIT, cbor.dumps({1: 7, 2: 0}), links.ERR_BAD_MESSAGE),  # amount 0
    (m.DEPOSIT, cbor.dumps({1: 7, 2: -5}), links.ERR_BAD_MESSAGE),  # negative amount
    (m.DEPOSIT, cbor.dumps({1: 7, 2: 2**64 - 1}), links.ERR_BAD_MESSAGE),  # above MAX_AMOUNT
    (m.DEPOSIT, b"\xff", links.ERR_BAD_MESSAGE),  # not CBOR
    (177, cbor.dumps({}), links.ERR_BAD_MESSAGE),  # unknown inner type
    (links.ACK, cbor.dumps({1: 1}), links.ERR_PROTOCOL),  # link-layer types never nest
    (links.LINK_MSG, cbor.dumps({1: 1, 2: 25, 3: b"\xa0"}), links.ERR_PROTOCOL),
    (m.CONNECT_LINK, cbor.dumps({1: "x"}), links.ERR_PROTOCOL),
])
def test_bad_inner_message_consumes_seq_and_answers_error(tmp_path, msg_type, body, code):
    @hostile
    async def body_test(node, tmp_path):
        reader, writer, fr = await authenticated(node)
        writer.write(raw_link_msg(1, msg_type, body) + link_msg(2, deposit(9)))
        acks, errs = [], []
        while not (acks and acks[-1].seq == 2 and errs):
            got = await next_msg(fr)
            (acks if got.type == links.ACK else errs).append(got)
        assert len(errs) == 1 and errs[0].seq == 1 and errs[0].msg_type == m.ERROR
        err = m.decode(m.ERROR, errs[0].body)
        assert err.code == code and err.ref_type == msg_type and err.ref_seq == 1
        assert node.received() == [9] and node.last_in() == 2
        writer.write(m.to_frame(m.Message(links.ACK, {"seq": 1})))  # we acknowledge its Error
        await wait_until(lambda: node.mgr.status("from-raw")["outbox"] == 0, "Error acknowledged")
        writer.close()

    body_test(tmp_path)


@hostile
async def test_garbage_after_handshake_closes(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    writer.write(link_msg(1, deposit(1)) + b"\x00garbage\xa5\x4b\x01")
    msgs = await closed_after(fr, reader)
    assert msgs[-1].type == m.ERROR and "bad bytes" in msgs[-1].reason
    assert node.received() == [1]  # what came before the garbage was applied
    assert "bad bytes" in node.mgr.status("from-raw")["last_error"]


@hostile
async def test_ack_of_unsent_seq_closes(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    writer.write(m.to_frame(m.Message(links.ACK, {"seq": 5})))
    msgs = await closed_after(fr, reader)
    assert msgs[-1].type == m.ERROR and "acknowledged seq 5" in msgs[-1].reason


@hostile
async def test_malformed_link_msg_closes(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    writer.write(frame_of(links.LINK_MSG, cbor.dumps({1: 1, 2: 25})))  # no body
    msgs = await closed_after(fr, reader)
    assert msgs[-1].type == m.ERROR and "bad LinkMsg" in msgs[-1].reason
    assert node.last_in() == 0


@hostile
async def test_oversized_frame_after_handshake_closes(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    header = bytearray(b"\xa5\x4b\x01\x1c\xff\xff\x00")
    header[6] = frames.crc8(header, 0, 6)
    writer.write(bytes(header))
    msgs = await closed_after(fr, reader)
    assert "over max frame" in msgs[-1].reason


@hostile
async def test_peer_error_frame_is_recorded(node, tmp_path):
    reader, writer, fr = await authenticated(node)
    writer.write(m.to_frame(links.error_message(77, "something broke over here")))
    await wait_until(lambda: "something broke" in (node.mgr.status("from-raw")["last_error"] or ""), "recorded")
    writer.write(link_msg(1, deposit(3)))
    assert (await next_msg(fr)).seq == 1  # still connected
    writer.close()
