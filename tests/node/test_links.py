"""LinkManager between real BOLT 8 endpoints on 127.0.0.1 (ephemeral ports, no fixed sleeps)."""

import asyncio
import random
import socket
import sqlite3

import pytest

from amiko_core import codes
from amiko_core import messages as m
from amiko_core.errors import AmikoError

from amiko.node import channels, invites, links, outbox
from amiko.node.identity import Identity
from amiko.node.store import Store
from amiko.wire import stream as stream_mod

from amiko_testing.waits import run, wait_until

pytestmark = pytest.mark.timeout(60)

RX_SCHEMA = """
CREATE TABLE IF NOT EXISTS rx (link TEXT NOT NULL, channel INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rx_err (link TEXT NOT NULL, code INTEGER, reason TEXT, ref_type INTEGER, ref_seq INTEGER);
"""




def deposit(i):
    return m.Message(m.DEPOSIT, {"channel": i, "amount": 1})


def bulky_msg(i):
    return m.Message(m.SETTLE_ROLLBACK, {"txid": bytes(20), "side": 0, "reason": "%d %s" % (i, "x" * 240)})


class Peer:
    """A LinkManager over its own store; its handler records Deposits (and Errors) in the
    same transaction that advances the inbox, and raises after recording for channels in fail_on."""

    def __init__(self, tmp_path, name, identity=None, links_known=(), url_fn=False, **kw):
        """links_known: names of links this peer has (no key pinned: the dialer needs an invitation)."""
        self.path = str(tmp_path / ("%s.db" % name))
        self.name = name
        self.identity = identity or Identity.generate()
        self.fail_on = set()
        self.crash_on = set()
        self.port = None
        self.kw = kw
        self.url_fn = url_fn
        self._open(links_known)

    def _open(self, links_known=()):
        self.store = Store(self.path, synchronous="OFF")
        with self.store.transaction() as db:
            for stmt in RX_SCHEMA.strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)
            for name in links_known:
                channels.add_link(db, name)
        kw = dict(backoff=(0.02, 0.2), handshake_timeout=2.0)
        kw.update(self.kw)
        self.mgr = links.LinkManager(self.store, self.identity, self.handle,
                                     self.url if self.url_fn else None, **kw)

    def handle(self, db, link, msg):
        if msg.type == m.DEPOSIT:
            db.execute("INSERT INTO rx (link, channel) VALUES (?, ?)", (link, msg.channel))
            if msg.channel in self.fail_on:
                raise AmikoError("channel %d is refused" % msg.channel)
            if msg.channel in self.crash_on:
                raise KeyError("bug")
        elif msg.type == m.SETTLE_ROLLBACK:  # a bulky message: "<channel> <padding>"
            db.execute("INSERT INTO rx (link, channel) VALUES (?, ?)", (link, int(msg.reason.split()[0])))
        elif msg.type == m.ERROR:
            db.execute("INSERT INTO rx_err VALUES (?, ?, ?, ?, ?)",
                       (link, msg.code, msg.reason, msg.ref_type, msg.ref_seq))
        else:
            raise AmikoError("unexpected %s" % msg.name)

    async def listen(self):
        server = await self.mgr.listen("127.0.0.1", self.port or 0)
        self.port = server.sockets[0].getsockname()[1]

    def url(self, link, key=None, invite=None):
        url = "amikolink://127.0.0.1:%d/%s?key=%s" % (self.port, link, (key or self.identity.pubkey).hex())
        return url if invite is None else url + "&invite=" + invite.hex()

    def invite(self, link, expiry=3600, now=None):
        """The URL of a fresh one-time invitation for link (as `amiko link NAME` prints it)."""
        with self.store.transaction() as db:
            secret = invites.issue(db, self.identity, link, expiry, now if now is not None else self.mgr.clock())
        return self.url(link, invite=secret)

    def pin(self, link, key):
        with self.store.transaction() as db:
            channels.add_link(db, link, remote_key=key)

    def send(self, link, chans, bulky=False):
        with self.store.transaction() as db:
            for c in chans:
                outbox.enqueue(db, link, bulky_msg(c) if bulky else deposit(c))
        self.mgr.kick(link)

    def received(self, link=None):
        with self.store.read() as db:
            if link is None:
                return [r[0] for r in db.execute("SELECT channel FROM rx ORDER BY rowid")]
            return [r[0] for r in db.execute("SELECT channel FROM rx WHERE link = ? ORDER BY rowid", (link,))]

    def errors(self):
        with self.store.read() as db:
            return db.execute("SELECT link, code, reason, ref_type, ref_seq FROM rx_err ORDER BY rowid").fetchall()

    def pending(self, link):
        with self.store.read() as db:
            return outbox.pending_count(db, link)

    def pinned(self, link):
        with self.store.read() as db:
            row = channels.get_link(db, link)
        return row and row["remote_key"] and bytes(row["remote_key"])

    async def restart(self):
        await self.mgr.close()
        self.store.close()
        self._open()
        if self.port is not None:
            await self.listen()

    async def close(self):
        await self.mgr.close()
        self.store.close()


async def pair(tmp_path, **kw):
    """a dials b: a's link "to-b", b's link "from-a"."""
    a = Peer(tmp_path, "a", **kw)
    b = Peer(tmp_path, "b", links_known=["from-a"], **kw)
    await b.listen()
    a.mgr.connect("to-b", b.invite("from-a"))
    await wait_until(lambda: a.mgr.is_connected("to-b") and b.mgr.is_connected("from-a"), "link up")
    return a, b


def test_message_types_registered():
    assert m.name_of(links.LINK_MSG) == "LinkMsg" and m.name_of(links.ACK) == "Ack"
    msg = m.Message(links.LINK_MSG, {"seq": 1, "msg_type": m.DEPOSIT, "body": m.encode(deposit(3))})
    assert m.from_frame(links.frames.decode_one(m.to_frame(msg))) == msg
    links._register()  # idempotent


def test_handshake_and_delivery_both_ways(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        try:
            assert b.pinned("from-a") == a.identity.pubkey  # responder pinned through the invitation
            assert a.pinned("to-b") == b.identity.pubkey  # initiator recorded the URL's key
            a.send("to-b", range(1, 21))
            b.send("from-a", range(100, 111))
            await wait_until(lambda: len(b.received()) == 20 and len(a.received()) == 11, "delivery")
            assert b.received("from-a") == list(range(1, 21))  # in order
            assert a.received("to-b") == list(range(100, 111))
            await wait_until(lambda: a.pending("to-b") == 0 and b.pending("from-a") == 0, "acks")
            sa, sb = a.mgr.status("to-b"), b.mgr.status("from-a")
            assert sa["connected"] and sa["direction"] == "out" and sa["connects"] == 1 and sa["outbox"] == 0
            assert sb["connected"] and sb["direction"] == "in" and sb["last_error"] is None
            assert set(a.mgr.status()) == {"to-b"}
        finally:
            await a.close()
            await b.close()

    run(main())


def test_messages_enqueued_before_connecting_are_sent_on_connect(tmp_path):
    async def main():
        a = Peer(tmp_path, "a")
        b = Peer(tmp_path, "b", links_known=["from-a"])
        await b.listen()
        a.send("to-b", range(50))
        with b.store.transaction() as db:
            outbox.enqueue(db, "from-a", deposit(7))  # queued on the responder before any connection
        try:
            a.mgr.connect("to-b", b.invite("from-a"))
            await wait_until(lambda: len(b.received()) == 50 and a.received() == [7], "backlog delivered")
            assert b.received() == list(range(50))
        finally:
            await a.close()
            await b.close()

    run(main())


def test_responder_with_wrong_key_is_refused(tmp_path):
    async def main():
        a = Peer(tmp_path, "a")
        b = Peer(tmp_path, "b", links_known=["from-a"])
        await b.listen()
        impostor_key = Identity.generate().pubkey
        a.mgr.connect("to-b", b.url("from-a", key=impostor_key))  # URL pins a key b does not have
        try:
            await wait_until(lambda: a.mgr.status("to-b")["failures"] >= 2, "refused dials")
            st = a.mgr.status("to-b")
            assert not st["connected"] and "not the pinned key" in st["last_error"]
            assert not b.mgr.is_connected("from-a")
            assert not b.pinned("from-a")  # the BOLT 8 handshake failed: b never heard a ConnectLink
            a.send("to-b", [1])
            assert b.received() == []
        finally:
            await a.close()
            await b.close()

    run(main())


def test_initiator_with_other_key_than_pinned_is_refused(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        mallory = Peer(tmp_path, "mallory")
        try:
            mallory.mgr.connect("to-b", b.url("from-a"))
            await wait_until(lambda: mallory.mgr.status("to-b")["failures"] >= 2, "mallory refused")
            st = mallory.mgr.status("to-b")
            assert not st["connected"] and "peer refused" in st["last_error"] and "pinned" in st["last_error"]
            assert b.pinned("from-a") == a.identity.pubkey
            assert "refused" in b.mgr.status("from-a")["last_error"]
            mallory.send("to-b", [666])
            a.send("to-b", [1, 2])
            await wait_until(lambda: b.received() == [1, 2], "a still delivers")
            assert a.mgr.is_connected("to-b") and b.mgr.is_connected("from-a")
            # even with a unlinked, b keeps refusing the other key
            await a.close()
            await wait_until(lambda: not b.mgr.is_connected("from-a"), "a gone")
            failures = mallory.mgr.status("to-b")["failures"]
            await wait_until(lambda: mallory.mgr.status("to-b")["failures"] >= failures + 2, "still refused")
            assert not b.mgr.is_connected("from-a") and 666 not in b.received()
        finally:
            await mallory.close()
            await a.close()
            await b.close()

    run(main())


def test_unknown_link_name_is_refused(tmp_path):
    async def main():
        a = Peer(tmp_path, "a")
        b = Peer(tmp_path, "b", links_known=["from-a"])
        await b.listen()
        a.mgr.connect("to-b", b.url("no-such-link"))
        try:
            await wait_until(lambda: a.mgr.status("to-b")["failures"] >= 1, "refused")
            assert "no link named no-such-link" in a.mgr.status("to-b")["last_error"]
            assert b.mgr.status() == {}  # nothing recorded for names b does not have
            assert not b.pinned("no-such-link")
        finally:
            await a.close()
            await b.close()

    run(main())


def test_connect_refuses_url_without_a_pin(tmp_path):
    async def main():
        a = Peer(tmp_path, "a")
        try:
            with pytest.raises(AmikoError, match="no peer key is pinned"):
                a.mgr.connect("to-b", "amikolink://127.0.0.1:9/x")
            with pytest.raises(AmikoError, match="not a 33-byte"):
                a.mgr.connect("to-b", "amikolink://127.0.0.1:9/x?key=02" + "ff" * 32)
            with pytest.raises(AmikoError):
                a.mgr.connect("to-b", "amikopay://127.0.0.1:9/x")
        finally:
            await a.close()

    run(main())


def _assert_exactly_once(peer, expected):
    got = peer.received()
    assert sorted(got) == sorted(expected), "missing %s, duplicated %s" % (
        sorted(set(expected) - set(got)), sorted(c for c in set(got) if got.count(c) > 1))


def test_exactly_once_across_dropped_connections(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        try:
            n = 600
            a.send("to-b", range(n))
            b.send("from-a", range(10000, 10000 + 100))
            for k, side in enumerate((b, a, b)):
                # kill the socket mid-stream, from either end
                await wait_until(lambda: len(b.received()) >= (k + 1) * n // 5, "progress %d" % k)
                side.mgr.disconnect("from-a" if side is b else "to-b")
                await wait_until(lambda: a.mgr.is_connected("to-b") and b.mgr.is_connected("from-a"), "reconnected")
            await wait_until(lambda: len(b.received()) >= n and len(a.received()) >= 100, "all delivered", 20)
            await wait_until(lambda: a.pending("to-b") == 0 and b.pending("from-a") == 0, "all acked")
            _assert_exactly_once(b, range(n))
            _assert_exactly_once(a, range(10000, 10100))
            assert a.mgr.status("to-b")["reconnects"] >= 3
        finally:
            await a.close()
            await b.close()

    run(main())


def test_lost_acks_lead_to_resends_that_are_ignored(tmp_path, monkeypatch):
    """The receiver commits but its Acks never arrive (it died before they got out): the sender
    resends after reconnecting; the duplicates are acknowledged again and not applied."""
    real_send = links._send
    drop_acks = [True]

    def send(stream, msg):
        if msg.type == links.ACK and drop_acks[0]:
            return
        real_send(stream, msg)

    monkeypatch.setattr(links, "_send", send)

    async def main():
        a, b = await pair(tmp_path)
        try:
            a.send("to-b", range(40))
            await wait_until(lambda: len(b.received()) == 40, "applied")
            assert a.pending("to-b") == 40  # nothing acknowledged
            drop_acks[0] = False
            b.mgr.disconnect("from-a")
            await wait_until(lambda: a.pending("to-b") == 0, "acknowledged after the resend")
            assert b.mgr.status("from-a")["duplicates"] == 40
            assert b.received() == list(range(40))
        finally:
            await a.close()
            await b.close()

    run(main())


def test_bulk_traffic_both_ways_with_small_socket_buffers(tmp_path, monkeypatch):
    """Both ends stream at once through tiny socket buffers: no deadlock (neither end may stop
    reading while it waits for the other to read)."""
    real = stream_mod.Stream.__init__

    def small_buffers(self, reader, writer, *args):
        real(self, reader, writer, *args)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.transport.set_write_buffer_limits(high=4096)

    monkeypatch.setattr(stream_mod.Stream, "__init__", small_buffers)

    async def main():
        a, b = await pair(tmp_path)
        try:
            n = 500
            a.send("to-b", range(n), bulky=True)
            b.send("from-a", range(n), bulky=True)
            await wait_until(lambda: len(a.received()) == n and len(b.received()) == n, "both streams", 20)
            await wait_until(lambda: a.pending("to-b") == 0 and b.pending("from-a") == 0, "all acked")
            assert a.received() == b.received() == list(range(n))
        finally:
            await a.close()
            await b.close()

    run(main())


def test_exactly_once_across_restarts(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        try:
            n = 600
            a.send("to-b", range(n))
            await wait_until(lambda: len(b.received()) >= 100, "progress before the receiver restarts")
            await b.restart()  # same store file, same identity, same port
            await wait_until(lambda: len(b.received()) >= 300, "progress before the sender restarts")
            await a.restart()
            a.mgr.connect("to-b", b.url("from-a"))  # the daemon reconnects its links on start
            await wait_until(lambda: len(b.received()) >= n, "all delivered", 20)
            await wait_until(lambda: a.pending("to-b") == 0, "all acked")
            _assert_exactly_once(b, range(n))
            assert b.received() == list(range(n))  # and in order
        finally:
            await a.close()
            await b.close()

    run(main())


def test_failing_handler_rolls_back_and_answers_with_error(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        b.fail_on = {3}
        b.crash_on = {5}
        try:
            a.send("to-b", range(1, 8))
            await wait_until(lambda: len(b.received()) == 5, "the others applied")
            # the handler's own insert for 3 and 5 was rolled back with their transaction
            assert b.received() == [1, 2, 4, 6, 7]
            await wait_until(lambda: len(a.errors()) == 2, "Errors delivered to the peer")
            errs = a.errors()
            assert errs[0][:2] == ("to-b", codes.REJECTED) and "channel 3 is refused" in errs[0][2]
            assert errs[0][3:] == (m.DEPOSIT, 3)  # ref_type, ref_seq
            assert errs[1][1] == codes.INTERNAL and errs[1][4] == 5
            assert b.mgr.status("from-a")["rejected"] == 2
            a.send("to-b", [8, 9])  # the link keeps working
            await wait_until(lambda: b.received()[-2:] == [8, 9], "later messages")
            await wait_until(lambda: a.pending("to-b") == 0 and b.pending("from-a") == 0, "everything acked")
            assert a.mgr.is_connected("to-b")
        finally:
            await a.close()
            await b.close()

    run(main())


def test_failed_handler_after_commit_callbacks_are_dropped(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        ran = []

        def handler(db, link, msg):
            db.execute("INSERT INTO rx (link, channel) VALUES (?, ?)", (link, msg.channel))
            db.after_commit(lambda: ran.append(msg.channel))
            if msg.channel % 2:
                raise AmikoError("odd")

        b.mgr.handler = handler
        try:
            a.send("to-b", range(6))
            await wait_until(lambda: len(a.errors()) == 3 and a.pending("to-b") == 0, "done")
            assert b.received() == [0, 2, 4]
            assert ran == [0, 2, 4]  # callbacks of the rolled-back calls never ran
            assert [e[4] for e in a.errors()] == [2, 4, 6]  # ref_seq of channels 1, 3, 5
        finally:
            await a.close()
            await b.close()

    run(main())


def test_store_failure_is_not_acknowledged_and_the_message_comes_again(tmp_path, monkeypatch):
    real = outbox.set_last_in
    fail = [1]

    def flaky(db, link, seq):
        if fail[0]:
            fail[0] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        real(db, link, seq)

    monkeypatch.setattr(outbox, "set_last_in", flaky)

    async def main():
        a, b = await pair(tmp_path)
        try:
            a.send("to-b", [1, 2, 3])
            await wait_until(lambda: b.received() == [1, 2, 3], "applied after the failure")
            await wait_until(lambda: a.pending("to-b") == 0, "acked")
            assert fail == [0]
            assert b.mgr.status("from-a")["connects"] == 2  # the failure closed the connection
            assert a.errors() == []  # not the peer's fault: no Error
        finally:
            await a.close()
            await b.close()

    run(main())


def test_failing_handler_on_an_error_does_not_answer(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        try:
            calls = []

            def refuse_all(db, link, msg):
                calls.append(msg.name)
                raise AmikoError("no")

            b.mgr.handler = refuse_all
            with a.store.transaction() as db:
                outbox.enqueue(db, "to-b", links.error_message(9, "an error from a"))
            a.mgr.kick("to-b")
            await wait_until(lambda: a.pending("to-b") == 0, "acked")
            with b.store.read() as db:
                assert outbox.last_in(db, "from-a") == 1
                assert outbox.pending_count(db, "from-a") == 0  # no Error answering the Error
            assert calls == ["Error"]
        finally:
            await a.close()
            await b.close()

    run(main())


def test_reconnect_with_backoff_when_listener_comes_back(tmp_path):
    async def main():
        b = Peer(tmp_path, "b", links_known=["from-a"])
        await b.listen()
        port = b.port
        await b.close()  # nobody listens on port now
        a = Peer(tmp_path, "a")
        b = Peer(tmp_path, "b2", identity=b.identity, links_known=["from-a"])
        b.pin("from-a", a.identity.pubkey)
        b.port = port
        a.send("to-b", [1, 2, 3])
        a.mgr.connect("to-b", b.url("from-a"))
        try:
            await wait_until(lambda: a.mgr.status("to-b")["failures"] >= 4, "failed dials")
            st = a.mgr.status("to-b")
            assert not st["connected"] and st["last_error"].startswith("dial 127.0.0.1:%d" % port)
            assert 0 < st["backoff"] <= 0.2
            await b.listen()
            await wait_until(lambda: b.received() == [1, 2, 3], "delivered once the listener is back")
            assert a.mgr.status("to-b")["connected"] and a.mgr.status("to-b")["last_error"] is None
            # the responder restarts: the initiator redials
            await b.restart()
            a.send("to-b", [4])
            await wait_until(lambda: b.received() == [1, 2, 3, 4], "delivered after the responder restart")
            assert a.mgr.status("to-b")["reconnects"] >= 1
        finally:
            await a.close()
            await b.close()

    run(main())


def test_responder_does_not_dial_without_callback(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        try:
            await a.close()
            await wait_until(lambda: not b.mgr.is_connected("from-a"), "disconnected")
            assert b.mgr._links["from-a"].dialer is None
            with b.store.read() as db:
                assert channels.get_link(db, "from-a")["remote_url"] is None
        finally:
            await b.close()

    run(main())


def test_both_sides_dialing_converge_on_one_connection(tmp_path):
    async def main():
        a = Peer(tmp_path, "a", links_known=["to-b"], url_fn=True)
        b = Peer(tmp_path, "b", links_known=["from-a"])
        await a.listen()
        await b.listen()
        a.mgr.connect("to-b", b.invite("from-a"))
        try:
            # b learns a's callback URL and dials it too whenever the link is down
            await wait_until(lambda: b.mgr._links.get("from-a") and b.mgr._links["from-a"].dialer, "b dials back")
            with b.store.read() as db:
                assert channels.get_link(db, "from-a")["remote_url"] == a.url("to-b")
            sent = 0
            for k in range(4):
                a.send("to-b", range(sent, sent + 50))
                b.send("from-a", range(1000 + sent, 1000 + sent + 50))
                sent += 50
                (b if k % 2 else a).mgr.disconnect("from-a" if k % 2 else "to-b")
                await wait_until(lambda: a.mgr.is_connected("to-b") and b.mgr.is_connected("from-a"), "up again")
            await wait_until(lambda: len(b.received()) == sent and len(a.received()) == sent, "delivered", 20)
            _assert_exactly_once(b, range(sent))
            _assert_exactly_once(a, range(1000, 1000 + sent))
            # one connection per side, the same one: its initiator is the lower key
            await wait_until(lambda: a.mgr._links["to-b"].conn and b.mgr._links["from-a"].conn, "settled")
            ca, cb = a.mgr._links["to-b"].conn, b.mgr._links["from-a"].conn
            assert ca.initiator_key == cb.initiator_key
            assert (ca.direction == "out") == (cb.direction == "in")
        finally:
            await a.close()
            await b.close()

    run(main())


def test_backoff_delay():
    rnd = random.Random(1)
    delays = [links.backoff_delay(k, 0.1, 5.0, rnd.random) for k in range(1, 12)]
    for k, d in enumerate(delays, start=1):
        full = min(5.0, 0.1 * 2 ** (k - 1))
        assert full / 2 <= d <= full
    assert links.backoff_delay(10**6, 0.1, 5.0, lambda: 0.999) <= 5.0
    assert links.backoff_delay(1, 0.1, 5.0, lambda: 0.0) == 0.05


def test_clean_reason():
    assert links.clean_reason("a\x00b\nc") == "a b c"
    assert len(links.clean_reason("\u20ac" * 300).encode()) <= links.MAX_REASON
    assert links.clean_reason("") == "error"
    m.Message(m.ERROR, {"code": 1, "reason": links.clean_reason("x\x9f" * 500)})


# ---- who may link: invitations (issue 11: the first to connect no longer wins the link)


async def _refused(peer, link, what):
    await wait_until(lambda: peer.mgr.status(link)["failures"] >= 1, what)
    st = peer.mgr.status(link)
    assert not st["connected"], st
    return st["last_error"]


def test_unpinned_link_needs_an_invitation(tmp_path):
    """A stranger who knows b's URL (key and link name) but has no invitation is refused;
    the real peer then links with the invitation b issued."""
    async def main():
        b = Peer(tmp_path, "b", links_known=["dave"])
        await b.listen()
        stranger = Peer(tmp_path, "stranger")
        dave = Peer(tmp_path, "dave")
        try:
            stranger.mgr.connect("to-b", b.url("dave"))  # no invitation at all
            err = await _refused(stranger, "to-b", "stranger refused")
            assert "peer refused" in err and "no pinned peer key" in err and "code 5" in err
            assert not b.pinned("dave") and "refused" in b.mgr.status("dave")["last_error"]
            url = b.invite("dave")
            dave.mgr.connect("to-b", url)
            await wait_until(lambda: dave.mgr.is_connected("to-b") and b.mgr.is_connected("dave"), "dave linked")
            assert b.pinned("dave") == dave.identity.pubkey
            dave.send("to-b", [1])
            await wait_until(lambda: b.received("dave") == [1], "dave delivers")
            # the stranger, now holding dave's used invitation URL, is still refused
            await stranger.mgr.close()
            stranger = Peer(tmp_path, "stranger2")
            stranger.mgr.connect("to-b", url)
            err = await _refused(stranger, "to-b", "stranger refused again")
            assert "pinned" in err
            assert b.pinned("dave") == dave.identity.pubkey and b.mgr.is_connected("dave")
        finally:
            await stranger.close()
            await dave.close()
            await b.close()

    run(main())


@pytest.mark.parametrize("case", ["wrong", "used", "expired", "other-link"])
def test_bad_invitations_are_refused(tmp_path, case):
    async def main():
        b = Peer(tmp_path, "b", links_known=["dave", "erin"])
        await b.listen()
        mallory = Peer(tmp_path, "mallory")
        first = None
        try:
            if case == "wrong":
                b.invite("dave")
                url = b.url("dave", invite=bytes(32))
                why = "unknown"
            elif case == "used":
                url = b.invite("dave")
                first = Peer(tmp_path, "first")
                first.mgr.connect("to-b", url)
                await wait_until(lambda: b.mgr.is_connected("dave"), "first use")
                await first.close()
                with b.store.transaction() as db:  # the operator un-pins: the invitation stays used
                    db.execute("UPDATE links SET remote_key = NULL WHERE name = 'dave'")
                why = "already used"
            elif case == "expired":
                url = b.invite("dave", expiry=60, now=b.mgr.clock() - 61)
                why = "expired"
            else:
                url = b.invite("erin").replace("/erin?", "/dave?")  # bound to another name
                why = "unknown"
            mallory.mgr.connect("to-b", url)
            err = await _refused(mallory, "to-b", "mallory refused")
            assert "invitation refused" in err, err
            assert not b.pinned("dave")
            assert why in b.mgr.status("dave")["last_error"]
        finally:
            await mallory.close()
            await b.close()

    run(main())


def test_invitation_is_stored_only_as_an_hmac(tmp_path):
    async def main():
        b = Peer(tmp_path, "b", links_known=["dave"])
        await b.listen()
        try:
            url = b.invite("dave")
            secret = bytes.fromhex(url.split("invite=")[1])
            dump = b.store.dump()
            assert secret.hex() not in dump.lower() and secret.hex().upper() not in dump
            with b.store.read() as db:
                blobs = [bytes(r[0]) for r in db.execute("SELECT mac FROM link_invites")]
            assert len(blobs) == 1 and secret not in blobs[0] and len(blobs[0]) == 32
            # and the same secret is one use: the row says used after the link
            dave = Peer(tmp_path, "dave")
            dave.mgr.connect("to-b", url)
            # both ends: the responder installs the link before the dialer reads its answer
            await wait_until(lambda: b.mgr.is_connected("dave") and dave.mgr.is_connected("to-b"), "dave linked")
            with b.store.read() as db:
                assert db.execute("SELECT used FROM link_invites").fetchone()[0] is not None
            # the dialer stored the URL without the invitation
            with dave.store.read() as db:
                stored = channels.get_link(db, "to-b")["remote_url"]
            assert "invite" not in stored and stored.startswith("amikolink://127.0.0.1:%d/dave" % b.port)
            await dave.close()
        finally:
            await b.close()

    run(main())


def test_callback_with_another_key_is_ignored(tmp_path):
    """An authenticated peer cannot make the responder dial (and pin) some other key."""
    async def main():
        b = Peer(tmp_path, "b", links_known=["from-a"])
        await b.listen()
        a = Peer(tmp_path, "a")
        other = Identity.generate().pubkey
        a.mgr.my_link_url_fn = lambda name: "amikolink://127.0.0.1:9/x?key=%s" % other.hex()
        try:
            a.mgr.connect("to-b", b.invite("from-a"))
            await wait_until(lambda: b.mgr.is_connected("from-a"), "linked")
            with b.store.read() as db:
                assert channels.get_link(db, "from-a")["remote_url"] is None
            assert b.mgr._links["from-a"].dialer is None and b.pinned("from-a") == a.identity.pubkey
        finally:
            await a.close()
            await b.close()

    run(main())


# ---- keepalive and the idle deadline


def test_idle_link_stays_up_with_keepalives(tmp_path):
    async def main():
        a, b = await pair(tmp_path, keepalive=0.1)
        try:
            await asyncio.sleep(1.0)  # 10 keepalive periods, 3 idle deadlines, no traffic
            assert a.mgr.status("to-b")["connects"] == 1 and b.mgr.status("from-a")["connects"] == 1
            assert a.mgr.is_connected("to-b") and b.mgr.is_connected("from-a")
            a.send("to-b", [1])
            await wait_until(lambda: b.received() == [1], "still delivers")
        finally:
            await a.close()
            await b.close()

    run(main())


def test_silent_peer_is_dropped_and_redialed(tmp_path, monkeypatch, caplog):
    """A peer that stops sending anything (keepalives included) is dropped after the idle
    deadline with ERR_TIMEOUT; the dialer redials and the link works again."""
    silent = [True]
    real_send = links._send

    def send(stream, msg):  # a's keepalives and Acks vanish while `silent`
        if silent[0] and msg.type == links.ACK and stream.local_key == a.identity.pubkey:
            return
        real_send(stream, msg)

    monkeypatch.setattr(links, "_send", send)
    caplog.set_level("WARNING", logger="amiko.links")

    async def main():
        nonlocal a
        a, b = await pair(tmp_path, keepalive=0.1)
        try:
            await wait_until(lambda: b.mgr.status("from-a")["connects"] >= 2, "b dropped the silent link", 5)
            assert any("no frame from the peer within 0.3 s" in r.getMessage() for r in caplog.records)
            silent[0] = False
            a.send("to-b", [1, 2])
            await wait_until(lambda: b.received() == [1, 2] and a.pending("to-b") == 0, "delivered after the redial")
        finally:
            await a.close()
            await b.close()

    a = None
    run(main())
