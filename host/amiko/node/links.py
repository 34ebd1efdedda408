"""Node-to-node links over TCP: handshake with key proof, sequenced exactly-once delivery,
resend, reconnect with backoff.

Wire (frames of amiko_core.frame, at most MAX_FRAME bytes, bodies of amiko_core.messages):
- LinkMsg (28) {seq: uint >= 1, msg_type: uint <= 255, body: bytes 1..outbox.MAX_BODY}:
  the inner message of type msg_type, sequenced per link and direction.
- Ack (29) {seq}: every LinkMsg up to seq is durably consumed by the receiver.
- Error (31) sent as a frame of its own (not in a LinkMsg) reports a connection-level
  problem (refused handshake, bad bytes, unknown message); the sender usually closes next.

Handshake (ConnectLink, 16), within HANDSHAKE_TIMEOUT of the connection:
  I -> R  {link: the name R knows the link by, key: K_I, nonce: N_I (32 bytes), callback?}
  R -> I  {link, key: K_R, nonce: N_R (32 bytes), signature: sign_R(T)}
  I -> R  {link, key: K_I, signature: sign_I(T)}
  T = sha256(b"amiko-link-v1" + link (UTF-8) + K_I + N_I + K_R + N_R); signatures per identity.py.
The initiator requires K_R to be the key pinned by the URL (`amikolink://host:port/NAME?key=HEX`,
or the links row's remote_key). The responder refuses a link name it has no links row for,
and a key other than the row's remote_key; with no remote_key yet, it pins K_I after the
signature checks (trust on first use). A callback URL is stored as the link's remote_url
when it has none; with dial_callbacks the responder then dials it too when disconnected.

Exactly-once (per link and direction; bookkeeping in outbox.py):
- both sides, once connected, send every unacknowledged outbox entry in seq order, and
  whatever is enqueued later when kick() is called after the enqueuing COMMIT;
- LinkMsg{seq}: seq <= last_in: a duplicate, acknowledged again and ignored.
  seq == last_in + 1: handler(db, link, msg) runs and last_in advances in ONE store
  transaction (one per read from the socket, each handler call in its own savepoint); the
  Ack is sent after COMMIT. If the handler raises (or the inner message does not decode),
  its savepoint is rolled back (its changes and its after_commit callbacks are dropped), and
  the transaction consumes the seq and enqueues Error{code, reason, ref_type, ref_seq} to
  the peer instead (never in answer to an Error: no ping-pong).
  seq > last_in + 1: a gap, a protocol violation: Error, connection closed.
- Ack{seq}: outbox.acked; an Ack of a seq never sent closes the connection.

Two connections for one link (both sides dial, or a reconnect before the old socket is
seen dead): both ends keep the same one: a newer connection from the same initiator
replaces the old one; between opposite directions the one whose initiator key is lower wins.

Hostile input: any byte the frame decoder drops (garbage, bad header check, oversize length,
bad CRC), an undecodable or unexpected frame during the handshake, a wrong key, a bad
signature or no handshake within the time-out: the connection is closed (with an Error frame
where one makes sense) and the event logged with the peer address. After the handshake an
unknown or malformed top-level frame is answered with an Error and skipped, up to
MAX_BAD_MESSAGES per connection. Memory per peer is bounded by the frame size, READ_CHUNK,
the stream buffer limit, the write buffer (the sender waits for the peer to read after each
BATCH; Acks are written without waiting, since both ends waiting for each other to read
could deadlock, and a peer that lets MAX_WRITE_BUFFER bytes pile up is disconnected) and
the outbox bound.

Error codes (Error.code) used here: see the ERR_* constants.
"""

import asyncio
import logging
import os
import random
import socket
from collections import deque

from amiko_core import frame as frames
from amiko_core import messages as m
from amiko_core.errors import AmikoError, DecodeError, ProtocolError, URLError
from amiko_core.hashing import sha256
from amiko_core.url import parse_link

from amiko.node import channels, outbox
from amiko.node.identity import valid_pubkey, verify

log = logging.getLogger("amiko.links")

LINK_MSG = 28
ACK = 29


def _register():
    if LINK_MSG not in m.SCHEMA:
        m.register(LINK_MSG, "LinkMsg", (
            (1, "seq", m.uint(), True),
            (2, "msg_type", m.uint(255), True),
            (3, "body", m.nbytes(1, outbox.MAX_BODY), True),
        ))
    if ACK not in m.SCHEMA:
        m.register(ACK, "Ack", ((1, "seq", m.uint(), True),))


_register()

MAX_FRAME = frames.DEFAULT_MAX_FRAME
HANDSHAKE_TIMEOUT = 5.0
NONCE_SIZE = 32
TRANSCRIPT_TAG = b"amiko-link-v1"
READ_CHUNK = 4096
STREAM_LIMIT = 16384
BATCH = 128  # outbox rows read and written per step; drain() in between bounds the buffer
MAX_HANDSHAKES = 64  # responder handshakes in progress at once
MAX_BAD_MESSAGES = 16  # rejected top-level frames tolerated per connection
STABLE_AFTER = 2.0  # a connection that lived this long resets the dial backoff
MAX_REASON = 200  # bytes of an Error reason we write (the message allows 256)
MAX_WRITE_BUFFER = 1 << 20  # bytes waiting for a peer that does not read before we close
KEEPALIVE = (30, 10, 3)  # TCP keepalive: idle s, interval s, probes: a vanished peer is noticed

# Link-layer types that never travel inside a LinkMsg.
_NOT_INNER = (m.CONNECT_LINK, LINK_MSG, ACK)

ERR_PROTOCOL = 1  # bad frame bytes, unexpected or out-of-sequence message
ERR_BAD_MESSAGE = 2  # a message type or body this node cannot decode (unknown type, bad field)
ERR_REJECTED = 3  # the handler refused the message (AmikoError)
ERR_INTERNAL = 4  # the handler failed unexpectedly
ERR_AUTH = 5  # wrong key or bad signature
ERR_UNKNOWN_LINK = 6  # no link of that name on this node
ERR_BUSY = 7  # too many handshakes in progress, or the link is already connected
ERR_TIMEOUT = 8  # handshake not completed in time


def _handler_problem(e):
    """(Error code, reason) for an exception a handler raised."""
    if isinstance(e, AmikoError):
        return ERR_REJECTED, e.reason
    return ERR_INTERNAL, "internal error handling the message"


def _inner(msg):
    """(inner message, None) of a LinkMsg, or (None, (Error code, reason)) if it is not acceptable."""
    if msg.msg_type in _NOT_INNER:
        return None, (ERR_PROTOCOL, "message type %d cannot travel in a LinkMsg" % msg.msg_type)
    try:
        return m.decode(msg.msg_type, msg.body), None
    except DecodeError as e:
        return None, (ERR_BAD_MESSAGE, e.reason)


class _HandlerTx:
    """The transaction handle a handler gets: the store transaction's, except that its
    after_commit callbacks reach the transaction only if the handler succeeds."""

    def __init__(self, db):
        self._db = db
        self._after = []

    def execute(self, sql, args=()):
        return self._db.execute(sql, args)

    def executemany(self, sql, seq):
        return self._db.executemany(sql, seq)

    def after_commit(self, fn):
        self._after.append(fn)

    def keep(self):
        for fn in self._after:
            self._db.after_commit(fn)

    def __getattr__(self, name):
        return getattr(self._db, name)


class LinkError(AmikoError):
    """A connection must be closed; code is the Error code to tell the peer (None: tell nothing)."""

    def __init__(self, reason, code=ERR_PROTOCOL):
        super().__init__(reason)
        self.code = code


def transcript(link, key_i, nonce_i, key_r, nonce_r):
    """The handshake transcript hash T both sides sign."""
    return sha256(TRANSCRIPT_TAG + link.encode("utf-8") + key_i + nonce_i + key_r + nonce_r)


def backoff_delay(failures, base, cap, rand=random.random):
    """Delay before the next dial after `failures` consecutive failures (>= 1):
    min(cap, base * 2**(failures-1)), scaled by a jitter factor in [0.5, 1)."""
    exp = min(failures - 1, 30)
    return min(cap, base * (2 ** exp)) * (0.5 + rand() / 2)


def clean_reason(text):
    """text made acceptable as an Error reason: no control characters, at most MAX_REASON bytes."""
    text = "".join(c if (c >= " " and not "\x7f" <= c <= "\x9f") else " " for c in str(text))
    data = text.encode("utf-8")[:MAX_REASON]
    return data.decode("utf-8", "ignore") or "error"


def error_message(code, reason, ref_type=None, ref_seq=None):
    fields = {"code": code, "reason": clean_reason(reason)}
    if ref_type is not None:
        fields["ref_type"] = ref_type
    if ref_seq is not None:
        fields["ref_seq"] = ref_seq
    return m.Message(m.ERROR, fields)


def link_key_from_url(url):
    """The pinned responder key (33 bytes) in an amikolink URL's ?key=, or None if it has none."""
    hexkey = url.query.get("key")
    if hexkey is None:
        return None
    try:
        key = bytes.fromhex(hexkey)
    except ValueError:
        raise URLError("url: key=%s is not hex" % hexkey) from None
    if not valid_pubkey(key):
        raise URLError("url: key= is not a 33-byte compressed secp256k1 public key")
    return key


def _write_buffered(writer):
    try:
        return writer.transport.get_write_buffer_size()
    except Exception:
        return 0


def _keepalive(writer):
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


def _peer_name(writer):
    try:
        peer = writer.get_extra_info("peername")
    except Exception:
        peer = None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return "%s:%s" % (peer[0], peer[1])
    return str(peer)


class FrameReader:
    """Frames from a stream through a FrameDecoder; any dropped byte is a LinkError."""

    def __init__(self, reader, max_frame=MAX_FRAME):
        self.reader = reader
        self.decoder = frames.FrameDecoder(max_frame)
        self.pending = deque()
        self.error = None

    async def _fill(self):
        # Frames decoded from the same read as bad bytes are still delivered; the error is
        # raised once they are consumed.
        if self.error is not None:
            raise self.error
        data = await self.reader.read(READ_CHUNK)
        if not data:
            raise ConnectionResetError("peer closed the connection")
        found = self.decoder.feed(data)
        if self.decoder.dropped_bytes:
            self.error = LinkError("bad bytes on the link (%s)" % self.decoder.last_error)
            if not found:
                raise self.error
        self.pending.extend(found)

    async def next(self):
        """The next frame."""
        while not self.pending:
            await self._fill()
        return self.pending.popleft()

    async def batch(self):
        """Every frame already received, reading once if there is none."""
        while not self.pending:
            await self._fill()
        out = list(self.pending)
        self.pending.clear()
        return out


def _decode_frame(fr):
    try:
        return m.from_frame(fr)
    except DecodeError as e:
        raise LinkError(e.reason, ERR_BAD_MESSAGE) from None


def _expect_connect(fr, what):
    if fr.type == m.ERROR:
        try:
            err = m.from_frame(fr)
            reason = "peer refused: %s (code %d)" % (err.reason, err.code)
        except DecodeError:
            reason = "peer sent a malformed Error"
        raise LinkError(reason, None)
    if fr.type != m.CONNECT_LINK:
        raise LinkError("%s: expected ConnectLink, got message type %d" % (what, fr.type))
    return _decode_frame(fr)


def _send(writer, msg):
    writer.write(m.to_frame(msg, MAX_FRAME))


async def _send_error_and_close(writer, code, reason, ref_type=None):
    try:
        if code is not None and not writer.is_closing():
            _send(writer, error_message(code, reason, ref_type))
            await asyncio.wait_for(writer.drain(), 1.0)
    except Exception:
        pass
    _abort(writer)


def _abort(writer):
    """Close after flushing what was written (an Error frame); abort if the peer does not read."""
    try:
        transport = writer.transport
        if transport is not None and not transport.is_closing():
            writer.close()
            asyncio.get_running_loop().call_later(2.0, transport.abort)
    except Exception:
        pass


async def initiator_handshake(reader, writer, identity, remote_name, pinned_key, callback=None, timeout=HANDSHAKE_TIMEOUT):
    """Run the initiator side; returns the FrameReader to continue with. Raises LinkError."""
    frame_reader = FrameReader(reader)
    nonce_i = os.urandom(NONCE_SIZE)
    first = {"link": remote_name, "key": identity.pubkey, "nonce": nonce_i}
    if callback:
        first["callback"] = callback
    async with asyncio.timeout(timeout):
        _send(writer, m.Message(m.CONNECT_LINK, first))
        await writer.drain()
        reply = _expect_connect(await frame_reader.next(), "handshake reply")
        if reply.link != remote_name:
            raise LinkError("handshake reply names link %r, expected %r" % (reply.link, remote_name))
        if reply.key != pinned_key:
            raise LinkError(
                "responder key %s is not the pinned key %s" % (reply.key.hex(), pinned_key.hex()), ERR_AUTH
            )
        if reply.nonce is None or len(reply.nonce) != NONCE_SIZE or reply.signature is None or reply.callback:
            raise LinkError("handshake reply must carry a %d-byte nonce and a signature only" % NONCE_SIZE)
        t = transcript(remote_name, identity.pubkey, nonce_i, reply.key, reply.nonce)
        if not verify(reply.key, t, reply.signature):
            raise LinkError("responder signature does not verify", ERR_AUTH)
        _send(writer, m.Message(m.CONNECT_LINK, {"link": remote_name, "key": identity.pubkey, "signature": identity.sign(t)}))
        await writer.drain()
    return frame_reader


class _LinkState:
    """What the manager knows about one link name (only names that exist on this node)."""

    def __init__(self, name):
        self.name = name
        self.conn = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.dialer = None
        self.url = None
        self.last_error = None
        self.connects = 0
        self.failures = 0
        self.backoff = 0.0
        self.duplicates = 0
        self.rejected = 0


class _Connection:
    def __init__(self, manager, link, reader, writer, frame_reader, initiator_key, direction, peer):
        self.manager = manager
        self.link = link
        self.reader = reader
        self.writer = writer
        self.frames = frame_reader
        self.initiator_key = initiator_key
        self.direction = direction  # "out": we dialed; "in": the peer dialed
        self.peer = peer
        self.sent_upto = 0
        self.kick = asyncio.Event()
        self.kick.set()
        self.closing = False
        self.bad_messages = 0
        _keepalive(writer)

    def close(self, why=None):
        if not self.closing:
            self.closing = True
            if why:
                log.info("link %s (%s): closing connection: %s", self.link, self.peer, why)
            _abort(self.writer)

    def abort(self):
        """Drop the TCP connection at once (no flush), as a crash or a network failure would."""
        self.closing = True
        try:
            self.writer.transport.abort()
        except Exception:
            pass


class LinkManager:
    """Runs the node's links. handler(db, link_name, msg) is called inside a store transaction
    this manager opens, for every inner message exactly once (see the module docstring)."""

    def __init__(self, store, identity, handler, my_link_url_fn=None, loop=None, backoff=(0.1, 5.0),
                 handshake_timeout=HANDSHAKE_TIMEOUT, outbox_limit=outbox.MAX_OUTBOX, dial_callbacks=True):
        self.store = store
        self.identity = identity
        self.handler = handler
        self.my_link_url_fn = my_link_url_fn
        self.loop = loop
        self.backoff = backoff
        self.handshake_timeout = handshake_timeout
        self.outbox_limit = outbox_limit
        self.dial_callbacks = dial_callbacks
        self._links = {}
        self._tasks = set()
        self._handshakes = 0
        self._servers = []
        self._closed = False
        self.refused = 0  # connections refused before a link was identified

    # ---- public API

    def connect(self, link_name, url):
        """Keep an outgoing connection for link_name to url (amikolink://host:port/NAME?key=HEX),
        reconnecting with exponential backoff and jitter. Raises URLError/AmikoError at once on a
        bad URL; without ?key= the links row's pinned remote_key is used (refused if there is none)."""
        if self._closed:
            raise AmikoError("links: manager is closed")
        parsed = parse_link(url) if isinstance(url, str) else url
        key = link_key_from_url(parsed)
        if key is None:
            with self.store.read() as db:
                row = channels.get_link(db, link_name)
            key = row and row.get("remote_key")
            if not key:
                raise AmikoError("link %s: URL %s has no ?key= and no peer key is pinned" % (link_name, parsed))
            key = bytes(key)
        state = self._state(link_name)
        if state.dialer is not None and not state.dialer.done():
            if state.url == (str(parsed), key):
                return
            state.dialer.cancel()
        state.url = (str(parsed), key)
        state.dialer = self._spawn(self._dial_loop(state, parsed, key))

    def kick(self, link_name=None):
        """Send newly enqueued outbox entries now (call after the enqueuing COMMIT)."""
        if link_name is None:
            states = list(self._links.values())
        else:
            states = [self._links.get(link_name)]
        for state in states:
            if state is not None and state.conn is not None:
                state.conn.kick.set()

    def is_connected(self, link_name):
        state = self._links.get(link_name)
        return bool(state and state.conn and not state.conn.closing)

    def status(self, link_name=None):
        """{name: {connected, direction, peer, last_error, connects, reconnects, failures, backoff,
        duplicates, rejected, outbox}} for every link this manager has seen, or one such dict."""
        names = [link_name] if link_name is not None else sorted(self._links)
        out = {}
        with self.store.read() as db:
            for name in names:
                st = self._links.get(name)
                conn = st.conn if st and st.conn and not st.conn.closing else None
                out[name] = {
                    "connected": conn is not None,
                    "direction": conn.direction if conn else None,
                    "peer": conn.peer if conn else None,
                    "last_error": st.last_error if st else None,
                    "connects": st.connects if st else 0,
                    "reconnects": max(0, st.connects - 1) if st else 0,
                    "failures": st.failures if st else 0,
                    "backoff": st.backoff if st else 0.0,
                    "duplicates": st.duplicates if st else 0,
                    "rejected": st.rejected if st else 0,
                    "outbox": outbox.pending_count(db, name),
                }
        return out[link_name] if link_name is not None else out

    def disconnect(self, link_name):
        """Drop the current connection of a link (as a network failure would); dialers redial."""
        state = self._links.get(link_name)
        if state is not None and state.conn is not None:
            state.conn.abort()

    async def listen(self, host, port):
        """A listener that accepts only node links (the daemon has its own shared listener)."""
        server = await asyncio.start_server(self._on_accept, host, port, limit=STREAM_LIMIT, reuse_address=True)
        self._servers.append(server)
        return server

    async def handle_incoming(self, reader, writer, first_frame, frame_reader=None):
        """Serve an incoming connection whose first frame (already read) should be ConnectLink;
        returns when the connection ends. frame_reader: the FrameReader that read first_frame,
        if any (so bytes it buffered are not lost)."""
        peer = _peer_name(writer)
        if self._closed:
            _abort(writer)
            return
        if self._handshakes >= MAX_HANDSHAKES:
            self.refused += 1
            log.warning("link from %s refused: %d handshakes in progress", peer, self._handshakes)
            await _send_error_and_close(writer, ERR_BUSY, "too many handshakes in progress")
            return
        self._handshakes += 1
        try:
            conn = await self._responder_handshake(reader, writer, first_frame, peer, frame_reader)
        except (AmikoError, OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self._handshakes -= 1
            self.refused += 1
            if isinstance(e, AmikoError):
                reason, code = e.reason, getattr(e, "code", ERR_PROTOCOL)
            elif isinstance(e, asyncio.TimeoutError):
                reason, code = "no handshake within %.1f s" % self.handshake_timeout, ERR_TIMEOUT
            else:
                reason, code = "connection lost during handshake (%s)" % (e,), None
            log.warning("link from %s refused: %s", peer, reason)
            await _send_error_and_close(writer, code, reason)
            return
        except BaseException:
            self._handshakes -= 1
            _abort(writer)
            raise
        self._handshakes -= 1
        if conn is not None:
            await self._run(conn)

    async def close(self):
        """Stop dialing, close every connection and listener, wait for the tasks to end."""
        self._closed = True
        for server in self._servers:
            server.close()
        for state in self._links.values():
            if state.dialer is not None:
                state.dialer.cancel()
            if state.conn is not None:
                state.conn.close()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass
        self._servers = []

    # ---- internals

    def _state(self, name):
        state = self._links.get(name)
        if state is None:
            state = self._links[name] = _LinkState(name)
        return state

    def _spawn(self, coro):
        task = asyncio.get_running_loop().create_task(coro) if self.loop is None else self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_accept(self, reader, writer):
        peer = _peer_name(writer)
        self._tasks.add(asyncio.current_task())
        try:
            fr = None
            try:
                fr_reader = FrameReader(reader)
                async with asyncio.timeout(self.handshake_timeout):
                    fr = await fr_reader.next()
            except LinkError as e:
                self.refused += 1
                log.warning("connection from %s: %s", peer, e.reason)
                await _send_error_and_close(writer, e.code, e.reason)
                return
            except (asyncio.TimeoutError, OSError, ConnectionError):
                self.refused += 1
                log.warning("connection from %s: no handshake within %.1f s", peer, self.handshake_timeout)
                await _send_error_and_close(writer, ERR_TIMEOUT, "no handshake in time")
                return
            if fr.type != m.CONNECT_LINK:
                self.refused += 1
                reason = "first message must be ConnectLink, got type %d" % fr.type
                log.warning("connection from %s: %s", peer, reason)
                await _send_error_and_close(writer, ERR_PROTOCOL, reason, fr.type)
                return
            await self.handle_incoming(reader, writer, fr, fr_reader)
        except asyncio.CancelledError:
            _abort(writer)
        except Exception:
            log.exception("connection from %s failed", peer)
            _abort(writer)
        finally:
            self._tasks.discard(asyncio.current_task())

    async def _responder_handshake(self, reader, writer, first_frame, peer, frame_reader=None):
        frame_reader = frame_reader or FrameReader(reader)
        async with asyncio.timeout(self.handshake_timeout):
            hello = _expect_connect(first_frame, "first message")
            name = hello.link
            if hello.signature is not None or hello.nonce is None or len(hello.nonce) != NONCE_SIZE:
                raise LinkError("ConnectLink must open with a %d-byte nonce and no signature" % NONCE_SIZE)
            if not valid_pubkey(hello.key):
                raise LinkError("ConnectLink key is not a valid secp256k1 public key", ERR_AUTH)
            with self.store.read() as db:
                row = channels.get_link(db, name)
            if row is None:
                raise LinkError("no link named %s on this node" % name, ERR_UNKNOWN_LINK)
            pinned = bytes(row["remote_key"]) if row["remote_key"] else None
            if pinned is not None and hello.key != pinned:
                self._state(name).last_error = "refused %s: key %s is not the pinned key" % (peer, hello.key.hex())
                raise LinkError("link %s: key %s is not the key pinned for it" % (name, hello.key.hex()), ERR_AUTH)
            nonce_r = os.urandom(NONCE_SIZE)
            t = transcript(name, hello.key, hello.nonce, self.identity.pubkey, nonce_r)
            _send(writer, m.Message(m.CONNECT_LINK, {
                "link": name, "key": self.identity.pubkey, "nonce": nonce_r, "signature": self.identity.sign(t),
            }))
            await writer.drain()
            proof = _expect_connect(await frame_reader.next(), "handshake proof")
            if proof.link != name or proof.key != hello.key:
                raise LinkError("handshake proof names another link or key", ERR_AUTH)
            if proof.signature is None or proof.nonce is not None or proof.callback is not None:
                raise LinkError("handshake proof must carry a signature only")
            if not verify(hello.key, t, proof.signature):
                self._state(name).last_error = "refused %s: bad handshake signature" % peer
                raise LinkError("initiator signature does not verify", ERR_AUTH)
        with self.store.transaction() as db:
            row = channels.get_link(db, name)
            if row is None:
                raise LinkError("no link named %s on this node" % name, ERR_UNKNOWN_LINK)
            if row["remote_key"] and bytes(row["remote_key"]) != hello.key:
                raise LinkError("link %s: key %s is not the key pinned for it" % (name, hello.key.hex()), ERR_AUTH)
            if not row["remote_key"]:
                channels.set_link_key(db, name, hello.key)
                log.info("link %s: pinned peer key %s (first handshake, from %s)", name, hello.key.hex(), peer)
            if hello.callback and not row["remote_url"]:
                channels.add_link(db, name, remote_url=hello.callback)
        state = self._state(name)
        if hello.callback and self.dial_callbacks and state.dialer is None and not self._closed:
            try:
                self.connect(name, hello.callback)
            except AmikoError as e:
                log.info("link %s: not dialing callback %s: %s", name, hello.callback, e.reason)
        conn = _Connection(self, name, reader, writer, frame_reader, hello.key, "in", peer)
        if not self._install(state, conn):
            raise LinkError("link %s is already connected" % name, ERR_BUSY)
        return conn

    def _install(self, state, conn):
        """Make conn the link's connection, or refuse it (see the module docstring)."""
        cur = state.conn
        if cur is not None and not cur.closing:
            if cur.initiator_key != conn.initiator_key and cur.initiator_key < conn.initiator_key:
                return False
            cur.close("replaced by a newer connection")
        state.conn = conn
        state.idle.clear()
        state.connects += 1
        state.last_error = None
        log.info("link %s: connected (%s %s)", state.name, "to" if conn.direction == "out" else "from", conn.peer)
        return True

    async def _dial_loop(self, state, url, key):
        failures = 0
        base, cap = self.backoff
        loop = asyncio.get_running_loop()
        while not self._closed:
            await state.idle.wait()
            started = None
            peer = "%s:%d" % (url.host, url.port)
            writer = None
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    reader, writer = await asyncio.open_connection(url.host, url.port, limit=STREAM_LIMIT)
                callback = None
                if self.my_link_url_fn is not None:
                    try:
                        callback = self.my_link_url_fn(state.name)
                    except Exception:
                        callback = None
                frame_reader = await initiator_handshake(
                    reader, writer, self.identity, url.path, key, callback, self.handshake_timeout
                )
                self._pin_after_dial(state.name, url, key)
                conn = _Connection(self, state.name, reader, writer, frame_reader, self.identity.pubkey, "out", peer)
                if self._install(state, conn):
                    started = loop.time()
                    await self._run(conn)
                else:
                    conn.close("the peer's connection for this link is preferred")
            except asyncio.CancelledError:
                if writer is not None:
                    _abort(writer)
                raise
            except (LinkError, OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                reason = e.reason if isinstance(e, AmikoError) else (
                    "no handshake within %.1f s" % self.handshake_timeout if isinstance(e, asyncio.TimeoutError) else str(e) or type(e).__name__
                )
                state.last_error = "dial %s: %s" % (peer, reason)
                log.info("link %s: dial %s failed: %s", state.name, peer, reason)
                if writer is not None:
                    code = e.code if isinstance(e, LinkError) else None
                    await _send_error_and_close(writer, code, reason)
            except Exception as e:
                state.last_error = "dial %s: %s" % (peer, e)
                log.exception("link %s: dial %s failed", state.name, peer)
                if writer is not None:
                    _abort(writer)
            if self._closed:
                break
            if started is not None and loop.time() - started >= STABLE_AFTER:
                failures = 0
            failures += 1
            state.failures += 1 if started is None else 0
            delay = backoff_delay(failures, base, cap)
            state.backoff = delay
            await asyncio.sleep(delay)

    def _pin_after_dial(self, name, url, key):
        """Record the dialed URL's key as the link's pin (the responder role checks it too)."""
        try:
            with self.store.transaction() as db:
                row = channels.get_link(db, name)
                if row is None or not row["remote_key"] or bytes(row["remote_key"]) != key:
                    channels.add_link(db, name, remote_url=None if row and row["remote_url"] else str(url), remote_key=key)
        except AmikoError as e:
            log.warning("link %s: cannot record the peer key: %s", name, e.reason)

    async def _run(self, conn):
        """Serve an authenticated connection until it ends."""
        sender = self._spawn(self._sender(conn))
        try:
            await self._receive(conn)
        except asyncio.CancelledError:
            raise
        except LinkError as e:
            state = self._links.get(conn.link)
            if state is not None and state.conn is conn:
                state.last_error = "%s: %s" % (conn.peer, e.reason)
            log.warning("link %s (%s): %s", conn.link, conn.peer, e.reason)
            if not conn.closing and e.code is not None:
                conn.closing = True
                await _send_error_and_close(conn.writer, e.code, e.reason)
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
            state = self._links.get(conn.link)
            if state is not None and state.conn is conn and not conn.closing:
                state.last_error = "%s: connection lost (%s)" % (conn.peer, e)
            log.info("link %s (%s): connection ended: %s", conn.link, conn.peer, e)
        except Exception:
            log.exception("link %s (%s): failed", conn.link, conn.peer)
        finally:
            conn.close()
            sender.cancel()
            state = self._links.get(conn.link)
            if state is not None and state.conn is conn:
                state.conn = None
                state.idle.set()
                log.info("link %s: disconnected (%s)", conn.link, conn.peer)

    async def _sender(self, conn):
        try:
            while not conn.closing:
                conn.kick.clear()
                rows = outbox.unacked(self.store, conn.link, after=conn.sent_upto, limit=BATCH)
                if not rows:
                    await conn.kick.wait()
                    continue
                for seq, mtype, body in rows:
                    _send(conn.writer, m.Message(LINK_MSG, {"seq": seq, "msg_type": mtype, "body": body}))
                conn.sent_upto = rows[-1][0]
                await conn.writer.drain()
        except asyncio.CancelledError:
            pass
        except (OSError, ConnectionError) as e:
            conn.close("send failed: %s" % e)
        except Exception:
            log.exception("link %s (%s): sender failed", conn.link, conn.peer)
            conn.close()

    async def _receive(self, conn):
        while not conn.closing:
            batch = await conn.frames.batch()
            link_msgs = []
            acked = None
            error = None
            for fr in batch:
                if fr.type == LINK_MSG:
                    try:
                        link_msgs.append(m.from_frame(fr))
                    except DecodeError as e:
                        error = LinkError("bad LinkMsg: %s" % e.reason)
                        break
                elif fr.type == ACK:
                    try:
                        msg = m.from_frame(fr)
                    except DecodeError as e:
                        error = LinkError("bad Ack: %s" % e.reason)
                        break
                    acked = msg.seq if acked is None or msg.seq > acked else acked
                else:
                    try:
                        self._other_frame(conn, fr)
                    except LinkError as e:
                        error = e
                        break
            if conn.closing:
                return
            ack = None
            if link_msgs or acked is not None:
                ack, apply_error = self._apply(conn, link_msgs, acked)
                error = apply_error or error
            if ack is not None and not conn.closing:
                # No drain() here: if both ends waited for their peer to read while not
                # reading themselves, bulk traffic both ways would deadlock. The buffer check
                # bounds what a peer that does not read can make us hold.
                _send(conn.writer, m.Message(ACK, {"seq": ack}))
            if error is not None:
                raise error
            if _write_buffered(conn.writer) > MAX_WRITE_BUFFER:
                raise LinkError("peer does not read what we send (%d bytes waiting)" % _write_buffered(conn.writer))

    def _apply(self, conn, link_msgs, acked):
        """Consume the LinkMsgs of one read, in order, and the highest Ack, in ONE store
        transaction (one fsync per read, not per message). Returns (seq to acknowledge or
        None, LinkError or None); what precedes a protocol error is still committed.

        Each handler call runs in a savepoint: if it raises, only its own changes are rolled
        back (and its after_commit callbacks dropped); the seq is consumed and an Error queued
        for the peer in the same transaction. A failure of the store itself propagates: the
        whole transaction rolls back, nothing is acknowledged, the peer resends later."""
        link = conn.link
        state = self._state(link)
        ack = None
        error = None
        rejected = []
        applied = 0
        with self.store.transaction() as db:
            if acked is not None:
                try:
                    outbox.acked(db, link, acked)
                except ProtocolError as e:
                    error = LinkError(e.reason)  # checked before any change: nothing to undo
            first = last = outbox.last_in(db, link)
            for msg in link_msgs:
                seq = msg.seq
                if seq < 1:
                    error = LinkError("LinkMsg seq must be >= 1")
                    break
                if seq <= last:
                    state.duplicates += 1
                    ack = seq if ack is None or seq > ack else ack
                    continue
                if seq > last + 1:
                    error = LinkError("LinkMsg seq %d after %d: %d messages missing" % (seq, last, seq - last - 1))
                    break
                inner, problem = _inner(msg)
                if problem is None:
                    problem = self._call_handler(db, conn, inner, seq)
                if problem is None:
                    applied += 1
                else:
                    rejected.append((seq, msg.msg_type, problem))
                    if msg.msg_type != m.ERROR:  # never answer an Error with an Error
                        try:
                            outbox.enqueue(db, link, error_message(problem[0], problem[1], msg.msg_type, seq),
                                           self.outbox_limit)
                        except AmikoError as e:
                            log.warning("link %s: Error for seq %d not queued: %s", link, seq, e.reason)
                last = ack = seq
            if last > first:
                outbox.set_last_in(db, link, last)
        for seq, mtype, (code, reason) in rejected:
            state.rejected += 1
            log.warning("link %s (%s): %s seq %d rejected: %s", link, conn.peer,
                        m.name_of(mtype) or "type %d" % mtype, seq, reason)
        if applied or rejected:
            # A handler may queue on any link (a forwarded Lock leaves on another link than
            # it came in on), so every link with a connection gets to send.
            self.kick()
        return ack, error

    def _call_handler(self, db, conn, inner, seq):
        """Run the handler in a savepoint; None if it succeeded, else (Error code, reason)."""
        tx = _HandlerTx(db)
        db.execute("SAVEPOINT amiko_link_msg")
        try:
            self.handler(tx, conn.link, inner)
        except Exception as e:
            db.execute("ROLLBACK TO amiko_link_msg")
            db.execute("RELEASE amiko_link_msg")
            problem = _handler_problem(e)
            if problem[0] == ERR_INTERNAL:
                log.exception("link %s (%s): handler failed on %s seq %d", conn.link, conn.peer, inner.name, seq)
            return problem
        db.execute("RELEASE amiko_link_msg")
        tx.keep()
        return None

    def _other_frame(self, conn, fr):
        """A top-level frame that is neither LinkMsg nor Ack after the handshake."""
        state = self._state(conn.link)
        if fr.type == m.ERROR:
            try:
                err = m.from_frame(fr)
                state.last_error = "peer error %d: %s" % (err.code, err.reason)
                log.warning("link %s (%s): peer reports error %d: %s", conn.link, conn.peer, err.code, err.reason)
                return
            except DecodeError as e:
                reason = "malformed Error: %s" % e.reason
        elif fr.type == m.CONNECT_LINK:
            reason = "ConnectLink after the handshake"
        else:
            try:
                msg = m.from_frame(fr)
                reason = "%s must travel in a LinkMsg" % msg.name
            except DecodeError as e:
                reason = e.reason
        conn.bad_messages += 1
        state.rejected += 1
        log.warning("link %s (%s): rejected frame type %d: %s", conn.link, conn.peer, fr.type, reason)
        if conn.bad_messages > MAX_BAD_MESSAGES:
            raise LinkError("too many rejected messages (%d)" % conn.bad_messages)
        code = ERR_BAD_MESSAGE if m.name_of(fr.type) is None else ERR_PROTOCOL
        _send(conn.writer, error_message(code, reason, fr.type))
