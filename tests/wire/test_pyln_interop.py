"""Interop with an independent BOLT 8: Core Lightning's pyln-proto (pyln.proto.wire).

Real sockets on 127.0.0.1 both ways: our connect() against pyln's LightningServerSocket,
pyln's connect() against our accept(); more than 1001 messages each way so both keys
rotate twice. pyln carries whatever bytes; we send amiko frames and it echoes them.
"""

import asyncio
import os
import socket
import threading

import pytest
from pyln.proto import wire as pyln

from amiko_core import frame
from amiko.node.identity import ORDER, Identity
from amiko.wire import stream as st
from wirekit import Server

ROUNDS = 1100


def key_pair():
    while True:
        secret = int.from_bytes(os.urandom(32), "big")
        if 0 < secret < ORDER:
            return Identity(secret), pyln.PrivateKey(secret.to_bytes(32, "big"))


def nodelay(conn):
    # pyln writes a message as two send() calls: without this, Nagle and delayed ACKs
    # cost ~40 ms per message on loopback.
    conn.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def pyln_server(priv):
    sock = pyln.LightningServerSocket(priv)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(30)
    return sock


def test_our_connect_with_pyln_server():
    ours, _ = key_pair()
    theirs_ident, theirs = key_pair()
    server = pyln_server(theirs)
    port = server.getsockname()[1]
    box = {}

    def serve():
        try:
            conn, _addr = server.accept()
            box["remote"] = conn.remote_pubkey.serializeCompressed()
            nodelay(conn)
            for _ in range(ROUNDS):
                conn.send_message(conn.read_message())
            conn.send_message(b"raw bytes, not a frame")
            conn.connection.close()
        except Exception as e:  # reported by the test below
            box["error"] = e
        finally:
            server.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    async def scenario():
        s = await st.connect("127.0.0.1", port, ours, theirs_ident.pubkey, timeout=20)
        assert s.remote_key == theirs_ident.pubkey
        for i in range(ROUNDS):
            body = i.to_bytes(4, "big") * (i % 7)
            s.send(frame.encode(i % 256, body))
            fr = await s.recv(timeout=20)
            assert (fr.type, fr.body) == (i % 256, body)
        assert await s.recv_plaintext(timeout=20) == b"raw bytes, not a frame"
        with pytest.raises(st.StreamClosed):
            await s.recv(timeout=20)

    asyncio.run(scenario())
    t.join(30)
    assert "error" not in box, box.get("error")
    assert box["remote"] == ours.pubkey


def test_pyln_connect_with_our_accept():
    ours, _ = key_pair()
    _, client_priv = key_pair()
    client_pub = client_priv.public_key().serializeCompressed()

    def client(port):
        conn = pyln.connect(client_priv, ours.pubkey, "127.0.0.1", port)
        conn.connection.settimeout(30)
        nodelay(conn)
        got = []
        for i in range(ROUNDS):
            fr = frame.encode(7, i.to_bytes(2, "big"))
            conn.send_message(fr)
            got.append(conn.read_message() == fr)
        conn.send_message(b"not a frame at all")
        try:
            tail = conn.connection.recv(1)  # we refuse it and close
        except OSError:
            tail = b""
        conn.connection.close()
        return got, tail

    async def scenario():
        async with Server(ours) as srv:
            job = asyncio.create_task(asyncio.to_thread(client, srv.port))
            s = await srv.next(timeout=30)
            assert isinstance(s, st.Stream), s
            assert s.remote_key == client_pub
            for _ in range(ROUNDS):
                fr = await s.recv(timeout=20)
                s.send(frame.encode(fr.type, fr.body))
            with pytest.raises(st.StreamError) as e:
                await s.recv(timeout=20)
            assert e.value.code == "frame"
            got, tail = await job
            assert got == [True] * ROUNDS
            assert tail == b""

    asyncio.run(scenario())


def test_pyln_with_the_wrong_key_is_refused_by_accept():
    ours, _ = key_pair()
    other, _ = key_pair()
    _, client_priv = key_pair()

    def client(port):
        try:
            pyln.connect(client_priv, other.pubkey, "127.0.0.1", port)
        except (ValueError, OSError) as e:  # pyln: short read of act two, we closed
            return e
        return None

    async def scenario():
        async with Server(ours) as srv:
            job = asyncio.create_task(asyncio.to_thread(client, srv.port))
            refused = await srv.next(timeout=30)
            assert isinstance(refused, st.StreamError) and refused.code == "auth"
            assert await job is not None

    asyncio.run(scenario())


def test_our_connect_with_the_wrong_key_to_pyln_fails_auth():
    ours, _ = key_pair()
    _, theirs = key_pair()
    wrong, _ = key_pair()
    server = pyln_server(theirs)
    port = server.getsockname()[1]

    def serve():
        try:
            conn, _ = server.accept()  # pyln does not check act one's MAC; it answers
            conn.connection.close()
        except Exception:
            pass
        finally:
            server.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    async def scenario():
        with pytest.raises(st.StreamError) as e:
            await st.connect("127.0.0.1", port, ours, wrong.pubkey, timeout=20)
        assert e.value.code == "auth"

    asyncio.run(scenario())
    t.join(30)
