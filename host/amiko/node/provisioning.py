"""Provisioning a wallet through a provider URL with a one-time invitation (issue 5).

`amiko wallet invite --home HOME` (on the provider's machine) makes an invitation: a random
32-byte code c, shown once as base32. The provider's database keeps only values derived from
it: id = HMAC-SHA256(c, "amiko invite id") and k = HMAC-SHA256(c, "amiko invite mac"), with the
expiry and the limits it allows (table invitations). An invitation is used at most once.

`amiko wallet provision --port P --provider amikolink://host:port/WALLET?key=PUB --invite c`
(on the wallet owner's machine) opens a BOLT 8 connection (amiko.wire.stream.connect_blocking)
to the provider node with a fresh ephemeral transport key, pinned to PUB: a node that does not
hold PUB fails the handshake before any byte of the request is sent. The first frame is a
ProvisionRequest (host-only message types 50..53, registered here, dispatched by daemon.py):

    host -> provider  ProvisionRequest{invite = id, wallet, provider_key = PUB (pinned),
                      ephemeral = E (fresh secp256k1 public key), limit?, daily?, auto?,
                      mac = HMAC(k, cbor["amiko provision request v1", body without mac])}
    provider          checks: invitation known, unused, unexpired; MAC; provider_key is its own
                      node key; wallet id free; limits within the invitation's. Then
                      S  = sha256(ECDH(node key, E).x)
                      T  = sha256(cbor["amiko provision v1", request body as received, PUB,
                                       wallet, provider URL, limit, daily, auto])
                      key = 32 fresh random bytes (the wallet key)
                      box = key XOR HMAC(S, "amiko provision enc" || T)
                      tag = HMAC(S, "amiko provision mac" || T || box)
                      sig = ECDSA(node key, "amiko provision sig" || T || box || tag)
    provider -> host  ProvisionGrant{wallet, provider URL, limit, daily, auto, box, tag, sig}
    host              recomputes T, checks sig against the key pinned in the URL and tag (both
                      over T: any changed field, a replayed or foreign grant fails), decrypts.
    host -> provider  ProvisionConfirm{proof = HMAC(key, "amiko provision confirm" || T)}
    provider          in ONE transaction: the invitation is still unused -> mark it used and
                      create the wallet account (Provider.create_account, the same code path as
                      `provision --provider HOME`)
    provider -> host  ProvisionDone{mac = HMAC(S, "amiko provision done" || T)}
    host              checks the mac, then provisions the wallet over its serial port exactly
                      as in the HOME case (Provision, ProvisionAck proving the key).

Properties: the wallet key never crosses the network in clear (only the holders of E's secret
or of the node key can derive S). Only the holder of the code can make a request that is
accepted (MAC; the database alone does not reveal c). A request aimed at another provider key
(a wrong or substituted pinned key) is refused by the real provider, and an impostor cannot
answer (no signature, no S). Nothing is created until the host proves it decrypted the key
(ProvisionConfirm), so a replayed request (an eavesdropper has no E secret), a tampered answer
or a wrong key leave the invitation unused and no account. An invitation is consumed together
with the account it creates, in one transaction: a second use is refused ("used already").
Errors are Error frames (messages.Error) with a one-line reason; the connection then closes.
"""

import asyncio
import base64
import logging
import os
import time

from amiko_core import codes
from amiko_core import cbor
from amiko_core import messages as m
from amiko_core.errors import AmikoError, DecodeError, URLError
from amiko_core.hashing import hmac_sha256, sha256
from amiko_core.token import constant_time_equal
from amiko_core.url import parse_link

from amiko.node import store as _store

log = logging.getLogger("amiko.provisioning")

CODE_SIZE = 32
REQUEST = 50
GRANT = 51
CONFIRM = 52
DONE = 53
TYPES = (REQUEST, GRANT, CONFIRM, DONE)
CONFIRM_TIMEOUT = 15
DEFAULT_TTL = 86400
MAX_TTL = 30 * 86400

REQUEST_TAG = "amiko provision request v1"
TRANSCRIPT_TAG = "amiko provision v1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS invitations (
    id           BLOB PRIMARY KEY,
    mac_key      BLOB NOT NULL,
    limit_amount INTEGER NOT NULL,
    daily        INTEGER NOT NULL,
    auto         INTEGER NOT NULL,
    expires      INTEGER NOT NULL,
    created      INTEGER NOT NULL,
    used         INTEGER,
    wallet       TEXT
);
"""
_store.register_schema(SCHEMA)


def _register():
    if REQUEST in m.SCHEMA:
        return
    b32 = m.nbytes(32)
    m.register(REQUEST, "ProvisionRequest", (
        (1, "invite", b32, True),
        (2, "wallet", m.ident(), True),
        (3, "provider_key", m.PUBKEY, True),
        (4, "ephemeral", m.PUBKEY, True),
        (5, "limit", m.AMOUNT, False),
        (6, "daily", m.AMOUNT, False),
        (7, "auto", m.uint(m.MAX_AMOUNT), False),
        (8, "mac", b32, True)))
    m.register(GRANT, "ProvisionGrant", (
        (1, "wallet", m.ident(), True),
        (2, "provider", m.text(512), True),
        (3, "limit", m.AMOUNT, True),
        (4, "daily", m.AMOUNT, True),
        (5, "auto", m.uint(m.MAX_AMOUNT), True),
        (6, "box", b32, True),
        (7, "tag", b32, True),
        (8, "signature", m.SIGNATURE, True)))
    m.register(CONFIRM, "ProvisionConfirm", ((1, "proof", b32, True),))
    m.register(DONE, "ProvisionDone", ((1, "mac", b32, True),))


_register()


class ProvisionError(AmikoError):
    """Provisioning through a URL failed; reason is one line."""

    def __init__(self, reason, code="refused"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


# ---------------------------------------------------------------- the code and derived values

def format_code(code):
    return base64.b32encode(code).decode("ascii").rstrip("=").lower()


def parse_code(text):
    """bytes of an invitation code (base32, any case, spaces and dashes ignored, or 64 hex)."""
    t = "".join(ch for ch in str(text) if ch not in " -\t").upper()
    try:
        if len(t) == 2 * CODE_SIZE and all(ch in "0123456789ABCDEF" for ch in t):
            code = bytes.fromhex(t)
        else:
            code = base64.b32decode(t + "=" * (-len(t) % 8))
    except (ValueError, TypeError):
        code = b""
    if len(code) != CODE_SIZE:
        raise ProvisionError("the invitation code is malformed (expected the 52 characters `amiko wallet invite` "
                             "printed)", "invalid")
    return code


def invite_id(code):
    return hmac_sha256(code, b"amiko invite id")


def invite_key(code):
    return hmac_sha256(code, b"amiko invite mac")


def request_mac(k, msg_fields):
    body = {}
    for key, name, _kind, _req in m.SCHEMA[REQUEST][1]:
        if name != "mac" and msg_fields.get(name) is not None:
            body[key] = msg_fields[name]
    return hmac_sha256(k, cbor.dumps([REQUEST_TAG, body]))


def transcript(request_body, provider_key, wallet, provider_url, limit, daily, auto):
    return sha256(cbor.dumps([TRANSCRIPT_TAG, bytes(request_body), bytes(provider_key), wallet, provider_url,
                              limit, daily, auto]))


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def seal(shared, t, key):
    box = _xor(key, hmac_sha256(shared, b"amiko provision enc" + t))
    tag = hmac_sha256(shared, b"amiko provision mac" + t + box)
    return box, tag


def signed_bytes(t, box, tag):
    return b"amiko provision sig" + t + box + tag


def _error(reason):
    from amiko.node import paylink_tcp

    return paylink_tcp.error_frame(codes.REJECTED, reason, REQUEST)


# ---------------------------------------------------------------- provider side

def create_invitation(ledger, limit, daily, auto, ttl, clock=time.time):
    code = os.urandom(CODE_SIZE)
    now = int(clock())

    def insert(db):
        db.execute("INSERT INTO invitations (id, mac_key, limit_amount, daily, auto, expires, created) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", (invite_id(code), invite_key(code), limit, daily, auto,
                                                    now + ttl, now))

    ledger.transact(insert)
    return code, now + ttl


def _invitation(db, iid):
    row = db.execute("SELECT mac_key, limit_amount, daily, auto, expires, used, wallet FROM invitations WHERE id = ?",
                     (bytes(iid),)).fetchone()
    if row is None:
        return None
    return dict(zip(("mac_key", "limit", "daily", "auto", "expires", "used", "wallet"), row))


def check_request(provider, db, req, now):
    """(invitation, values) or raise ProvisionError: the checks before anything is made."""
    inv = _invitation(db, req.invite)
    if inv is None:
        raise ProvisionError("unknown invitation: the code is wrong or was never issued by this provider")
    if not constant_time_equal(request_mac(inv["mac_key"], req.fields), req.mac):
        raise ProvisionError("the request's MAC does not verify under the invitation code")
    if inv["used"] is not None:
        raise ProvisionError("the invitation was used already (wallet %s)" % inv["wallet"])
    if now >= inv["expires"]:
        raise ProvisionError("the invitation expired %d s ago" % (now - inv["expires"]))
    own = provider.identity.pubkey
    if bytes(req.provider_key) != own:
        raise ProvisionError("the request pins provider key %s but this provider's key is %s: check the URL"
                             % (bytes(req.provider_key).hex()[:16], own.hex()[:16]))
    if provider.wallet(db, req.wallet) is not None:
        raise ProvisionError("wallet %s exists already on this provider: choose another wallet id" % req.wallet)
    values = {}
    for name in ("limit", "daily", "auto"):
        v = req.fields.get(name)
        if v is None:
            v = inv[name]
        elif v > inv[name]:
            raise ProvisionError("%s %d is over the invitation's %d" % (name, v, inv[name]))
        values[name] = v
    if values["limit"] <= 0 or values["daily"] <= 0:
        raise ProvisionError("limit and daily must be positive")
    return inv, values


async def serve(provider, stream, first):
    """The provider's side of one provisioning connection (an authenticated stream whose first
    frame is a ProvisionRequest)."""
    from amiko.node import paylink_tcp
    from amiko.wire import stream as streams

    try:
        req = m.from_frame(first)
        if req.type != REQUEST:
            raise DecodeError("expected ProvisionRequest, got %s" % req.name)
    except DecodeError as e:
        log.info("provisioning: bad request from %s: %s", stream.peer, e.reason)
        stream.send(paylink_tcp.error_frame(codes.PROTOCOL, e.reason, first.type))
        await _drain(stream)
        return
    identity = provider.identity
    try:
        with provider.ledger.read() as db:
            _inv, values = check_request(provider, db, req, int(provider.clock()))
        url = provider.provider_url(req.wallet)
        try:
            shared = identity.ecdh(req.ephemeral)
        except Exception:
            raise ProvisionError("the ephemeral key is not a valid secp256k1 point") from None
        t = transcript(first.body, identity.pubkey, req.wallet, url, values["limit"], values["daily"],
                       values["auto"])
        key = os.urandom(32)
        box, tag = seal(shared, t, key)
        grant = m.Message(GRANT, wallet=req.wallet, provider=url, box=box, tag=tag,
                          signature=identity.sign(signed_bytes(t, box, tag)), **values)
        stream.send_message(grant)
        try:
            confirm = await stream.recv_message(timeout=CONFIRM_TIMEOUT)
        except (streams.StreamError, ConnectionError, DecodeError) as e:
            log.info("provisioning %s: no confirmation (%s), nothing created", req.wallet, e)
            return
        if confirm.type != CONFIRM or not constant_time_equal(
                hmac_sha256(key, b"amiko provision confirm" + t), confirm.proof):
            raise ProvisionError("the confirmation does not prove the key: nothing created")

        def commit(db):
            check_request(provider, db, req, int(provider.clock()))
            db.execute("UPDATE invitations SET used = ?, wallet = ? WHERE id = ?",
                       (int(provider.clock()), req.wallet, bytes(req.invite)))
            provider.create_account(db, req.wallet, key, values)

        provider.ledger.transact(commit)
        log.info("wallet %s provisioned through an invitation", req.wallet)
        stream.send_message(m.Message(DONE, mac=hmac_sha256(shared, b"amiko provision done" + t)))
    except ProvisionError as e:
        log.info("provisioning refused: %s", e.reason)
        stream.send(_error(e.reason))
    except streams.StreamClosed:
        return
    await _drain(stream)


async def _drain(stream):
    from amiko.wire import stream as streams

    try:
        await asyncio.wait_for(stream.drain(), 5)
    except (streams.StreamError, ConnectionError, asyncio.TimeoutError):
        pass


# ---------------------------------------------------------------- host side

class _Conn:
    """The host's blocking BOLT 8 connection to the provider, from a fresh ephemeral transport
    key, pinned to the provider key of the URL."""

    def __init__(self, host, port, pinned, timeout):
        from amiko.node.identity import Identity
        from amiko.wire import stream as streams

        self.timeout = timeout
        try:
            self.s = streams.connect_blocking(host, port, Identity.generate(), pinned, timeout)
        except streams.StreamError as e:
            if e.code == "auth":
                raise ProvisionError("the node at %s:%s does not hold the provider key pinned in the URL (BOLT 8 "
                                     "handshake failed: %s): wrong URL or someone else answers there, nothing "
                                     "provisioned" % (host, port, e.reason), "refused") from None
            raise ProvisionError("cannot reach the provider at %s:%s: %s" % (host, port, e.reason),
                                 "unreachable") from None
        except OSError as e:
            raise ProvisionError("cannot reach the provider at %s:%s: %s" % (host, port, e.strerror or e),
                                 "unreachable") from None

    def send(self, msg):
        from amiko.wire import stream as streams

        try:
            self.s.send_message(msg)
        except (streams.StreamError, OSError) as e:
            raise ProvisionError("connection to the provider failed: %s" % getattr(e, "reason", e),
                                 "unreachable") from None

    def recv(self, want):
        from amiko.wire import stream as streams

        try:
            fr = self.s.recv(timeout=self.timeout)
        except streams.StreamClosed:
            raise ProvisionError("the provider closed the connection", "unreachable") from None
        except streams.StreamError as e:
            if e.code == "timeout":
                raise ProvisionError("the provider did not answer in time", "timeout") from None
            raise ProvisionError("the provider sent a bad frame: %s" % e.reason) from None
        except OSError as e:
            raise ProvisionError("connection to the provider failed: %s" % (e.strerror or e), "unreachable") \
                from None
        try:
            msg = m.from_frame(fr)
        except DecodeError as e:
            raise ProvisionError("the provider sent a bad message: %s" % e.reason) from None
        if msg.type == m.ERROR:
            raise ProvisionError("the provider refused: %s" % msg.reason)
        if msg.type != want:
            raise ProvisionError("the provider answered %s, expected %s" % (msg.name, m.name_of(want)))
        return msg

    def close(self):
        self.s.close()


def parse_provider_url(text):
    """(host, port, wallet id or None, pinned key) of amikolink://host:port/NAME?key=HEX."""
    from amiko.node.identity import valid_pubkey
    from amiko_core.url import DEFAULT_PORT

    try:
        u = parse_link(text)
    except URLError as e:
        raise ProvisionError("bad provider URL %r: %s" % (text, e.reason), "invalid") from None
    try:
        key = bytes.fromhex(u.query.get("key", ""))
    except ValueError:
        key = b""
    if not valid_pubkey(key):
        raise ProvisionError("the provider URL must pin the provider's key: ?key=<66 hex digits>", "invalid")
    return u.host, u.port or DEFAULT_PORT, u.path or None, key


def request_account(url_text, code_text, wallet=None, limit=None, daily=None, auto=None, timeout=20):
    """The host side: returns dict(wallet, key, provider, limit, daily, auto) or raises ProvisionError."""
    host, port, url_wallet, pinned = parse_provider_url(url_text)
    if wallet and url_wallet and wallet != url_wallet:
        raise ProvisionError("--wallet %s differs from the wallet id %s in the provider URL" % (wallet, url_wallet),
                             "invalid")
    wallet = wallet or url_wallet or "w-" + os.urandom(4).hex()
    code = parse_code(code_text)
    from amiko.node.identity import Identity, verify

    eph = Identity.generate()  # ephemeral: in memory only, forgotten after this call
    fields = {"invite": invite_id(code), "wallet": wallet, "provider_key": pinned,
              "ephemeral": eph.pubkey, "limit": limit, "daily": daily,
              "auto": auto}
    fields["mac"] = request_mac(invite_key(code), {k: v for k, v in fields.items() if v is not None})
    req = m.Message(REQUEST, fields)
    body = m.encode(req)
    conn = _Conn(host, port, pinned, timeout)
    try:
        conn.send(req)
        g = conn.recv(GRANT)
        if g.wallet != wallet:
            raise ProvisionError("the provider's answer is for another wallet (%s)" % g.wallet)
        for name, want in (("limit", limit), ("daily", daily), ("auto", auto)):
            if want is not None and g.fields[name] != want:
                raise ProvisionError("the provider's answer has %s %d, asked %d" % (name, g.fields[name], want))
        t = transcript(body, pinned, g.wallet, g.provider, g.limit, g.daily, g.auto)
        if not verify(pinned, signed_bytes(t, g.box, g.tag), g.signature):
            raise ProvisionError("the provider's answer is not signed by the key pinned in the URL: wrong provider "
                                 "or tampered answer, nothing provisioned")
        shared = eph.ecdh(pinned)
        if not constant_time_equal(hmac_sha256(shared, b"amiko provision mac" + t + g.box), g.tag):
            raise ProvisionError("the provider's answer fails its MAC: tampered, nothing provisioned")
        key = _xor(g.box, hmac_sha256(shared, b"amiko provision enc" + t))
        conn.send(m.Message(CONFIRM, proof=hmac_sha256(key, b"amiko provision confirm" + t)))
        done = conn.recv(DONE)
        if not constant_time_equal(hmac_sha256(shared, b"amiko provision done" + t), done.mac):
            raise ProvisionError("the provider's confirmation fails its MAC: the account may not exist")
    finally:
        conn.close()
    return {"wallet": wallet, "key": key, "provider": g.provider, "limit": g.limit, "daily": g.daily,
            "auto": g.auto}
