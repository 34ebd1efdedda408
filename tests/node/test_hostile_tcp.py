"""Hostile peers against a real node process: plain (unencrypted) peers, garbage, oversize
frames, unknown messages, negative and huge amounts, wrong keys. A peer that does not speak
BOLT 8 is closed without a byte in answer; one that does (the real transport, then what it
likes) is refused or rejected with an Error; the node keeps serving: status answers and real
payments still go through."""

import asyncio
import json
import os
import socket

from amiko_core import codes
from amiko_core import cbor
from amiko_core import frame as frames
from amiko_core import messages as m

from amiko.node import links
from amiko.node.identity import Identity
from amiko.wire import noise
from amiko.wire.stream import StreamError, accept, connect

from amiko_testing.network import run_amiko

LINK_MSG, ACK = links.LINK_MSG, links.ACK


async def raw_exchange(port, data, timeout=10):
    """Plain bytes on a plain TCP connection: (bytes received, closed by the node?)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    return got, True
                got += chunk
    except TimeoutError:
        return got, False
    except ConnectionError:
        return got, True
    finally:
        writer.close()


async def noise_exchange(port, key, frames_, timeout=10, max_frame=noise.MAX_MESSAGE, identity=None):
    """frames_ (bytes of frames, maybe invalid ones) over a BOLT 8 stream pinned to key (hex):
    (messages received, closed by the node?)."""
    stream = await connect("127.0.0.1", port, identity or Identity.generate(), bytes.fromhex(key), timeout=10,
                           max_frame=max_frame)
    try:
        for fr in frames_:
            stream.send_plaintext(fr)
        got = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    got.append(await stream.recv_message())
        except TimeoutError:
            return got, False
        except StreamError:
            return got, True
    finally:
        stream.close()


def errors_in(got):
    return [x for x in got if x.type == m.ERROR]


def header(mtype, length, version=1):
    h = bytearray(b"\xa5\x4b" + bytes([version, mtype, length >> 8, length & 0xFF]))
    h.append(frames.crc8(h))
    return bytes(h)


def test_garbage_oversize_and_unknown_first_frames(net):
    a = net.node("a", meeting_points=["mp-a"])
    b = net.node("b")
    net.connect(a, b)
    net.deposit(b, a, 1000)

    async def scenario():
        # plain bytes: an HTTP request, random bytes, plain amiko frames (the old protocol), a
        # header announcing 65 KiB: closed without a byte in answer (no BOLT 8 handshake)
        plain = [b"GET / HTTP/1.0\r\n\r\n", os.urandom(20000), b"\xa5\x4b" * 3000,
                 header(m.CONNECT_LINK, 0xFFFF) + b"\0" * 100,
                 m.to_frame(m.Message(m.CONNECT_LINK, {"link": "b", "key": Identity.generate().pubkey})),
                 m.to_frame(m.Message(m.PAY, {"id": "x"}))]
        for junk in plain:
            got, closed = await raw_exchange(a.port, junk)
            assert closed and got == b"", (junk[:20], got)
        # through the real transport: a message announcing more than the node's max frame
        got, closed = await noise_exchange(a.port, a.key, [frames.encode(m.CONNECT_LINK, bytes(5000), max_frame=8192)])
        assert closed and got == []
        # a well-formed frame of an unknown type, and one of a known but wrong type
        for mtype in (99, m.LOCK, m.RECEIPT, LINK_MSG):
            got, closed = await noise_exchange(a.port, a.key, [frames.encode(mtype, cbor.dumps({1: 1}))])
            assert closed and errors_in(got), (mtype, got)
        # a bad CRC, an unsupported version
        good = m.to_frame(m.Message(m.PAY, {"id": "x"}))
        got, closed = await noise_exchange(a.port, a.key, [good[:-1] + bytes([good[-1] ^ 1])])
        assert closed and "CRC" in errors_in(got)[0].reason
        got, closed = await noise_exchange(a.port, a.key, [frames.encode(m.PAY, m.encode(m.Message(m.PAY, {"id": "x"})), version=9)])
        assert closed and errors_in(got)
        # a ConnectLink with garbage fields, with an unknown link name, with another key
        bad_hello = frames.encode(m.CONNECT_LINK, cbor.dumps({1: "b", 2: b"\x02" * 33, 4: os.urandom(32)}))
        got, closed = await noise_exchange(a.port, a.key, [bad_hello])
        assert closed and errors_in(got)
        hello = m.to_frame(m.Message(m.CONNECT_LINK, {"link": "nosuchlink", "key": Identity.generate().pubkey}))
        got, closed = await noise_exchange(a.port, a.key, [hello])
        assert closed and errors_in(got)[0].code == codes.AUTH  # not the handshake's key
        ident = Identity.generate()
        hello = m.to_frame(m.Message(m.CONNECT_LINK, {"link": "nosuchlink", "key": ident.pubkey}))
        got, closed = await noise_exchange(a.port, a.key, [hello], identity=ident)
        assert closed and "no link" in errors_in(got)[0].reason
    asyncio.run(scenario())
    # 100 idle connections at once do not stop the node from serving
    conns = [socket.create_connection(("127.0.0.1", a.port)) for _ in range(100)]
    try:
        assert a.status()["node"]["name"] == "a"
        assert a.link_status("b")["connected"]
        assert net.pay(b, a, 10).returncode == 0
    finally:
        for s in conns:
            s.close()


def test_hostile_payment_link(net):
    a = net.node("a", meeting_points=["mp-a"])
    b = net.node("b")
    net.connect(a, b)
    net.deposit(b, a, 1000)

    async def scenario():
        # Pay for an unknown payment id: a Cancel, then closed
        msgs, closed = await noise_exchange(a.port, a.key, [m.to_frame(m.Message(m.PAY, {"id": "unknown"}))])
        assert closed and msgs[0].name == "Cancel" and "unknown payment" in msgs[0].reason
        # Pay, then garbage: closed, and that request can no longer be paid
        url = a.cli("request", 5)["url"]
        pid = url.rsplit("/", 1)[1].split("?")[0]
        got, closed = await noise_exchange(a.port, a.key, [m.to_frame(m.Message(m.PAY, {"id": pid})), os.urandom(50)])
        assert closed and got[0].name == "Receipt"
        # Pay, Confirm with a meeting point that was not offered, oversize frame: closed
        url2 = a.cli("request", 6)["url"]
        pid2 = url2.rsplit("/", 1)[1].split("?")[0]
        data = [m.to_frame(m.Message(m.PAY, {"id": pid2})),
                m.to_frame(m.Message(m.CONFIRM, {"id": pid2, "meeting_point": "elsewhere"})),
                header(m.CONFIRM, 0xFFF0)]
        got, closed = await noise_exchange(a.port, a.key, data)
        assert closed
        return url, url2

    url, url2 = asyncio.run(scenario())
    # the hostile payer never confirmed: the requests stay payable, and a real payer pays them
    for u in (url, url2):
        r = b.run("pay", u, "--yes")
        assert r.returncode == 0 and r.json["result"] == "committed", r
    assert net.pay(b, a, 10).returncode == 0
    net.quiet()
    assert a.status()["balance"] == 21 and b.status()["balance"] == 979


class EvilPeer:
    """A peer that links as `name` through the real transport (with the invitation of the
    node's URL, if any), then sends what it likes."""

    def __init__(self, port, name, node_key, identity=None, invite=None):
        self.port, self.name, self.node_key = port, name, bytes.fromhex(node_key)
        self.identity = identity or Identity.generate()
        self.invite = bytes.fromhex(invite) if invite else None

    async def connect(self):
        self.stream = await connect("127.0.0.1", self.port, self.identity, self.node_key, timeout=10)
        await links.initiator_handshake(self.stream, self.name, invite=self.invite)

    def send(self, seq, mtype, body):
        self.stream.send(m.to_frame(m.Message(LINK_MSG, {"seq": seq, "msg_type": mtype, "body": body})))

    async def next_msg(self, timeout=10):
        return await self.stream.recv_message(timeout=timeout)

    async def expect(self, pred, what, timeout=10):
        """Read messages until pred(msg) holds; returns it (ignores others)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.next_msg(timeout)
                if pred(msg):
                    return msg

    async def expect_rejected(self, seq):
        """The node acknowledges seq and answers it with an Error (inside a LinkMsg)."""
        err = await self.expect(lambda x: x.type == LINK_MSG and x.msg_type == m.ERROR
                                and m.decode(m.ERROR, x.body).ref_seq == seq, "Error for seq %d" % seq)
        return m.decode(m.ERROR, err.body)


def test_hostile_link_peer_messages_are_rejected(net):
    a = net.node("a", meeting_points=["mp-a"])
    b = net.node("b")
    invite = a.cli("link", "evil", "--credit-limit", "1000")["url"].split("invite=")[1]
    max_amount = m.MAX_AMOUNT

    async def scenario():
        peer = EvilPeer(a.port, "evil", a.key, invite=invite)
        await peer.connect()
        bad = [
            (99, b"\xa0"),  # unknown message type
            (m.DEPOSIT, cbor.dumps({1: 5, 2: -5})),  # negative amount
            (m.DEPOSIT, cbor.dumps({1: 5, 2: 0})),  # zero
            (m.DEPOSIT, cbor.dumps({1: 5, 2: max_amount + 1})),  # over the maximum
            (m.DEPOSIT, cbor.dumps({1: 5, 2: 2 ** 64 - 1})),  # huge
            (m.DEPOSIT, cbor.dumps({1: 5, 2: 10, 9: 1})),  # unknown field
            (m.DEPOSIT, b"\xff\x00garbage"),  # not CBOR
            (m.MAKE_ROUTE, m.encode(m.Message(m.MAKE_ROUTE, {"txid": b"\1" * 20, "side": 0, "amount": 10,
                                                              "meeting_point": "mp-a", "channel": 77}))),  # no such channel
            (m.LOCK, m.encode(m.Message(m.LOCK, {"txid": b"\2" * 20, "side": 0, "amount": 10}))),  # unknown tx
            (m.SETTLE_COMMIT, m.encode(m.Message(m.SETTLE_COMMIT, {"txid": b"\3" * 20, "side": 1, "token": b"\4" * 32}))),
            (m.WITHDRAW, m.encode(m.Message(m.WITHDRAW, {"channel": 123}))),  # no such channel
            (m.PAY, m.encode(m.Message(m.PAY, {"id": "x"}))),  # a payment-link message on a node link
        ]
        for seq, (mtype, body) in enumerate(bad, 1):
            peer.send(seq, mtype, body)
            err = await peer.expect_rejected(seq)
            assert err.reason, err
        seq = len(bad)
        # a top-level frame of an unknown type: an Error frame, the link stays up
        peer.stream.send(frames.encode(99, b"\xa0"))
        err = await peer.expect(lambda x: x.type == m.ERROR, "top-level Error")
        assert err.ref_type == 99
        # a valid deposit is applied; sent twice (a resend) it is applied once
        seq += 1
        deposit = m.encode(m.Message(m.DEPOSIT, {"channel": 5, "amount": 1000}))
        peer.send(seq, m.DEPOSIT, deposit)
        await peer.expect(lambda x: x.type == ACK and x.seq == seq, "Ack of the deposit")
        peer.send(seq, m.DEPOSIT, deposit)
        await peer.expect(lambda x: x.type == ACK and x.seq == seq, "Ack of the resent deposit")
        # a deposit on the same channel number again: rejected (no double funding)
        peer.send(seq + 1, m.DEPOSIT, m.encode(m.Message(m.DEPOSIT, {"channel": 5, "amount": 1000})))
        await peer.expect_rejected(seq + 1)
        # a gap in the sequence numbers: the connection is closed
        peer.send(seq + 5, m.DEPOSIT, deposit)
        while True:  # the gap: an Error, then the node closes
            try:
                await peer.next_msg()
            except StreamError as e:
                assert e.code == "closed", e
                break
        return peer

    asyncio.run(scenario())
    s = a.status()
    evil = [ch for ch in s["channels"] if ch["link"] == "evil"]
    assert len(evil) == 1 and evil[0]["remote"] == 1000 and evil[0]["local"] == 0 and evil[0]["id"] == 5
    assert s["balance"] == 0
    # the node still serves a real link and payment
    net.connect(a, b)
    net.deposit(b, a, 500)
    assert net.pay(b, a, 10).returncode == 0


def test_wrong_keys_are_refused(net):
    a = net.node("a", meeting_points=["mp-a"])
    b = net.node("b")
    net.connect(a, b)

    async def impostor_initiator():
        # someone else claims to be b on a's link "b" (whose key is pinned): refused
        peer = EvilPeer(a.port, "b", a.key)
        try:
            await peer.connect()
            return "linked", False
        except links.LinkError as e:
            return e.reason, True

    got, closed = asyncio.run(impostor_initiator())
    assert closed and "pinned" in got, got
    assert a.link_status("b")["connected"]

    # a node URL with the right host:port but another key: a refuses to link (and says so)
    c = net.node("c")
    url = c.cli("link", "a")["url"]
    wrong = url.split("?key=")[0] + "?key=" + b.key
    r = a.run("link", "c", wrong, "--timeout", "2")
    assert r.returncode == 2 and "not connected" in r.json["error"]["message"]
    net.wait(lambda: a.link_status("c")["last_error"], 10, "a's reason for refusing c")
    assert not a.link_status("c")["connected"] and not c.link_status("a")["connected"]
    assert "key" in a.link_status("c")["last_error"]

    # a fake BOLT 8 server at some port that holds a key other than the one in the URL
    async def fake_server_test():
        fake = Identity.generate()
        seen = []

        async def serve(reader, writer):
            try:
                await accept(reader, writer, fake, timeout=5)
                seen.append("handshake")
            except StreamError as e:
                seen.append(e.code)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = "amikolink://127.0.0.1:%d/a?key=%s" % (port, b.key)
        proc = await asyncio.create_subprocess_exec(*run_args(a, ["link", "mallory", url, "--timeout", "2"]),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        server.close()
        return proc.returncode, json.loads(out), seen

    rc, out, seen = asyncio.run(fake_server_test())
    assert rc == 2 and "not connected" in out["error"]["message"]
    assert seen and "handshake" not in seen  # the node did try; the handshake cannot complete
    assert not a.link_status("mallory")["connected"]
    net.wait(lambda: "is not the pinned key" in (a.home / "node.log").read_text(errors="replace"), 10,
             "a's log to show the refused handshake")
    assert a.link_status("b")["connected"] and a.status()["node"]["name"] == "a"


def run_args(node, args):
    from amiko_testing.network import amiko_argv

    return amiko_argv() + [args[0], "--home", str(node.home), "--json"] + args[1:]


def test_hostile_control_requests(net):
    a = net.node("a", meeting_points=["mp-a"])
    sock_path = str(a.home / "control.sock")

    def exchange(lines):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(sock_path)
        f = s.makefile("rwb")
        out = []
        for line in lines:
            f.write(line + b"\n")
            f.flush()
            out.append(json.loads(f.readline()))
        s.close()
        return out

    def rpc(body):
        return b'{"jsonrpc": "2.0", ' + body[1:]

    replies = exchange([
        b"not json",
        b"[1, 2]",
        rpc(b'{"id": 1}'),
        rpc(b'{"id": 2, "method": "nosuch"}'),
        rpc(b'{"id": 3, "method": "request", "params": {"amount": -5}}'),
        rpc(b'{"id": 4, "method": "request", "params": {"amount": 2100000000000001}}'),
        rpc(b'{"id": 5, "method": "request", "params": {"amount": true}}'),
        rpc(b'{"id": 6, "method": "request", "params": {"amount": 1.5}}'),
        rpc(b'{"id": 7, "method": "deposit", "params": {"link": "x", "amount": 99999999999999999999999}}'),
        rpc(b'{"id": 8, "method": "request", "params": {"amount": 5, "receipt": "' + b"x" * 600 + b'"}}'),
        rpc(b'{"id": 9, "method": "pay_confirm", "params": {"handle": "nope"}}'),
        rpc(b'{"id": 10, "method": "status", "params": []}'),
    ])
    assert all("error" in r and r["jsonrpc"] == "2.0" for r in replies), [r for r in replies if "error" not in r]
    codes = [r["error"]["data"]["reason"] for r in replies]
    assert codes[:4] == ["bad_request", "bad_request", "bad_request", "unknown_method"]
    assert [r["error"]["code"] for r in replies[:4]] == [-32700, -32600, -32600, -32601]
    assert all(c == "invalid" for c in codes[4:8]), codes
    assert replies[10]["error"]["data"]["reason"] == "not_found"
    assert replies[11]["error"]["code"] == -32602  # params must be named (an object)
    # an over-long request line is refused, the node keeps serving
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(b"x" * 200000 + b"\n")
    s.settimeout(10)
    assert b"bad_request" in s.recv(4096)
    s.close()
    assert a.status()["node"]["name"] == "a"
    r = run_amiko(["request", "--home", a.home, "5"])
    assert r.returncode == 0 and r.stdout.startswith("amikopay://")
