"""A hostile client for a real node's endpoints, through the real transport (amiko.wire.stream):
it completes a genuine BOLT 8 handshake (fresh ephemeral identity, pinned to the node key) and
then sends what it likes: frames, raw plaintexts, ciphertexts replayed or out of order."""

import socket
import time

from amiko_core import messages as m

from amiko.node.identity import Identity
from amiko.wire import stream as streams


def open_stream(port, key, max_frame=4096, identity=None, timeout=10):
    """A BlockingStream to 127.0.0.1:port pinned to key (hex or bytes)."""
    key = bytes.fromhex(key) if isinstance(key, str) else key
    return streams.connect_blocking("127.0.0.1", port, identity or Identity.generate(), key, timeout, max_frame)


def read_all(s, timeout=10):
    """(messages until the node closes, closed?) within timeout seconds in total."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got, False
        try:
            got.append(m.from_frame(s.recv(timeout=left)))
        except streams.StreamClosed:
            return got, True
        except streams.StreamError as e:
            if e.code == "timeout":
                return got, False
            return got, True


def exchange(port, key, *frames, timeout=10, max_frame=4096):
    """Send frames (bytes, or Messages) over a fresh stream; (messages received, closed?)."""
    s = open_stream(port, key, max_frame=max_frame)
    try:
        for fr in frames:
            if isinstance(fr, m.Message):
                s.send_message(fr)
            else:
                s.send_plaintext(fr)
        return read_all(s, timeout)
    finally:
        s.close()


def ciphertext(s, plaintext):
    """The next BOLT 8 message of s for plaintext, not sent (the cipher's nonce moves on)."""
    return s._enc.encrypt(plaintext)


def send_raw(s, data):
    s._sock.sendall(data)


def plain_exchange(port, data, timeout=10):
    """Unencrypted bytes on a plain TCP connection: (bytes received, closed?)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                return got, False
            except ConnectionError:
                return got, True
            if not chunk:
                return got, True
            got += chunk
        return got, False
