"""Hostile peers against a LinkManager listening on 127.0.0.1: raw sockets speaking plain
bytes and stalled handshakes, then peers that speak the real transport (BOLT 8 streams)
with bad frames and bad link protocol, before and after a valid ConnectLink."""

import asyncio
import os

import pytest

from amiko_core import codes
from amiko_core import cbor
from amiko_core import frame as frames
from amiko_core import messages as m

from amiko.node import channels, invites, links, outbox
from amiko.node.identity import Identity
from amiko.node.store import Store
from amiko.wire import noise
from amiko.wire.listener import Limits
from amiko.wire.stream import StreamError, connect

from amiko_testing.waits import run, wait_until

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 0.4  # the manager's handshake, first-frame and idle deadlines in these tests




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
                                     handshake_timeout=TIMEOUT, keepalive=TIMEOUT / 3)
        self.port = None
        self.listener = None

    def handle(self, db, link, msg):
        if msg.type == m.DEPOSIT:
            db.execute("INSERT INTO rx VALUES (?, ?)", (link, msg.channel))

    def received(self, link="from-raw"):
        with self.store.read() as db:
            return [r[0] for r in db.execute("SELECT channel FROM rx WHERE link = ? ORDER BY rowid", (link,))]

    def last_in(self, link="from-raw"):
        with self.store.read() as db:
            return outbox.last_in(db, link)

    def pinned(self, link="from-raw"):
        with self.store.read() as db:
            key = channels.get_link(db, link)["remote_key"]
        return key and bytes(key)

    def invite(self, link="from-raw"):
        with self.store.transaction() as db:
            return invites.issue(db, self.identity, link, 3600, self.mgr.clock())

    async def start(self):
        server = await self.mgr.listen("127.0.0.1", 0, Limits(handshake_timeout=TIMEOUT, first_frame_timeout=TIMEOUT))
        self.listener = self.mgr._listeners[0]
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
            with self.store.transaction() as db:
                db.execute("UPDATE links SET remote_key = NULL WHERE name = 'from-good'")
            good.connect("to-node", "amikolink://127.0.0.1:%d/from-good?key=%s&invite=%s"
                         % (self.port, self.identity.pubkey.hex(), self.invite("from-good").hex()))
            await wait_until(lambda: len(self.received("from-good")) > before, "a good peer's message")
        finally:
            await good.close()
            store.close()


async def raw(node):
    return await asyncio.open_connection("127.0.0.1", node.port)


async def plain_closed(reader, timeout=3.0):
    """Read plain bytes until the node closes the connection; returns them (the node never
    speaks before a handshake, so this is b"")."""
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
    return data


async def dial(node, ident=None, **kw):
    """A BOLT 8 stream to the node (the real transport), no ConnectLink yet."""
    return await connect("127.0.0.1", node.port, ident or Identity.generate(), node.identity.pubkey, timeout=3, **kw)


async def closed_with(stream, timeout=3.0):
    """Messages the node sends until it closes the stream."""
    out = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                out.append(await stream.recv_message())
    except StreamError:  # StreamClosed: the node closed it
        pass
    except TimeoutError:
        raise AssertionError("stream not closed within %.1f s (got %r)" % (timeout, out)) from None
    return out


def frame_of(mtype, body, version=frames.PROTOCOL_VERSION):
    return frames.encode(mtype, body, version, max_frame=noise.MAX_MESSAGE)


def hello(ident, link="from-raw", **extra):
    fields = {"link": link, "key": ident.pubkey}
    fields.update(extra)
    return m.Message(m.CONNECT_LINK, fields)


def link_msg(seq, msg):
    return m.to_frame(m.Message(links.LINK_MSG, {"seq": seq, "msg_type": msg.type, "body": m.encode(msg)}))


def raw_link_msg(seq, msg_type, body):
    return m.to_frame(m.Message(links.LINK_MSG, {"seq": seq, "msg_type": msg_type, "body": body}))


def deposit(i):
    return m.Message(m.DEPOSIT, {"channel": i, "amount": 1})


def send(stream, *frames_):
    for f in frames_:
        stream.send(f)


async def authenticated(node, ident=None):
    """A peer that linked as from-raw through the real transport (with an invitation the
    first time): its Stream, past the node's ConnectLink answer."""
    ident = ident or Identity.generate()
    stream = await dial(node, ident)
    invite = None if node.pinned() else node.invite()
    await links.initiator_handshake(stream, "from-raw", invite=invite)
    await wait_until(lambda: node.mgr.is_connected("from-raw"), "raw peer linked")
    return stream


async def next_msg(stream, timeout=3.0):
    return await stream.recv_message(timeout=timeout)


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


# ---- plain bytes and stalled handshakes: refused by the transport, the node says nothing


@hostile
async def test_garbage_bytes(node, tmp_path):
    reader, writer = await raw(node)
    writer.write(bytes(range(256)) * 8)
    assert await plain_closed(reader) == b""
    await wait_until(lambda: node.listener.counts["handshake_failures"] == 1, "counted")
    assert not node.mgr.is_connected("from-raw")


@hostile
async def test_plain_frame_peer_is_refused(node, tmp_path):
    """A peer that speaks the old plain frames (a ConnectLink in clear) gets nothing back."""
    reader, writer = await raw(node)
    data = m.to_frame(hello(Identity.generate(), nonce=os.urandom(32)))
    writer.write(data + bytes(max(0, noise.ACT_ONE_SIZE - len(data))))
    assert await plain_closed(reader) == b""
    assert not node.mgr.is_connected("from-raw") and not node.pinned()


@pytest.mark.parametrize("sent", [b"", b"\x00" * 20, "act one", "act one and half of act three"])
def test_stalled_handshake_is_closed_at_the_deadline(tmp_path, sent):
    @hostile
    async def body(node, tmp_path):
        reader, writer = await raw(node)
        if isinstance(sent, bytes):
            writer.write(sent)
        else:
            ini = noise.Initiator(Identity.generate(), node.identity.pubkey)
            writer.write(ini.act_one())
            act_two = await reader.readexactly(noise.ACT_TWO_SIZE)
            if "three" in sent:
                writer.write(ini.read_act_two(act_two)[:30])
        t0 = asyncio.get_running_loop().time()
        await plain_closed(reader, timeout=TIMEOUT + 2)
        assert asyncio.get_running_loop().time() - t0 >= TIMEOUT * 0.8
        await wait_until(lambda: node.listener.counts["handshake_timeouts"] == 1, "counted as a missed deadline")

    body(tmp_path)


@hostile
async def test_wrong_static_key_is_refused(node, tmp_path):
    """An initiator that expects another key for this address: the handshake fails at act one."""
    with pytest.raises(StreamError) as e:
        await connect("127.0.0.1", node.port, Identity.generate(), Identity.generate().pubkey, timeout=3)
    assert e.value.code == "auth"
    await wait_until(lambda: node.listener.counts["handshake_failures"] == 1, "counted")


@hostile
async def test_replayed_handshake_and_ciphertext_are_refused(node, tmp_path):
    """Bytes recorded from one session (act one, act three, an encrypted ConnectLink and
    LinkMsg) replayed on a new connection: the responder's new ephemeral key makes act three
    fail, and nothing is applied."""
    ident = Identity.generate()
    ini = noise.Initiator(ident, node.identity.pubkey)
    reader, writer = await raw(node)
    act_one = ini.act_one()
    writer.write(act_one)
    act_three = ini.read_act_two(await reader.readexactly(noise.ACT_TWO_SIZE))
    writer.write(act_three)
    enc, dec = ini.split()
    record = act_one + act_three + enc.encrypt(m.to_frame(hello(ident, invite=node.invite()))) + enc.encrypt(
        link_msg(1, deposit(1)))
    writer.write(record[len(act_one) + len(act_three):])
    await wait_until(lambda: node.received() == [1], "the original session applies it")
    writer.close()
    await wait_until(lambda: not node.mgr.is_connected("from-raw"), "original gone")
    reader, writer = await raw(node)
    writer.write(record)
    await plain_closed(reader)
    assert node.received() == [1] and node.last_in() == 1


# ---- the first frame, through the real transport


@hostile
async def test_oversized_first_frame(node, tmp_path):
    stream = await dial(node, max_frame=noise.MAX_MESSAGE)
    stream.send(frame_of(m.CONNECT_LINK, b"\xa0" * 5000))
    assert await closed_with(stream) == []
    assert not node.mgr.is_connected("from-raw")


@hostile
async def test_bad_crc(node, tmp_path):
    data = bytearray(m.to_frame(hello(Identity.generate())))
    data[-1] ^= 1
    stream = await dial(node)
    stream.send(bytes(data))
    errors = await closed_with(stream)
    assert errors[0].type == m.ERROR and "CRC-32" in errors[0].reason
    assert not node.mgr.is_connected("from-raw")


@hostile
async def test_unknown_message_type_first(node, tmp_path):
    stream = await dial(node)
    stream.send(frame_of(200, b"\xa0"))
    errors = await closed_with(stream)
    assert errors[0].code == codes.PROTOCOL and errors[0].ref_type == 200
    assert "first message must be ConnectLink" in errors[0].reason


@hostile
async def test_unsupported_version(node, tmp_path):
    stream = await dial(node)
    stream.send(frame_of(m.CONNECT_LINK, m.encode(hello(Identity.generate())), version=9))
    errors = await closed_with(stream)
    assert "unsupported protocol version" in errors[0].reason


@hostile
async def test_link_msg_before_connect_link(node, tmp_path):
    stream = await dial(node)
    stream.send(link_msg(1, deposit(1)))
    errors = await closed_with(stream)
    assert errors[0].code == codes.PROTOCOL and errors[0].ref_type == links.LINK_MSG
    assert node.received() == []


@hostile
async def test_handshake_then_nothing(node, tmp_path):
    stream = await dial(node)
    t0 = asyncio.get_running_loop().time()
    assert await closed_with(stream, timeout=TIMEOUT + 2) == []
    assert asyncio.get_running_loop().time() - t0 >= TIMEOUT * 0.8
    assert node.listener.counts["first_frame_timeouts"] == 1


@hostile
async def test_silent_after_connect_link_is_dropped(node, tmp_path):
    """Linked, then not a single frame (no keepalive either): dropped at the idle deadline."""
    stream = await authenticated(node)
    msgs = await closed_with(stream, timeout=3 * TIMEOUT + 2)
    assert msgs[-1].type == m.ERROR and msgs[-1].code == codes.TIMEOUT
    assert all(x.type in (links.ACK, m.ERROR) for x in msgs)  # the node's keepalives, then the Error
    assert "no frame" in node.mgr.status("from-raw")["last_error"]


@pytest.mark.parametrize("fields,code", [
    ({"key": Identity.generate().pubkey}, codes.AUTH),  # not the key of the handshake
    ({"signature": bytes(64)}, codes.PROTOCOL),  # a field of the old handshake
    ({"nonce": bytes(16)}, codes.PROTOCOL),
    ({"link": "nope"}, codes.UNKNOWN_LINK),
    ({}, codes.AUTH),  # no pinned key, no invitation
    ({"invite": bytes(32)}, codes.AUTH),  # an invitation never issued
])
def test_malformed_hello(tmp_path, fields, code):
    @hostile
    async def body(node, tmp_path):
        ident = Identity.generate()
        stream = await dial(node, ident)
        stream.send_message(hello(ident, **fields))
        errors = await closed_with(stream)
        assert len(errors) == 1 and errors[0].code == code, errors
        assert not node.pinned()

    body(tmp_path)


@hostile
async def test_undecodable_hello(node, tmp_path):
    stream = await dial(node)
    stream.send(frame_of(m.CONNECT_LINK, cbor.dumps({1: "from-raw", 2: b"short"})))
    errors = await closed_with(stream)
    assert errors[0].code == codes.BAD_MESSAGE and "key" in errors[0].reason


@hostile
async def test_wrong_key_after_pin(node, tmp_path):
    pinned = Identity.generate()
    stream = await authenticated(node, pinned)
    stream.close()
    await wait_until(lambda: not node.mgr.is_connected("from-raw"), "first peer gone")
    other = Identity.generate()
    stream = await dial(node, other)
    stream.send_message(hello(other, invite=node.invite()))  # even with a fresh invitation
    errors = await closed_with(stream)
    assert errors[0].code == codes.AUTH and "pinned" in errors[0].reason
    stream = await authenticated(node, pinned)  # the pinned key still gets in
    stream.close()


# ---- after the handshake


@hostile
async def test_duplicates_are_acked_and_ignored(node, tmp_path):
    stream = await authenticated(node)
    send(stream, link_msg(1, deposit(11)), link_msg(1, deposit(11)))
    assert await next_msg(stream) == m.Message(links.ACK, {"seq": 1})
    send(stream, link_msg(1, deposit(11)))  # again, later: acknowledged again
    assert await next_msg(stream) == m.Message(links.ACK, {"seq": 1})
    assert node.received() == [11]
    assert node.mgr.status("from-raw")["duplicates"] == 2
    send(stream, link_msg(2, deposit(12)))
    assert (await next_msg(stream)).seq == 2
    assert node.received() == [11, 12]
    stream.close()


@pytest.mark.parametrize("gap_seq", [3, 1000, 2**64 - 1])
def test_seq_gap_closes(tmp_path, gap_seq):
    @hostile
    async def body(node, tmp_path):
        ident = Identity.generate()
        stream = await authenticated(node, ident)
        send(stream, link_msg(1, deposit(1)), link_msg(gap_seq, deposit(2)))
        msgs = await closed_with(stream)
        assert msgs[0] == m.Message(links.ACK, {"seq": 1})
        assert msgs[-1].type == m.ERROR and "missing" in msgs[-1].reason
        assert node.received() == [1] and node.last_in() == 1
        stream = await authenticated(node, ident)  # reconnects and continues in sequence
        send(stream, link_msg(2, deposit(2)))
        assert (await next_msg(stream)).seq == 2
        assert node.received() == [1, 2]
        stream.close()

    body(tmp_path)


@hostile
async def test_seq_zero_closes(node, tmp_path):
    stream = await authenticated(node)
    send(stream, link_msg(0, deposit(1)))
    msgs = await closed_with(stream)
    assert msgs[-1].type == m.ERROR and node.received() == []


@hostile
async def test_unknown_top_level_message_is_rejected_not_fatal(node, tmp_path):
    stream = await authenticated(node)
    send(stream, frame_of(200, b"\xa0"))
    err = await next_msg(stream)
    assert err.type == m.ERROR and err.code == codes.BAD_MESSAGE and err.ref_type == 200
    send(stream, m.to_frame(deposit(5)))  # a node message outside a LinkMsg
    err = await next_msg(stream)
    assert err.code == codes.PROTOCOL and "must travel in a LinkMsg" in err.reason
    send(stream, m.to_frame(hello(Identity.generate())))
    err = await next_msg(stream)
    assert "ConnectLink after the handshake" in err.reason
    send(stream, link_msg(1, deposit(5)))
    assert (await next_msg(stream)) == m.Message(links.ACK, {"seq": 1})
    assert node.received() == [5]
    stream.close()


@hostile
async def test_too_many_rejected_messages_close(node, tmp_path):
    stream = await authenticated(node)
    send(stream, *[frame_of(200, b"\xa0")] * (links.MAX_BAD_MESSAGES + 1))
    msgs = await closed_with(stream)
    assert len(msgs) == links.MAX_BAD_MESSAGES + 1 and "too many" in msgs[-1].reason


@pytest.mark.parametrize("msg_type,body,code", [
    (m.DEPOSIT, cbor.dumps({1: 7, 2: 0}), codes.BAD_MESSAGE),  # amount 0
    (m.DEPOSIT, cbor.dumps({1: 7, 2: -5}), codes.BAD_MESSAGE),  # negative amount
    (m.DEPOSIT, cbor.dumps({1: 7, 2: 2**64 - 1}), codes.BAD_MESSAGE),  # above MAX_AMOUNT
    (m.DEPOSIT, b"\xff", codes.BAD_MESSAGE),  # not CBOR
    (177, cbor.dumps({}), codes.BAD_MESSAGE),  # unknown inner type
    (links.ACK, cbor.dumps({1: 1}), codes.PROTOCOL),  # link-layer types never nest
    (links.LINK_MSG, cbor.dumps({1: 1, 2: 25, 3: b"\xa0"}), codes.PROTOCOL),
    (m.CONNECT_LINK, cbor.dumps({1: "x"}), codes.PROTOCOL),
])
def test_bad_inner_message_consumes_seq_and_answers_error(tmp_path, msg_type, body, code):
    @hostile
    async def body_test(node, tmp_path):
        stream = await authenticated(node)
        send(stream, raw_link_msg(1, msg_type, body), link_msg(2, deposit(9)))
        acks, errs = [], []
        while not (acks and acks[-1].seq == 2 and errs):
            got = await next_msg(stream)
            (acks if got.type == links.ACK else errs).append(got)
        assert len(errs) == 1 and errs[0].seq == 1 and errs[0].msg_type == m.ERROR
        err = m.decode(m.ERROR, errs[0].body)
        assert err.code == code and err.ref_type == msg_type and err.ref_seq == 1
        assert node.received() == [9] and node.last_in() == 2
        send(stream, m.to_frame(m.Message(links.ACK, {"seq": 1})))  # we acknowledge its Error
        await wait_until(lambda: node.mgr.status("from-raw")["outbox"] == 0, "Error acknowledged")
        stream.close()

    body_test(tmp_path)


@hostile
async def test_garbage_after_handshake_closes(node, tmp_path):
    """A valid LinkMsg, then plaintext that is not a frame (inside a valid BOLT 8 message)."""
    stream = await authenticated(node)
    send(stream, link_msg(1, deposit(1)), b"\x00garbage\xa5\x4b\x01")
    await closed_with(stream)
    assert node.received() == [1]  # what came before the garbage was applied
    assert "not one valid frame" in node.mgr.status("from-raw")["last_error"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "replay", "reorder", "raw bytes"])
def test_tampered_ciphertext_closes(tmp_path, damage):
    """Ciphertext of a linked peer altered on the way: every bit flipped in turn of a LinkMsg's
    message (one connection per bit would be slow: a sample of positions across header, MACs
    and body), a truncated message, a replayed one, two swapped: closed, nothing applied."""
    @hostile
    async def body(node, tmp_path):
        ident = Identity.generate()
        stream = await authenticated(node, ident)
        enc = stream._enc
        good = enc.encrypt(link_msg(1, deposit(1)))
        positions = sorted({0, 1, 17, 18, len(good) // 2, len(good) - 17, len(good) - 1})
        for k, pos in enumerate(positions if damage == "flip" else [None]):
            if k:
                stream = await authenticated(node, ident)
                enc = stream._enc
                good = enc.encrypt(link_msg(1, deposit(1)))
            if damage == "flip":
                bad = bytearray(good)
                bad[pos] ^= 0x01
                data = bytes(bad)
            elif damage == "truncate":
                data = good[:-5]
            elif damage == "replay":
                data = good + good
            elif damage == "reorder":
                second = enc.encrypt(link_msg(2, deposit(2)))
                data = second + good
            else:
                data = b"\xa5\x4b\x01garbage" * 4
            stream._writer.write(data)
            if damage == "truncate":
                stream._writer.write_eof()
            await closed_with(stream, timeout=3 * TIMEOUT + 2)
            await wait_until(lambda: not node.mgr.is_connected("from-raw"), "dropped")
            expected = [1] if damage == "replay" else []  # a replay: the first copy is genuine
            assert node.received() == expected, (damage, pos, node.received())
            if damage == "replay":
                assert node.last_in() == 1
        assert "from-raw" in node.mgr.status()

    body(tmp_path)


@hostile
async def test_ack_of_unsent_seq_closes(node, tmp_path):
    stream = await authenticated(node)
    send(stream, m.to_frame(m.Message(links.ACK, {"seq": 5})))
    msgs = await closed_with(stream)
    assert msgs[-1].type == m.ERROR and "acknowledged seq 5" in msgs[-1].reason


@hostile
async def test_malformed_link_msg_closes(node, tmp_path):
    stream = await authenticated(node)
    send(stream, frame_of(links.LINK_MSG, cbor.dumps({1: 1, 2: 25})))  # no body
    msgs = await closed_with(stream)
    assert msgs[-1].type == m.ERROR and "bad LinkMsg" in msgs[-1].reason
    assert node.last_in() == 0


@hostile
async def test_oversized_frame_after_handshake_closes(node, tmp_path):
    ident = Identity.generate()
    stream = await authenticated(node, ident)
    # the peer's own cipher: it may encrypt what it likes, beyond the node's max frame
    stream._writer.write(stream._enc.encrypt(frame_of(links.LINK_MSG, bytes(5000))))
    await closed_with(stream)
    await wait_until(lambda: not node.mgr.is_connected("from-raw"), "dropped")
    assert "over the 4096-byte limit" in node.mgr.status("from-raw")["last_error"]


@hostile
async def test_peer_error_frame_is_recorded(node, tmp_path):
    stream = await authenticated(node)
    send(stream, m.to_frame(links.error_message(77, "something broke over here")))
    await wait_until(lambda: "something broke" in (node.mgr.status("from-raw")["last_error"] or ""), "recorded")
    send(stream, link_msg(1, deposit(3)))
    assert (await next_msg(stream)).seq == 1  # still connected
    stream.close()


@hostile
async def test_a_flood_in_one_burst_is_applied_in_bounded_groups(node, tmp_path):
    """1000 LinkMsgs at once, one of them malformed: every group transaction holds at most
    GROUP_MAX link messages, all valid ones are applied once, the malformed one alone is
    answered with an Error, and the Acks cover everything."""
    sizes = []
    real = node.mgr._apply_group

    def spy(members):
        sizes.append(sum(len(msgs) for _, msgs, _ in members))
        return real(members)

    node.mgr._apply_group = spy
    stream = await authenticated(node)
    bad = 500
    send(stream, *[raw_link_msg(i, m.DEPOSIT, b"\xff") if i == bad else link_msg(i, deposit(i))
                   for i in range(1, 1001)])
    await wait_until(lambda: node.last_in() == 1000, "every message consumed", timeout=30)
    assert node.received() == [i for i in range(1, 1001) if i != bad]
    assert sizes and max(sizes) <= links.GROUP_MAX, sizes
    errors, acked = [], 0
    async with asyncio.timeout(10):
        while acked < 1000 or not errors:
            msg = await stream.recv_message()
            if msg.type == links.ACK:
                acked = max(acked, msg.seq)
            elif msg.type == links.LINK_MSG:
                errors.append(m.decode(msg.msg_type, msg.body))
                send(stream, m.to_frame(m.Message(links.ACK, {"seq": msg.seq})))
    assert [(e.type, e.ref_seq) for e in errors] == [(m.ERROR, bad)]
    stream.close()
