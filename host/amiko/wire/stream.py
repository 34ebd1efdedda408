"""The framed, encrypted stream every TCP connection of the project runs on (BOLT 8).

`connect()` (initiator: knows the responder's static key) and `accept()` (responder: learns
the initiator's) run the handshake of amiko.wire.noise under one deadline and return a
Stream. The plaintext of each BOLT 8 message is exactly one amiko frame
(amiko_core.frame), at most `max_frame` bytes: a larger announced length is refused from
its 18-byte header, before the body is read, so what a peer makes us hold is bounded (one
message plus one read of READ_SIZE bytes). `recv_batch()` returns the next frame and the
complete ones already received, for callers that apply a batch in one transaction (`error`:
what ended the stream after them, if anything did).

Errors are StreamError(reason, code) with a one-line reason (no key material) and code
"auth" (handshake failed: wrong key, bad version, bad MAC), "timeout", "mac" (a message
failed authentication: tampered, replayed, reordered), "frame" (the plaintext is not one
valid frame / message), "oversize", "closed" (StreamClosed: the peer closed, also mid-message,
or the socket failed). Every StreamError from recv() except "timeout" leaves the stream
aborted; a recv() timeout keeps it usable (a half-read message is finished by the next
recv()). One task reads a Stream at a time; send() never awaits.

`recv_plaintext()` / `send_plaintext()` carry raw BOLT 8 plaintexts (for a peer whose
messages are not amiko frames, e.g. the interop tests with pyln-proto);
`decode_plaintext()` is the check recv() applies to one. `recv(timeout=0)` returns a frame
already received and raises "timeout" at once otherwise.

`connect_blocking()` is the same initiator on a plain blocking socket for tools that are not
asyncio (BlockingStream).
"""

import asyncio
import socket
import time

from amiko_core import frame, messages
from amiko_core.errors import AmikoError, DecodeError, EncodeError
from amiko.wire import noise
from amiko.wire.noise import NoiseError

HANDSHAKE_TIMEOUT = 10.0
CLOSE_GRACE = 2.0
READ_SIZE = 65536
DEFAULT_MAX_FRAME = frame.DEFAULT_MAX_FRAME


class StreamError(AmikoError):
    """A connection failed; reason is one line, code one of the short tags of the module doc."""

    def __init__(self, reason, code):
        super().__init__(reason)
        self.code = code


class StreamClosed(StreamError):
    """The connection is closed (by the peer, by us, or the socket failed)."""

    def __init__(self, reason, code="closed"):
        super().__init__(reason, code)


def _check_max_frame(max_frame):
    if not isinstance(max_frame, int) or not frame.OVERHEAD <= max_frame <= noise.MAX_MESSAGE:
        raise ValueError("stream: max_frame must be an int in %d..%d, got %r"
                         % (frame.OVERHEAD, noise.MAX_MESSAGE, max_frame))


def _peer_name(writer, default="?"):
    try:
        addr = writer.get_extra_info("peername")
    except Exception:
        addr = None
    if not addr:
        return default
    host, port = addr[0], addr[1]
    return ("[%s]:%s" if ":" in str(host) else "%s:%s") % (host, port)


def _abort(writer):
    try:
        writer.transport.abort()
    except Exception:  # already gone
        pass


def _frame_of(msg, max_frame, peer):
    """The frame bytes of msg; StreamError("oversize") if it does not fit max_frame."""
    try:
        return messages.to_frame(msg, max_frame)
    except EncodeError as e:
        raise StreamError("%s: cannot send %s: %s" % (peer, msg, e.reason), "oversize") from None


def decode_plaintext(plain, max_frame, peer):
    """The one amiko frame a plaintext must be, or StreamError(code="frame")."""
    try:
        return frame.decode_one(plain, max_frame)
    except DecodeError as e:
        raise StreamError("%s: message is not one valid frame: %s" % (peer, e.reason), "frame") from None


class Stream:
    """An authenticated, encrypted connection carrying amiko frames (see the module doc)."""

    def __init__(self, reader, writer, encrypter, decrypter, local_key, remote_key, peer, max_frame):
        self._reader = reader
        self._writer = writer
        self._enc = encrypter
        self._dec = decrypter
        self.local_key = local_key
        self.remote_key = remote_key
        self.peer = peer
        self.max_frame = max_frame
        self._buf = bytearray()  # received, not yet decrypted: under one message + READ_SIZE
        self._error = None  # the StreamError that ended the stream, re-raised by recv()
        self._closed = False

    # receiving

    def _fail(self, err):
        self._error = err
        self._closed = True
        _abort(self._writer)
        raise err

    def _take_ready(self):
        """One plaintext if the buffer holds all of it, else None; a bad one fails the stream."""
        buf = self._buf
        try:
            if self._dec.body_size() is None:
                if len(buf) < noise.HEADER_SIZE:
                    return None
                self._dec.decrypt_length(bytes(buf[: noise.HEADER_SIZE]))
                del buf[: noise.HEADER_SIZE]
            need = self._dec.body_size()
            if len(buf) < need:
                return None
            plain = self._dec.decrypt_body(bytes(buf[:need]))
            del buf[:need]
            return plain
        except NoiseError as e:
            self._fail(StreamError("%s: %s" % (self.peer, e.reason), e.code))

    async def _read_more(self):
        try:
            data = await self._reader.read(READ_SIZE)
        except (OSError, ConnectionError) as e:
            self._fail(StreamClosed("%s: connection lost: %s" % (self.peer, e.strerror or e)))
        if data:
            self._buf += data
            return
        if not self._buf and self._dec.body_size() is None:
            self._fail(StreamClosed("%s closed the connection" % self.peer))
        if self._dec.body_size() is None:
            got, want, what = len(self._buf), noise.HEADER_SIZE, "length header"
        else:
            got, want, what = len(self._buf), self._dec.body_size(), "body"
        self._fail(StreamClosed("%s closed the connection in the middle of a message (%d of %d bytes of its %s)"
                                % (self.peer, got, want, what)))

    async def _read_plaintext(self):
        while True:
            plain = self._take_ready()
            if plain is not None:
                return plain
            await self._read_more()

    async def recv_plaintext(self, timeout=None):
        """The next BOLT 8 plaintext (bytes), whatever it holds."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise StreamClosed("%s: stream closed by us" % self.peer)
        if timeout is None:
            return await self._read_plaintext()
        try:
            async with asyncio.timeout(timeout):
                return await self._read_plaintext()
        except TimeoutError:
            raise StreamError("%s: no message within %.3g s" % (self.peer, timeout), "timeout") from None

    async def recv(self, timeout=None):
        """The next amiko_core.frame.Frame; StreamError (module doc) if there is none."""
        plain = await self.recv_plaintext(timeout)
        try:
            return decode_plaintext(plain, self.max_frame, self.peer)
        except StreamError as e:
            self._fail(e)

    async def recv_message(self, timeout=None):
        """recv() + amiko_core.messages.from_frame; an undecodable message is code "frame"."""
        fr = await self.recv(timeout)
        try:
            return messages.from_frame(fr)
        except DecodeError as e:
            self._fail(StreamError("%s: bad message (type %d): %s" % (self.peer, fr.type, e.reason), "frame"))

    @property
    def error(self):
        """The StreamError that ended the stream (a recv() after a recv_batch() raises it), or None."""
        return self._error

    async def recv_batch(self, timeout=None, limit=64):
        """The next frame and every further complete frame already received (up to limit),
        for a caller that applies a batch at once. If a later one is bad, the good ones are
        returned first and the next recv() raises the error."""
        out = [await self.recv(timeout)]
        while len(out) < limit:
            try:
                plain = self._take_ready()
                if plain is None:
                    break
                out.append(decode_plaintext(plain, self.max_frame, self.peer))
            except StreamError as e:
                if self._error is None:
                    self._error = e
                    self.abort()
                break
        return out

    # sending

    def send_plaintext(self, data):
        """Encrypt one plaintext of at most max_frame bytes and write it (no await)."""
        if self._closed or self._writer.is_closing():
            raise StreamClosed("%s: cannot send, the stream is closed" % self.peer)
        if len(data) > self.max_frame:
            raise StreamError("%s: refusing to send a %d-byte frame, over max frame %d"
                              % (self.peer, len(data), self.max_frame), "oversize")
        try:
            self._writer.write(self._enc.encrypt(data))
        except (OSError, ConnectionError, RuntimeError) as e:
            self._closed = True
            raise StreamClosed("%s: send failed: %s" % (self.peer, e)) from None

    def send(self, frame_bytes):
        """Send the bytes of one amiko frame."""
        self.send_plaintext(frame_bytes)

    def send_message(self, msg):
        self.send_plaintext(_frame_of(msg, self.max_frame, self.peer))

    async def drain(self):
        try:
            await self._writer.drain()
        except (OSError, ConnectionError) as e:
            self._closed = True
            raise StreamClosed("%s: connection lost: %s" % (self.peer, e.strerror or e)) from None

    def buffered(self):
        """Bytes written but not yet sent (a peer that does not read shows up here)."""
        try:
            return self._writer.transport.get_write_buffer_size()
        except Exception:
            return 0

    # closing

    def close(self):
        """Flush what was written, then close; abort if it is not flushed within CLOSE_GRACE."""
        if self._closed and self._writer.is_closing():
            return
        self._closed = True
        transport = self._writer.transport
        self._writer.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(CLOSE_GRACE, _abort_unflushed, transport)

    def abort(self):
        self._closed = True
        _abort(self._writer)

    def is_closing(self):
        return self._closed or self._writer.is_closing()

    async def wait_closed(self):
        try:
            await self._writer.wait_closed()
        except (OSError, ConnectionError):
            pass

    def __repr__(self):
        return "Stream(%s, %s)" % (self.peer, self.remote_key.hex())


def _abort_unflushed(transport):
    if transport.get_write_buffer_size():
        transport.abort()


# handshake


async def _read_act(reader, size, what, peer):
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as e:
        raise StreamClosed("handshake with %s: peer closed the connection after %d of the %d bytes of %s"
                           % (peer, len(e.partial), size, what)) from None
    except (OSError, ConnectionError) as e:
        raise StreamClosed("handshake with %s: connection lost: %s" % (peer, e.strerror or e)) from None


async def _initiator_handshake(reader, writer, ini, peer):
    writer.write(ini.act_one())
    try:
        act_two = await _read_act(reader, noise.ACT_TWO_SIZE, "act two", peer)
    except StreamClosed as e:
        # A BOLT 8 responder that does not hold the key we expect closes after act one.
        raise StreamError("%s (it does not hold key %s, or it refused us)" % (e.reason, ini.remote_key.hex()),
                          "auth") from None
    try:
        act_three = ini.read_act_two(act_two)
    except NoiseError as e:
        raise StreamError("handshake with %s failed: %s" % (peer, e.reason), "auth") from None
    writer.write(act_three)


async def _responder_handshake(reader, resp, writer, peer, phase):
    phase[0] = "act one"
    act_one = await _read_act(reader, noise.ACT_ONE_SIZE, "act one", peer)
    try:
        act_two = resp.read_act_one(act_one)
    except NoiseError as e:
        hint = " (the initiator does not know our key)" if e.code == "mac" else ""
        raise StreamError("handshake from %s refused: %s%s" % (peer, e.reason, hint), "auth") from None
    writer.write(act_two)
    phase[0] = "act three"
    act_three = await _read_act(reader, noise.ACT_THREE_SIZE, "act three", peer)
    try:
        resp.read_act_three(act_three)
    except NoiseError as e:
        raise StreamError("handshake from %s refused: %s" % (peer, e.reason), "auth") from None


async def connect(host, port, identity, remote_key, timeout=HANDSHAKE_TIMEOUT, max_frame=DEFAULT_MAX_FRAME):
    """TCP connect to host:port and run the initiator's handshake within timeout seconds."""
    _check_max_frame(max_frame)
    peer = ("[%s]:%s" if ":" in str(host) else "%s:%s") % (host, port)
    try:
        ini = noise.Initiator(identity, remote_key)
    except NoiseError:
        raise StreamError("connect to %s: the expected key is not a compressed secp256k1 public key" % peer,
                          "auth") from None
    writer = None
    phase = "TCP connect"
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except (OSError, ConnectionError) as e:
                raise StreamClosed("connect to %s failed: %s" % (peer, e.strerror or e)) from None
            phase = "act two"
            await _initiator_handshake(reader, writer, ini, peer)
    except TimeoutError:
        if writer is not None:
            _abort(writer)
        raise StreamError("handshake with %s: no %s within %.3g s" % (peer, phase, timeout), "timeout") from None
    except BaseException:
        if writer is not None:
            _abort(writer)
        raise
    enc, dec = ini.split()
    dec.max_message = max_frame
    return Stream(reader, writer, enc, dec, ini.local_key, ini.remote_key, peer, max_frame)


async def accept(reader, writer, identity, timeout=HANDSHAKE_TIMEOUT, max_frame=DEFAULT_MAX_FRAME):
    """Run the responder's handshake on an accepted connection within timeout seconds."""
    _check_max_frame(max_frame)
    peer = _peer_name(writer)
    resp = noise.Responder(identity)
    phase = ["act one"]
    try:
        async with asyncio.timeout(timeout):
            await _responder_handshake(reader, resp, writer, peer, phase)
    except TimeoutError:
        _abort(writer)
        raise StreamError("handshake from %s: no %s within %.3g s" % (peer, phase[0], timeout), "timeout") from None
    except BaseException:
        _abort(writer)
        raise
    enc, dec = resp.split()
    dec.max_message = max_frame
    return Stream(reader, writer, enc, dec, resp.local_key, resp.remote_key, peer, max_frame)


# blocking client


class BlockingStream:
    """The initiator's Stream on a blocking socket (same errors; no concurrency)."""

    def __init__(self, sock, encrypter, decrypter, local_key, remote_key, peer, max_frame):
        self._sock = sock
        self._enc = encrypter
        self._dec = decrypter
        self.local_key = local_key
        self.remote_key = remote_key
        self.peer = peer
        self.max_frame = max_frame
        self._buf = bytearray()
        self._error = None

    def _fail(self, err):
        self._error = err
        self.close()
        raise err

    def _fill(self, n, deadline, what):
        while len(self._buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamError("%s: no message within the deadline" % self.peer, "timeout")
                self._sock.settimeout(left)
            else:
                self._sock.settimeout(None)
            try:
                chunk = self._sock.recv(max(n - len(self._buf), 4096))
            except socket.timeout:
                raise StreamError("%s: no message within the deadline" % self.peer, "timeout") from None
            except OSError as e:
                self._fail(StreamClosed("%s: connection lost: %s" % (self.peer, e.strerror or e)))
            if not chunk:
                if not self._buf and what == "length header":
                    self._fail(StreamClosed("%s closed the connection" % self.peer))
                self._fail(StreamClosed("%s closed the connection in the middle of a message (%d of %d bytes of its %s)"
                                        % (self.peer, len(self._buf), n, what)))
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def recv_plaintext(self, timeout=None):
        if self._error is not None:
            raise self._error
        if self._sock is None:
            raise StreamClosed("%s: stream closed by us" % self.peer)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if self._dec.body_size() is None:
                self._dec.decrypt_length(self._fill(noise.HEADER_SIZE, deadline, "length header"))
            return self._dec.decrypt_body(self._fill(self._dec.body_size(), deadline, "body"))
        except NoiseError as e:
            self._fail(StreamError("%s: %s" % (self.peer, e.reason), e.code))

    def recv(self, timeout=None):
        plain = self.recv_plaintext(timeout)
        try:
            return decode_plaintext(plain, self.max_frame, self.peer)
        except StreamError as e:
            self._fail(e)

    def recv_message(self, timeout=None):
        fr = self.recv(timeout)
        try:
            return messages.from_frame(fr)
        except DecodeError as e:
            self._fail(StreamError("%s: bad message (type %d): %s" % (self.peer, fr.type, e.reason), "frame"))

    def send_plaintext(self, data):
        if self._sock is None:
            raise StreamClosed("%s: cannot send, the stream is closed" % self.peer)
        if len(data) > self.max_frame:
            raise StreamError("%s: refusing to send a %d-byte frame, over max frame %d"
                              % (self.peer, len(data), self.max_frame), "oversize")
        try:
            self._sock.settimeout(None)
            self._sock.sendall(self._enc.encrypt(data))
        except OSError as e:
            self.close()
            raise StreamClosed("%s: send failed: %s" % (self.peer, e.strerror or e)) from None

    def send(self, frame_bytes):
        self.send_plaintext(frame_bytes)

    def send_message(self, msg):
        self.send_plaintext(_frame_of(msg, self.max_frame, self.peer))

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _blocking_read_act(sock, size, what, peer, deadline, phase_timeout):
    buf = bytearray()
    while len(buf) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StreamError("handshake with %s: no %s within %.3g s" % (peer, what, phase_timeout), "timeout")
        sock.settimeout(left)
        try:
            chunk = sock.recv(size - len(buf))
        except socket.timeout:
            raise StreamError("handshake with %s: no %s within %.3g s" % (peer, what, phase_timeout),
                              "timeout") from None
        except OSError as e:
            raise StreamClosed("handshake with %s: connection lost: %s" % (peer, e.strerror or e)) from None
        if not chunk:
            raise StreamClosed("handshake with %s: peer closed the connection after %d of the %d bytes of %s"
                               % (peer, len(buf), size, what))
        buf += chunk
    return bytes(buf)


def connect_blocking(host, port, identity, remote_key, timeout=HANDSHAKE_TIMEOUT, max_frame=DEFAULT_MAX_FRAME):
    """connect() for code that is not asyncio: a BlockingStream after the handshake."""
    _check_max_frame(max_frame)
    peer = ("[%s]:%s" if ":" in str(host) else "%s:%s") % (host, port)
    try:
        ini = noise.Initiator(identity, remote_key)
    except NoiseError:
        raise StreamError("connect to %s: the expected key is not a compressed secp256k1 public key" % peer,
                          "auth") from None
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        raise StreamError("handshake with %s: no TCP connect within %.3g s" % (peer, timeout), "timeout") from None
    except OSError as e:
        raise StreamClosed("connect to %s failed: %s" % (peer, e.strerror or e)) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(ini.act_one())
        try:
            act_two = _blocking_read_act(sock, noise.ACT_TWO_SIZE, "act two", peer, deadline, timeout)
        except StreamClosed as e:
            raise StreamError("%s (it does not hold key %s, or it refused us)" % (e.reason, ini.remote_key.hex()),
                              "auth") from None
        try:
            act_three = ini.read_act_two(act_two)
        except NoiseError as e:
            raise StreamError("handshake with %s failed: %s" % (peer, e.reason), "auth") from None
        sock.sendall(act_three)
    except BaseException:
        sock.close()
        raise
    enc, dec = ini.split()
    dec.max_message = max_frame
    return BlockingStream(sock, enc, dec, ini.local_key, ini.remote_key, peer, max_frame)
