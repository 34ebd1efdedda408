"""The issue's interop contract with a real `amiko node` process: Core Lightning's pyln-proto
(pyln.proto.wire) completes a BOLT 8 handshake with the node's one listener, pinned to the
node key that `amiko init` printed, and the node's answer to a frame comes back encrypted.
A pyln client that expects another key gets no act two (the node hangs up)."""

import os

import pytest
from pyln.proto import wire as pyln

from amiko_core import frame, messages
from amiko.node.identity import ORDER
from amiko_testing.network import Net


def pyln_key():
    while True:
        secret = int.from_bytes(os.urandom(32), "big")
        if 0 < secret < ORDER:
            return pyln.PrivateKey(secret.to_bytes(32, "big"))


@pytest.fixture
def node(tmp_path):
    net = Net(tmp_path)
    try:
        yield net.node("a")
    finally:
        net.close()


def test_pyln_completes_a_handshake_with_amiko_node(node):
    conn = pyln.connect(pyln_key(), bytes.fromhex(node.key), "127.0.0.1", node.port)
    conn.connection.settimeout(20)
    try:
        assert conn.remote_pubkey.serializeCompressed().hex() == node.key
        # A first frame the node does not serve: it answers (encrypted) before it hangs up.
        conn.send_message(frame.encode(200, b""))
        reply = messages.from_frame(frame.decode_one(conn.read_message()))
        assert reply.type in (messages.ERROR, messages.CANCEL), reply
    finally:
        conn.connection.close()


def test_pyln_with_another_key_gets_no_act_two(node):
    other = pyln_key().public_key().serializeCompressed()
    with pytest.raises((ValueError, OSError)):  # pyln: short read of act two
        conn = pyln.connect(pyln_key(), other, "127.0.0.1", node.port)
        conn.connection.settimeout(20)
        conn.read_message()
