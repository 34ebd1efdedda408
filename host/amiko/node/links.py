"""Node-to-node links over BOLT 8 streams: who may link, sequenced exactly-once delivery,
resend, keepalive, reconnect with backoff.

Transport: every connection is an amiko.wire.stream Stream (BOLT 8, Noise_XK). The
initiator dials with the key it pinned (the `?key=` of `amikolink://host:port/NAME?key=HEX`,
or the links row's remote_key): the handshake fails unless the responder holds that key.
The responder learns the initiator's static key from the handshake (stream.remote_key).
Incoming connections reach handle_incoming(stream, first_frame) through the node's one
listener (amiko.wire.listener; listen() starts one that takes only node links).

Wire (frames of amiko_core.frame, at most MAX_FRAME bytes, bodies of amiko_core.messages):
- ConnectLink (16), the initiator's first frame: {link: the name R knows the link by,
  key: K_I (must be the handshake's key), callback?: I's amikolink URL for the link,
  invite?: the 32-byte secret of R's invitation (amiko.node.invites)}.
  R answers ConnectLink {link, key: K_R} when it accepts the link, or an Error and closes.
- LinkMsg (28) {seq: uint >= 1, msg_type: uint <= 255, body: bytes 1..outbox.MAX_BODY}:
  the inner message of type msg_type, sequenced per link and direction.
- Ack (29) {seq}: every LinkMsg up to seq is durably consumed by the receiver. An idle link
  sends its latest Ack every `keepalive` seconds; a link that received no frame for
  IDLE_FACTOR * keepalive seconds is dropped (Error codes.TIMEOUT) and redialed.
- Error (31) sent as a frame of its own (not in a LinkMsg) reports a connection-level
  problem (refused link, unknown message); the sender usually closes next.

Who may link (R's checks on ConnectLink, in one store transaction):
- no links row of that name: codes.UNKNOWN_LINK;
- a pinned remote_key: K_I must be it (codes.AUTH otherwise);
- no pinned key: the ConnectLink must carry an invitation of R for that link name, valid,
  unused and unexpired; R then pins K_I and marks the invitation used in the same
  transaction. Without one: codes.AUTH (logged). Nobody is trusted on first use.
A callback whose ?key= is K_I is stored as the link's remote_url when it has none; with
dial_callbacks the responder then dials it too when disconnected. Another key: ignored.
The initiator records the dialed URL (without its invite) and key once R accepted.

Exactly-once (per link and direction; bookkeeping in outbox.py):
- both sides, once connected, send every unacknowledged outbox entry in seq order, and
  whatever is enqueued later when kick() is called after the enqueuing COMMIT;
- LinkMsg{seq}: seq <= last_in: a duplicate, acknowledged again and ignored.
  seq == last_in + 1: handler(db, link, msg) runs and last_in advances in ONE store
  transaction (group commit: the reads of every connection that arrive within one loop
  iteration share one transaction, at most GROUP_MAX link messages; each read in its own
  savepoint, each handler call in one inside it); the Acks are sent after COMMIT, and a
  group of received Acks only commits without fsync (a lost one is a resend, a duplicate). If the handler raises (or the inner message does
  not decode), its savepoint is rolled back (its changes and its after_commit callbacks are
  dropped), and the transaction consumes the seq and enqueues Error{code, reason, ref_type,
  ref_seq} to the peer instead (never in answer to an Error: no ping-pong).
  seq > last_in + 1: a gap, a protocol violation: Error, connection closed.
- Ack{seq}: outbox.acked; an Ack of a seq never sent closes the connection.

Two connections for one link (both sides dial, or a reconnect before the old socket is
seen dead): both ends keep the same one: a newer connection from the same initiator
replaces the old one; between opposite directions the one whose initiator key is lower wins.

Hostile input: the stream refuses tampered, replayed, reordered or oversized ciphertext
and undecodable frames (the connection is closed and logged with the peer address). An
unexpected first frame, a wrong key or a refused link: an Error frame, then close. After
the handshake an unknown or malformed top-level frame is answered with an Error and
skipped, up to MAX_BAD_MESSAGES per connection. Memory per peer is bounded by the frame
size, BATCH, the write buffer (the sender waits for the peer to read after each BATCH;
Acks are written without waiting, since both ends waiting for each other to read could
deadlock, and a peer that lets MAX_WRITE_BUFFER bytes pile up is disconnected) and the
outbox bound.

Error codes (Error.code) used here: see the ERR_* constants.
"""

import asyncio
import logging
import random
import time

from amiko_core import frame as frames
from amiko_core import codes
from amiko_core import messages as m
from amiko_core.errors import AmikoError, DecodeError, ProtocolError, URLError
from amiko_core.url import LINK, AmikoURL, parse_link

from amiko.node import channels, invites, outbox
from amiko.node.identity import valid_pubkey
from amiko.wire.listener import Limits, Listener
from amiko.wire.stream import StreamClosed, StreamError, connect

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
HANDSHAKE_TIMEOUT = 5.0  # BOLT 8 handshake, and the ConnectLink answer after it
KEEPALIVE = 10.0  # seconds: an idle link sends its latest Ack this often
IDLE_FACTOR = 3  # a link with no frame for IDLE_FACTOR * keepalive seconds is dropped
BATCH = 128  # frames taken from one connection per read; outbox rows written per drain()
GROUP_MAX = 256  # link messages applied in one group transaction at most (a flood waits for the next)
MAX_BAD_MESSAGES = 16  # rejected top-level frames tolerated per connection
STABLE_AFTER = 2.0  # a connection that lived this long resets the dial backoff
MAX_REASON = 200  # bytes of an Error reason we write (the message allows 256)
MAX_WRITE_BUFFER = 1 << 20  # bytes waiting for a peer that does not read before we close

# Link-layer types that never travel inside a LinkMsg.
_NOT_INNER = (m.CONNECT_LINK, LINK_MSG, ACK)



def _handler_problem(e):
    """(Error code, reason) for an exception a handler raised."""
    if isinstance(e, AmikoError):
        return codes.REJECTED, e.reason
    return codes.INTERNAL, "internal error handling the message"


def _inner(msg):
    """(inner message, None) of a LinkMsg, or (None, (Error code, reason)) if it is not acceptable."""
    if msg.msg_type in _NOT_INNER:
        return None, (codes.PROTOCOL, "message type %d cannot travel in a LinkMsg" % msg.msg_type)
    try:
        return m.decode(msg.msg_type, msg.body), None
    except DecodeError as e:
        return None, (codes.BAD_MESSAGE, e.reason)


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

    def __init__(self, reason, code=codes.PROTOCOL):
        super().__init__(reason)
        self.code = code


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


def invite_from_url(url):
    """The invitation secret (32 bytes) in an amikolink URL's ?invite=, or None."""
    text = url.query.get("invite")
    if text is None:
        return None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != invites.SECRET_SIZE:
        raise URLError("url: invite= must be %d hex characters" % (2 * invites.SECRET_SIZE))
    return secret


def without_invite(url):
    """The URL (an AmikoURL) without its invitation: what is stored and shown."""
    return AmikoURL(LINK, url.host, url.port, url.path, {k: v for k, v in url.query.items() if k != "invite"})


def _decode_frame(fr):
    try:
        return m.from_frame(fr)
    except DecodeError as e:
        raise LinkError(e.reason, codes.BAD_MESSAGE) from None


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
    msg = _decode_frame(fr)
    if msg.nonce is not None or msg.signature is not None:
        raise LinkError("%s: ConnectLink carries nonce/signature fields of the old handshake" % what)
    return msg


def _send(stream, msg):
    stream.send(m.to_frame(msg, MAX_FRAME))


async def _send_error_and_close(stream, code, reason, ref_type=None):
    """Tell the peer why (if code is not None), flush, close (abort if it does not read)."""
    try:
        if code is not None and not stream.is_closing():
            _send(stream, error_message(code, reason, ref_type))
            await asyncio.wait_for(stream.drain(), 1.0)
    except Exception:
        pass
    stream.close()


async def initiator_handshake(stream, remote_name, callback=None, invite=None, timeout=HANDSHAKE_TIMEOUT):
    """After the BOLT 8 handshake: send ConnectLink and wait for the responder's answer.
    Raises LinkError (refused, unexpected answer) or StreamError."""
    first = {"link": remote_name, "key": stream.local_key}
    if callback:
        first["callback"] = callback
    if invite is not None:
        first["invite"] = invite
    _send(stream, m.Message(m.CONNECT_LINK, first))
    await stream.drain()
    try:
        fr = await stream.recv(timeout=timeout)
    except StreamError as e:
        if e.code == "timeout":
            raise LinkError("no answer to ConnectLink within %.1f s" % timeout, None) from None
        raise
    reply = _expect_connect(fr, "handshake reply")
    if reply.link != remote_name:
        raise LinkError("handshake reply names link %r, expected %r" % (reply.link, remote_name))
    if reply.key != stream.remote_key:
        raise LinkError("handshake reply names key %s, not the key of the handshake" % reply.key.hex(), codes.AUTH)
    if reply.callback is not None or reply.invite is not None:
        raise LinkError("handshake reply must carry the link name and key only")


class _LinkState:
    """What the manager knows about one link name (only names that exist on this node)."""

    def __init__(self, name):
        self.name = name
        self.conn = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.dialer = None
        self.url = None
        self.invite = None  # the invitation the dialer presents until the peer accepted the link
        self.last_error = None
        self.connects = 0
        self.failures = 0
        self.backoff = 0.0
        self.duplicates = 0
        self.rejected = 0


class _Connection:
    def __init__(self, manager, link, stream, initiator_key, direction):
        self.manager = manager
        self.link = link
        self.stream = stream
        self.initiator_key = initiator_key
        self.direction = direction  # "out": we dialed; "in": the peer dialed
        self.peer = stream.peer
        self.sent_upto = 0
        self.peer_acked = 0  # the highest Ack the peer sent on this connection
        self.last_sent = time.monotonic()
        self.kick = asyncio.Event()
        self.kick.set()
        self.closing = False
        self.bad_messages = 0

    def send(self, msg):
        _send(self.stream, msg)
        self.last_sent = time.monotonic()

    def close(self, why=None):
        if not self.closing:
            self.closing = True
            if why:
                log.info("link %s (%s): closing connection: %s", self.link, self.peer, why)
            self.stream.close()

    def abort(self):
        """Drop the TCP connection at once (no flush), as a crash or a network failure would."""
        self.closing = True
        self.stream.abort()


class _GroupCommit:
    """Reads of every connection that arrive within one loop iteration, applied in one store
    transaction (LinkManager._apply_group): one COMMIT instead of one per read. submit()
    returns that member's result once the group's transaction committed (or raises what
    it raised). A group holds at most GROUP_MAX link messages (a read that would go over
    waits for the next group, one read always fits), so a peer flooding one read cannot make
    a transaction unbounded: BATCH frames per read bound what one member brings."""

    def __init__(self, manager):
        self.manager = manager
        self.waiting = []  # [(conn, link_msgs, acked, future)]
        self.scheduled = False
        self.groups = 0  # transactions run (status / tests)
        self.members = 0  # reads they applied

    def submit(self, conn, link_msgs, acked):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiting.append((conn, link_msgs, acked, fut))
        if not self.scheduled:
            self.scheduled = True
            # call_soon: the readers woken in this iteration submit before the group runs.
            loop.call_soon(self._run)
        return fut

    def _run(self):
        self.scheduled = False
        group = []
        count = 0
        while self.waiting and (not group or count + len(self.waiting[0][1]) <= GROUP_MAX):
            item = self.waiting.pop(0)
            if item[3].done():  # its reader was cancelled (connection closed): drop the read
                continue
            group.append(item)
            count += len(item[1])
        if self.waiting:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._run)
        if not group:
            return
        self.groups += 1
        self.members += len(group)
        try:
            results = self.manager._apply_group([(conn, msgs, acked) for conn, msgs, acked, _ in group])
        except BaseException as e:
            for item in group:
                if not item[3].done():
                    item[3].set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for item, result in zip(group, results):
            if item[3].done():
                continue
            if isinstance(result, BaseException):
                item[3].set_exception(result)
            else:
                item[3].set_result(result)


class LinkManager:
    """Runs the node's links. handler(db, link_name, msg) is called inside a store transaction
    this manager opens, for every inner message exactly once (see the module docstring)."""

    def __init__(self, store, identity, handler, my_link_url_fn=None, loop=None, backoff=(0.1, 5.0),
                 handshake_timeout=HANDSHAKE_TIMEOUT, outbox_limit=outbox.MAX_OUTBOX, dial_callbacks=True,
                 keepalive=KEEPALIVE, clock=time.time):
        self.store = store
        self.identity = identity
        self.handler = handler
        self.my_link_url_fn = my_link_url_fn
        self.loop = loop
        self.backoff = backoff
        self.handshake_timeout = handshake_timeout
        self.outbox_limit = outbox_limit
        self.dial_callbacks = dial_callbacks
        self.keepalive = keepalive
        self.clock = clock  # wall clock for invitation expiry
        self._links = {}
        self._tasks = set()
        self._listeners = []
        self._closed = False
        self.refused = 0  # incoming link requests refused
        self._group = _GroupCommit(self)
        # --developer only (amiko.node.daemon): fn(when, members) called in every group
        # transaction just before its COMMIT (when "before") and right after it, before any Ack
        # is sent ("after"), e.g. to SIGKILL the node in the middle of one.
        self.dev_crash_point = None

    # ---- public API

    def connect(self, link_name, url):
        """Keep an outgoing connection for link_name to url (amikolink://host:port/NAME?key=HEX
        [&invite=SECRET]), reconnecting with exponential backoff and jitter. Raises
        URLError/AmikoError at once on a bad URL; without ?key= the links row's pinned
        remote_key is used (refused if there is none)."""
        if self._closed:
            raise AmikoError("links: manager is closed")
        parsed = parse_link(url) if isinstance(url, str) else url
        key = link_key_from_url(parsed)
        invite = invite_from_url(parsed)
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
        state.invite = invite
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

    async def listen(self, host, port, limits=None):
        """A listener that accepts only node links (the daemon has its own shared listener);
        returns its asyncio server."""
        listener = Listener(self.identity, self._on_listener_connection,
                            limits or Limits(handshake_timeout=self.handshake_timeout), name="links")
        await listener.start(host, port)
        self._listeners.append(listener)
        return listener.server

    async def handle_incoming(self, stream, first_frame):
        """Serve an incoming, handshaken stream whose first frame (already read) should be
        ConnectLink; returns when the connection ends."""
        if self._closed:
            stream.abort()
            return
        try:
            conn = self._responder_handshake(stream, first_frame)
        except LinkError as e:
            self.refused += 1
            log.warning("link from %s refused: %s", stream.peer, e.reason)
            await _send_error_and_close(stream, e.code, e.reason,
                                        first_frame.type if first_frame.type != m.CONNECT_LINK else None)
            return
        except AmikoError as e:  # the store refused a change
            self.refused += 1
            log.warning("link from %s refused: %s", stream.peer, e.reason)
            await _send_error_and_close(stream, codes.INTERNAL, "cannot record the link")
            return
        await self._run(conn)

    async def close(self):
        """Stop dialing, close every connection and listener, wait for the tasks to end."""
        self._closed = True
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
        for listener in self._listeners:
            await listener.close()
        self._listeners = []

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

    async def _on_listener_connection(self, stream, first_frame):
        if first_frame.type != m.CONNECT_LINK:
            self.refused += 1
            reason = "first message must be ConnectLink, got type %d" % first_frame.type
            log.warning("connection from %s: %s", stream.peer, reason)
            await _send_error_and_close(stream, codes.PROTOCOL, reason, first_frame.type)
            return
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self.handle_incoming(stream, first_frame)
        finally:
            self._tasks.discard(task)

    def _refuse(self, name, reason, code, peer):
        """A LinkError for a refused ConnectLink on an existing link, recorded as its last error."""
        self._state(name).last_error = "refused %s: %s" % (peer, reason)
        return LinkError(reason, code)

    def _responder_handshake(self, stream, first_frame):
        """Check the ConnectLink of an incoming stream (module docstring); the installed
        _Connection, or LinkError."""
        peer = stream.peer
        hello = _expect_connect(first_frame, "first message")
        name, key = hello.link, stream.remote_key
        if hello.key != key:
            raise LinkError("ConnectLink names key %s, not the key of the handshake" % hello.key.hex(), codes.AUTH)
        callback = self._usable_callback(name, hello.callback, key, peer)
        with self.store.transaction() as db:
            row = channels.get_link(db, name)
            if row is None:
                raise LinkError("no link named %s on this node" % name, codes.UNKNOWN_LINK)
            pinned = bytes(row["remote_key"]) if row["remote_key"] else None
            if pinned is not None and key != pinned:
                raise self._refuse(name, "link %s: key %s is not the key pinned for it" % (name, key.hex()),
                                   codes.AUTH, peer)
            if pinned is None:
                if hello.invite is None:
                    raise self._refuse(name, "link %s has no pinned peer key and the peer brought no invitation "
                                       "(dial the URL `amiko link %s` printed, or pin a key with --peer-key)"
                                       % (name, name), codes.AUTH, peer)
                problem = invites.redeem(db, self.identity, name, hello.invite, self.clock())
                if problem is not None:
                    raise self._refuse(name, "link %s: invitation refused: %s" % (name, problem), codes.AUTH, peer)
                channels.set_link_key(db, name, key)
                log.info("link %s: pinned peer key %s (invitation accepted, from %s)", name, key.hex(), peer)
            if callback and not row["remote_url"]:
                channels.add_link(db, name, remote_url=callback)
        state = self._state(name)
        conn = _Connection(self, name, stream, key, "in")
        if not self._install(state, conn):
            raise LinkError("link %s is already connected" % name, codes.BUSY)
        _send(stream, m.Message(m.CONNECT_LINK, {"link": name, "key": self.identity.pubkey}))
        if callback and self.dial_callbacks and state.dialer is None and not self._closed:
            try:
                self.connect(name, callback)
            except AmikoError as e:
                log.info("link %s: not dialing callback %s: %s", name, callback, e.reason)
        return conn

    def _usable_callback(self, name, callback, key, peer):
        """The callback URL if it pins the key the peer authenticated with, else None."""
        if callback is None:
            return None
        try:
            url = parse_link(callback)
            ok = link_key_from_url(url) == key and "invite" not in url.query
        except URLError:
            ok = False
        if not ok:
            log.warning("link %s: ignoring callback %s from %s: it does not pin the peer's key", name, callback, peer)
            return None
        return callback

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
        peer = "%s:%d" % (url.host, url.port)
        while not self._closed:
            await state.idle.wait()
            started = None
            stream = None
            try:
                stream = await connect(url.host, url.port, self.identity, key, timeout=self.handshake_timeout,
                                       max_frame=MAX_FRAME)
                callback = None
                if self.my_link_url_fn is not None:
                    try:
                        callback = self.my_link_url_fn(state.name)
                    except Exception:
                        callback = None
                await initiator_handshake(stream, url.path, callback, state.invite, self.handshake_timeout)
                conn = _Connection(self, state.name, stream, self.identity.pubkey, "out")
                state.invite = None  # accepted: the invitation is spent
                self._pin_after_dial(state.name, url, key)
                if self._install(state, conn):
                    started = loop.time()
                    await self._run(conn)
                else:
                    conn.close("the peer's connection for this link is preferred")
            except asyncio.CancelledError:
                if stream is not None:
                    stream.abort()
                raise
            except (LinkError, StreamError, OSError) as e:
                if isinstance(e, StreamError) and e.code == "auth" and stream is None:
                    reason = "handshake refused: the peer's key is not the pinned key %s (%s)" % (key.hex(), e.reason)
                else:
                    reason = e.reason if isinstance(e, AmikoError) else str(e) or type(e).__name__
                state.last_error = "dial %s: %s" % (peer, reason)
                log.info("link %s: dial %s failed: %s", state.name, peer, reason)
                if stream is not None:
                    code = e.code if isinstance(e, LinkError) else None
                    await _send_error_and_close(stream, code, reason)
            except Exception as e:
                state.last_error = "dial %s: %s" % (peer, e)
                log.exception("link %s: dial %s failed", state.name, peer)
                if stream is not None:
                    stream.abort()
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
        """Record the dialed URL (without its invitation) and key as the link's (the responder
        role checks the pin too)."""
        clean = str(without_invite(url))
        try:
            with self.store.transaction() as db:
                row = channels.get_link(db, name)
                stored = row and row["remote_url"]
                if row is None or not row["remote_key"] or bytes(row["remote_key"]) != key:
                    channels.add_link(db, name, remote_url=None if stored and "invite=" not in stored else clean,
                                      remote_key=key)
                elif stored is None or "invite=" in stored:
                    channels.add_link(db, name, remote_url=clean)
        except AmikoError as e:
            log.warning("link %s: cannot record the peer key: %s", name, e.reason)

    async def _run(self, conn):
        """Serve an authenticated connection until it ends."""
        sender = self._spawn(self._sender(conn))
        keepalive = self._spawn(self._keepalive(conn))
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
                await _send_error_and_close(conn.stream, e.code, e.reason)
        except StreamError as e:
            state = self._links.get(conn.link)
            if state is not None and state.conn is conn and not conn.closing:
                state.last_error = "%s: %s" % (conn.peer, e.reason)
            if isinstance(e, StreamClosed):
                log.info("link %s (%s): connection ended: %s", conn.link, conn.peer, e.reason)
            else:
                log.warning("link %s (%s): %s", conn.link, conn.peer, e.reason)
        except Exception:
            log.exception("link %s (%s): failed", conn.link, conn.peer)
        finally:
            conn.close()
            sender.cancel()
            keepalive.cancel()
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
                    conn.send(m.Message(LINK_MSG, {"seq": seq, "msg_type": mtype, "body": body}))
                conn.sent_upto = rows[-1][0]
                await conn.stream.drain()
        except asyncio.CancelledError:
            pass
        except StreamError as e:
            conn.close("send failed: %s" % e.reason)
        except Exception:
            log.exception("link %s (%s): sender failed", conn.link, conn.peer)
            conn.close()

    async def _keepalive(self, conn):
        """Send the latest Ack whenever nothing was sent for `keepalive` seconds."""
        try:
            while not conn.closing:
                wait = conn.last_sent + self.keepalive - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                with self.store.read() as db:
                    seq = outbox.last_in(db, conn.link)
                conn.send(m.Message(ACK, {"seq": seq}))
        except asyncio.CancelledError:
            pass
        except StreamError:
            conn.close()
        except Exception:
            log.exception("link %s (%s): keepalive failed", conn.link, conn.peer)
            conn.close()

    async def _receive(self, conn):
        idle = IDLE_FACTOR * self.keepalive
        while not conn.closing:
            try:
                batch = await conn.stream.recv_batch(timeout=idle, limit=BATCH)
            except StreamError as e:
                if e.code == "timeout":
                    raise LinkError("no frame from the peer within %.3g s: dropping the link" % idle, codes.TIMEOUT) from None
                raise
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
            if acked is not None and acked <= conn.peer_acked and not link_msgs:
                acked = None  # a keepalive repeating an Ack already applied: no transaction
            if link_msgs or acked is not None:
                ack, apply_error = await self._group.submit(conn, link_msgs, acked)
                error = apply_error or error
                if acked is not None and apply_error is None:
                    conn.peer_acked = max(conn.peer_acked, acked)
                if conn.stream.error is not None:
                    raise conn.stream.error  # the stream is gone: the peer resends what is not acknowledged
                if ack is not None and not conn.closing:
                    # No drain() here: if both ends waited for their peer to read while not
                    # reading themselves, bulk traffic both ways would deadlock. The buffer check
                    # bounds what a peer that does not read can make us hold.
                    conn.send(m.Message(ACK, {"seq": ack}))
            if error is not None:
                raise error
            if conn.stream.error is not None:
                raise conn.stream.error
            if conn.stream.buffered() > MAX_WRITE_BUFFER:
                raise LinkError("peer does not read what we send (%d bytes waiting)" % conn.stream.buffered())

    def _apply_group(self, members):
        """Consume the reads of several connections (members: [(conn, link_msgs, acked)]) in
        ONE store transaction: one COMMIT (one fsync) for all of them. Returns one result per
        member, (seq to acknowledge or None, LinkError or None) or the exception that member's
        own work raised; the caller sends the Acks only after this returned, i.e. after COMMIT.

        Every member runs in its own savepoint, and every handler call in one inside it: a
        member whose bookkeeping fails is rolled back alone (its connection is closed, the
        others commit), a handler that raises loses only its own changes. A group of Acks
        only (nothing to lose: a lost one means a resend the peer ignores as a duplicate)
        commits without waiting for the disk. A failure of the store itself propagates: the
        whole transaction rolls back, nothing is acknowledged, the peers resend later."""
        durable = any(link_msgs for _, link_msgs, _ in members)
        results = []
        reports = []
        with self.store.transaction(durable=durable) as db:
            for conn, link_msgs, acked in members:
                db.execute("SAVEPOINT amiko_link_read")
                try:
                    result, rejected = self._apply_read(db, conn, link_msgs, acked)
                except Exception as e:
                    db.execute("ROLLBACK TO amiko_link_read")
                    db.execute("RELEASE amiko_link_read")
                    log.exception("link %s (%s): applying a read failed", conn.link, conn.peer)
                    results.append(e)
                    continue
                db.execute("RELEASE amiko_link_read")
                results.append(result)
                reports.append((conn, rejected))
            if self.dev_crash_point is not None:
                self.dev_crash_point("before", members)
        if self.dev_crash_point is not None:
            self.dev_crash_point("after", members)
        kick = False
        for conn, rejected in reports:
            state = self._state(conn.link)
            for seq, mtype, (code, reason) in rejected:
                state.rejected += 1
                log.warning("link %s (%s): %s seq %d rejected: %s", conn.link, conn.peer,
                            m.name_of(mtype) or "type %d" % mtype, seq, reason)
            kick = kick or bool(rejected)
        if durable or kick:
            # A handler may queue on any link (a forwarded Lock leaves on another link than
            # it came in on), so every link with a connection gets to send.
            self.kick()
        return results

    def _apply_read(self, db, conn, link_msgs, acked):
        """One connection's LinkMsgs of one read, in order, and its highest Ack, inside the
        group's transaction. Returns ((ack, LinkError or None), rejected): what precedes a
        protocol error is still applied.

        Each handler call runs in a savepoint: if it raises, only its own changes are rolled
        back (and its after_commit callbacks dropped); the seq is consumed and an Error queued
        for the peer in the same transaction."""
        link = conn.link
        state = self._state(link)
        ack = None
        error = None
        rejected = []
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
            if problem is not None:
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
        return (ack, error), rejected

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
            if problem[0] == codes.INTERNAL:
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
        code = codes.BAD_MESSAGE if m.name_of(fr.type) is None else codes.PROTOCOL
        conn.send(error_message(code, reason, fr.type))
