"""`amiko node`: the node process, wiring store, engine, links, payment links and control.

- One TCP listener on the node's port (node.toml `listen`), amiko.wire.listener: every
  connection runs BOLT 8 with the node's identity key, under the bounds of node.toml
  (`handshake_timeout`, `first_frame_timeout`, `max_connections`,
  `max_connections_per_address`; a connection over a bound evicts the oldest one that has not
  authenticated yet). The first frame decides what it is (Node._on_connection): ConnectLink
  -> LinkManager.handle_incoming (a node link), Pay -> the payee side of a payment link
  (paylink_tcp), Auth -> the provider of wallet accounts (amiko.node.provider),
  ProvisionRequest -> a wallet provisioned through an invitation (amiko.node.provisioning),
  Control -> the control API for a key the operator granted some methods (amiko.node.control_stream,
  amiko.node.grants: e.g. a shop's bridge with request, cancel, watch). Anything else: an Error frame and close. `amiko status` shows the listener's counters.
- Node links: `amiko link NAME` issues a one-time invitation (amiko.node.invites) and prints
  the URL carrying it; `amiko link NAME URL` dials; `--peer-key HEX` pins a key directly.
  Idle links send keepalives every node.toml `link_keepalive` seconds (amiko.node.links).
- The control server on HOME/control.sock (amiko.node.control: JSON-RPC 2.0, every method
  described by schemas/control/METHOD.json) for the `amiko` commands, with every method; the
  `watch` subscription (amiko.node.watches) pushes payment state changes to its connection.
- Every state change runs in one store transaction (amiko.node.ports.Ledger.transact); after it
  commits the links are kicked so the messages it enqueued go out. The services get narrow
  ports (amiko.node.ports), the engine, the identity and the config, never the Node. Engine events (delivered after
  commit) are dispatched on the next loop iteration to the payment-link sessions.
- Timers (route, lock and commit time-outs, stored in the database) are fired by
  amiko.node.timer_loop.TimerLoop, each in its own transaction; it also purges old tombstones.
- SIGTERM / SIGINT: stop accepting, close links and sessions, close the store, exit 0.
- `amiko node --developer` adds the control method developer_refuse_settle {link, refuse}: this
  node then cheats that peer on purpose (takes the token, settles nothing, answers its
  RequestCommit with an Error), for the attack tests; never use it in production. It also adds
  debug_drop_link and allows the payment links' developer options (--dev-withhold-token,
  --dev-lock-delay; see amiko.node.paylink_tcp), --dev-kill-in-group-commit before|after (SIGKILL
  in the first link group transaction applying messages of two or more connections, before or
  right after its COMMIT: the durability tests) and --dev-check-schemas (every control call,
  answer and notification checked against schemas/control/, amiko.node.schemas). No environment
  variable changes behaviour.
- Logs go to stderr and to HOME/node.log (level from $AMIKO_LOG_LEVEL, default INFO).
- umask 077, and HOME made private (filemodes.make_private: 0700, files 0600) before anything is
  opened; every mode it had to fix is logged, one line per path.
- The home's lock (home.Home.acquire) is held for the whole run: a second node on the
  same home is refused with a one-line error.
"""

import asyncio
import json
import logging
import os
import signal
import sys
import time

from amiko_core import codes
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.errors import AmikoError, URLError
from amiko_core.url import LINK, AmikoURL, format_pay, parse_link

from amiko.filemodes import describe_fix, make_private, private_umask
from amiko.node import control as controls
from amiko.node import control_stream, paylink_tcp, provisioning
from amiko.node.control import ControlError
from amiko.node.grants import Grants
from amiko.node.ports import Ledger, Payments
from amiko.node.provider import Provider
from amiko.node.timer_loop import TimerLoop
from amiko.node.watches import Watches
from amiko.wire.listener import Limits, Listener

log = logging.getLogger("amiko.node")

LINK_WAIT_MAX = 120


def _modules():
    """Import the node's modules (this registers their schemas with the store)."""
    from amiko.node import engine, identity, links, outbox, store

    return engine, identity, links, outbox, store


def create_database(home):
    """Create the home's database with every module's tables."""
    store = _modules()[4]
    store.Store(home.db_path).close()


def setup_logging(home, stream=None):
    level = getattr(logging, os.environ.get("AMIKO_LOG_LEVEL", "INFO").upper(), logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("amiko")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    for handler in (logging.StreamHandler(stream or sys.stderr), logging.FileHandler(home.log_path)):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.propagate = False
    return root


def _hex(b):
    return b.hex() if isinstance(b, (bytes, bytearray, memoryview)) else b


def _jsonable(value):
    """Status values as JSON: bytes as hex, tuples as lists, rows as dicts."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "keys"):  # sqlite3.Row
        return {k: _jsonable(value[k]) for k in value.keys()}
    return value


def _amount(params, key="amount"):
    value = params.get(key)
    if type(value) is not int or not 0 < value <= m.MAX_AMOUNT:
        raise ControlError("invalid", "%s must be a whole number in 1..%d, got %r" % (key, m.MAX_AMOUNT, value))
    return value


def _credit_limit(params):
    """The optional credit_limit parameter (0..MAX_AMOUNT), or None."""
    value = params.get("credit_limit")
    if value is not None and (type(value) is not int or not 0 <= value <= m.MAX_AMOUNT):
        raise ControlError("invalid", "credit_limit must be a whole number in 0..%d, got %r" % (m.MAX_AMOUNT, value))
    return value


def _text(params, key, required=True):
    value = params.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ControlError("invalid", "%s must be a non-empty string" % key)
    return value


class Node:
    """The running node: its parts and the control methods."""

    def __init__(self, home, config, identity, developer=False, dev_options=None):
        self.home = home
        self.developer = developer
        self.dev_options = dict(dev_options or {}) if developer else {}  # paylink_tcp's developer options
        self.check_schemas = bool(self.dev_options.pop("check_schemas", False))  # --dev-check-schemas
        self.kill_in_group_commit = self.dev_options.pop("kill_in_group_commit", None)  # --dev-kill-in-group-commit
        self.config = config
        self.identity = identity
        self.loop = None
        self.store = None
        self.ledger = None  # amiko.node.ports.Ledger: what the services change state through
        self.engine = None
        self.links = None
        self.paylinks = None
        self.provider = None
        self.listener = None
        self.control = None
        self.timers = None  # amiko.node.timer_loop.TimerLoop (issue 4)
        self.watches = None  # amiko.node.watches.Watches
        self.grants = None  # amiko.node.grants.Grants
        self.stopping = None
        self.started = time.time()

    # -- start / stop

    async def start(self):
        engine_mod, _, links_mod, _, store_mod = _modules()
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.store = store_mod.Store(self.home.db_path)
        self.engine = engine_mod.Engine(self.store, self.config, self.identity)
        self.engine.subscribe(self._on_engine_event)
        cfg = self.config
        self.links = links_mod.LinkManager(self.store, self.identity, self._on_link_message, self.link_url,
                                           loop=self.loop, handshake_timeout=cfg.handshake_timeout,
                                           keepalive=cfg.link_keepalive)
        if self.kill_in_group_commit is not None:
            self.links.dev_crash_point = self._dev_kill_in_group_commit
        self.ledger = Ledger(self.store, self.links.kick)
        self.paylinks = paylink_tcp.PaymentLinks(self.ledger, self.engine, Payments(self.ledger, self.engine),
                                                 self.identity, cfg, self.dev_options)
        self.provider = Provider(self.ledger, self.engine, self.identity, cfg)
        self.ledger.transact(self.provider.reconcile)
        self.watches = Watches(self.ledger)
        self.grants = Grants(self.ledger)
        self.listener = Listener(self.identity, self._on_connection, Limits(
            handshake_timeout=cfg.handshake_timeout, first_frame_timeout=cfg.first_frame_timeout,
            max_connections=cfg.max_connections, max_per_address=cfg.max_connections_per_address),
            name="node %s" % cfg.name)
        await self.listener.start(cfg.host, cfg.port)
        self.control = controls.ControlServer(self.home.socket_path, self.methods(), check=self.check_schemas)
        await self.control.start()
        with self.ledger.read() as db:
            rows = [_jsonable(r) for r in self.engine.links(db)]
        for row in rows:
            if row.get("remote_url"):
                self.links.connect(row["name"], row["remote_url"])
        self.links.kick()
        self.timers = TimerLoop(self.ledger, self.engine).start()
        self.control.methods["cancel"] = self.rpc_cancel  # issue 4
        if self.developer:
            log.warning("DEVELOPER MODE: control methods that make this node misbehave are enabled")
            self.control.methods.update(paylink_tcp.developer_methods(self.links))
            self.control.methods["developer_refuse_settle"] = self.rpc_developer_refuse_settle
        log.info("node %s listening on %s, key %s, home %s", self.config.name, self.config.listen,
                 self.identity.pubkey.hex(), self.home.path)

    async def stop(self):
        log.info("node %s stopping", self.config.name)
        if self.timers is not None:
            await self.timers.close()
        if self.listener is not None and self.listener.server is not None:
            self.listener.server.close()  # stop accepting now; connections end below
        if self.control is not None:
            await self.control.close()
        if self.paylinks is not None:
            await self.paylinks.close()
        if self.watches is not None:
            self.watches.close()
        if self.listener is not None:
            await self.listener.close()
        if self.links is not None:
            try:
                await asyncio.wait_for(self.links.close(), 5)
            except (asyncio.TimeoutError, Exception):
                log.exception("closing links")
        if self.store is not None:
            self.store.close()
        log.info("node %s stopped", self.config.name)

    # -- helpers for the parts

    def _on_link_message(self, db, link, msg):
        """The LinkManager's handler (the link layer sends what it enqueued after COMMIT)."""
        self.engine.on_link_message(db, link, msg)

    def _dev_kill_in_group_commit(self, when, members):
        """--dev-kill-in-group-commit before|after: SIGKILL in the first group transaction that
        applies link messages of two or more connections, before or right after its COMMIT."""
        if when == self.kill_in_group_commit and sum(1 for _, msgs, _ in members if msgs) >= 2:
            log.warning("DEVELOPER --dev-kill-in-group-commit: SIGKILL %s the COMMIT of a group of %d reads (%d link "
                        "messages)", when, len(members), sum(len(msgs) for _, msgs, _ in members))
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def link_url(self, name, invite=None):
        """This node's amikolink:// URL for a link (pins this node's key), with an invitation
        secret if given (as ?key=...&invite=...: the key first, as users read it)."""
        url = str(AmikoURL(LINK, self.config.host, self.config.port, name, {"key": self.identity.pubkey.hex()}))
        return url if invite is None else url + "&invite=" + invite.hex()

    def _on_engine_event(self, event):
        self.loop.call_soon(self._dispatch_event, event)

    def _dispatch_event(self, event):
        log.debug("event %r", event)
        try:
            self.paylinks.on_event(event)
        except Exception:
            log.exception("handling engine event %r", event)
        try:
            self.provider.on_event(event)
        except Exception:
            log.exception("provider: handling engine event %r", event)
        self.links.kick()

    # -- TCP listener

    async def _on_connection(self, stream, first):
        """The listener's handler: what a connection is, by its first frame (module docstring)."""
        if first.type == m.CONNECT_LINK:
            await self.links.handle_incoming(stream, first)
        elif first.type == m.PAY:
            await self.paylinks.serve_payee(stream, first)
        elif first.type == wl.AUTH:
            await self.provider.serve(stream, first)
        elif first.type == provisioning.REQUEST:  # a wallet provisioned through an invitation
            await provisioning.serve(self.provider, stream, first)
        elif first.type == control_stream.CONTROL:  # the control API for a granted key
            await control_stream.serve(self.grants, self.control.methods, stream, first, check=self.check_schemas)
        else:
            reason = "first message must be ConnectLink, Pay, Auth, ProvisionRequest or Control, got type %d" % first.type
            log.info("connection from %s: %s", stream.peer, reason)
            stream.send(paylink_tcp.error_frame(codes.PROTOCOL, reason, first.type))

    # -- control methods

    def methods(self):
        """The control methods (each has schemas/control/NAME.json; start() adds cancel and the
        the developer ones)."""
        extra = {}
        for part in (self.provider, self.watches, self.grants):
            if part is not None:
                extra.update(part.methods())
        return dict(extra, **{
            "info": self.rpc_info,
            "status": self.rpc_status,
            "link": self.rpc_link,
            "deposit": self.rpc_deposit,
            "withdraw": self.rpc_withdraw,
            "meetingpoint": self.rpc_meetingpoint,
            "request": self.rpc_request,
            "pay_start": self.rpc_pay_start,
            "pay_confirm": self.rpc_pay_confirm,
            "pay_decline": self.rpc_pay_decline,
        })

    def rpc_info(self, params, conn):
        return {"name": self.config.name, "listen": self.config.listen, "key": self.identity.pubkey.hex(),
                "pid": os.getpid(), "home": self.home.path, "started": int(self.started)}

    def rpc_status(self, params, conn):
        with self.ledger.read() as db:
            status = _jsonable(self.engine.status(db))
        for row in status.get("links", []):
            name = row.get("name")
            info = self.links.status(name)
            row["connected"] = bool(info.get("connected"))
            row["unacked"] = info.get("outbox", 0)
            row["url"] = self.link_url(name)
            for key in ("direction", "peer", "last_error", "reconnects", "duplicates", "rejected"):
                row[key] = info.get(key)
        for ch in status.get("channels", []):
            ch["reserved"] = ch.get("reserved_out", 0) + ch.get("reserved_in", 0)
            ch["locked"] = ch.get("locked_out", 0) + ch.get("locked_in", 0)
        status["node"] = self.rpc_info(params, conn)
        status["listener"] = self.listener.stats()
        return status

    def _has_link(self, name):
        with self.ledger.read() as db:
            return any(_jsonable(r).get("name") == name for r in self.engine.links(db))

    async def rpc_link(self, params, conn):
        """{name, remote_url?, wait?, peer_key?, invite_expiry?}: with remote_url dial it; with
        peer_key pin that key; with neither issue a one-time invitation (amiko.node.invites)
        and return the URL that carries it."""
        name = _text(params, "name")
        remote_url = _text(params, "remote_url", required=False)
        wait = params.get("wait", 10)
        if type(wait) not in (int, float) or not 0 <= wait <= LINK_WAIT_MAX:
            raise ControlError("invalid", "wait must be 0..%d seconds" % LINK_WAIT_MAX)
        from amiko.node import invites
        from amiko.node.identity import valid_pubkey
        from amiko.node.links import without_invite

        expiry = params.get("invite_expiry", invites.DEFAULT_EXPIRY)
        if type(expiry) not in (int, float) or not 0 < expiry <= invites.MAX_EXPIRY:
            raise ControlError("invalid", "invite_expiry must be 1..%d seconds" % invites.MAX_EXPIRY)
        remote_key = stored_url = None
        peer_key = _text(params, "peer_key", required=False)
        if peer_key is not None:
            try:
                remote_key = bytes.fromhex(peer_key)
            except ValueError:
                remote_key = b""
            if not valid_pubkey(remote_key):
                raise ControlError("invalid", "peer key %r is not a 33-byte compressed secp256k1 public key in hex"
                                   % peer_key)
        if remote_url is not None:
            try:
                url = parse_link(remote_url)
                url_key = bytes.fromhex(url.query.get("key", ""))
            except (URLError, ValueError) as e:
                raise ControlError("invalid", "bad link URL %r: %s" % (remote_url, getattr(e, "reason", e))) from None
            if not valid_pubkey(url_key):
                raise ControlError("invalid", "link URL %r: key= is not a valid compressed secp256k1 public key" % remote_url)
            if remote_key is not None and remote_key != url_key:
                raise ControlError("invalid", "--peer-key %s is not the key= of the link URL" % peer_key)
            remote_key = url_key
            stored_url = str(without_invite(url))  # the invitation is used from memory only, never stored
            if url.host == self.config.host and url.port == self.config.port:
                raise ControlError("invalid", "link URL %r points at this node itself: use the other node's URL" % remote_url)
        credit_limit = _credit_limit(params)
        invite = None

        def record(db):
            nonlocal invite
            if not self._has_link(name) or remote_url is not None or remote_key is not None:
                self.engine.add_link(db, name, stored_url, remote_key)
            if remote_url is None and remote_key is None:
                invite = invites.issue(db, self.identity, name, expiry, time.time())
            if credit_limit is not None:
                self.engine.set_credit_limit(db, name, credit_limit)

        self.ledger.transact(record)
        connected = self.links.is_connected(name)
        if remote_url is not None:
            self.links.connect(name, remote_url)
            deadline = self.loop.time() + wait
            while not self.links.is_connected(name) and self.loop.time() < deadline:
                await asyncio.sleep(0.02)
            connected = self.links.is_connected(name)
        result = {"link": name, "url": self.link_url(name, invite), "remote_url": remote_url,
                  "connected": bool(connected), "last_error": self.links.status(name).get("last_error"),
                  "credit_limit": self._credit_of(name)}
        if invite is not None:
            result["invite_expires"] = int(time.time() + expiry)
        if remote_key is not None:
            result["remote_key"] = remote_key.hex()
        return result

    def _credit_of(self, link):
        from amiko.node import credit

        with self.ledger.read() as db:
            return credit.limit(db, link)

    def rpc_deposit(self, params, conn):
        link = _text(params, "link")
        amount = _amount(params)
        credit_limit = _credit_limit(params)
        if not self._has_link(link):
            raise ControlError("not_found", "no link %r: create it with `amiko link --home %s %s [REMOTE_URL]`"
                               % (link, self.home.path, link))
        if credit_limit is not None:
            self.ledger.transact(self.engine.set_credit_limit, link, credit_limit)
        channel = self.ledger.transact(self.engine.deposit, link, amount)
        return {"link": link, "channel": channel, "amount": amount, "credit_limit": self._credit_of(link)}

    def rpc_withdraw(self, params, conn):
        link = _text(params, "link")
        channel = params.get("channel")
        if type(channel) is not int or channel < 0:
            raise ControlError("invalid", "channel must be a channel number (see `amiko status`)")
        self.ledger.transact(self.engine.withdraw, link, channel)
        return {"link": link, "channel": channel, "state": "closed"}

    def rpc_meetingpoint(self, params, conn):
        mp = _text(params, "id")
        try:
            mp = self.ledger.transact(self.engine.add_meeting_point, mp)  # NAME -> NAME@<own key>
        except AmikoError as e:
            raise ControlError("invalid", e.reason) from None
        with self.ledger.read() as db:
            own = self.engine.meeting_points(db)
        return {"meeting_point": mp, "meeting_points": own}

    def rpc_request(self, params, conn):
        amount = _amount(params)
        receipt = params.get("receipt", "")
        if not isinstance(receipt, str) or len(receipt.encode("utf-8")) > 512:
            raise ControlError("invalid", "receipt must be text of at most 512 bytes")
        req = self.ledger.transact(self.engine.create_request, amount, receipt)
        url = format_pay(self.config.host, self.config.port, req["payment_id"], self.identity.pubkey.hex())
        return {"url": url, "payment_id": req["payment_id"], "txid": _hex(req["txid"]), "amount": amount,
                "receipt": receipt, "meeting_points": list(req["meeting_points"])}

    async def rpc_pay_start(self, params, conn):
        url = _text(params, "url")
        try:
            offer = await self.paylinks.start_payer(url)
        except paylink_tcp.PayError as e:
            raise ControlError(e.code, e.reason) from None
        if "handle" in offer:
            conn.on_close(lambda: self.paylinks.abandon_payer(offer["handle"]))
        return offer

    async def rpc_pay_confirm(self, params, conn):
        handle = _text(params, "handle")
        timeout = params.get("timeout", 60)
        if type(timeout) not in (int, float) or not 0 < timeout <= 86400:
            raise ControlError("invalid", "timeout must be 0..86400 seconds")
        try:
            return await self.paylinks.confirm_payer(handle, timeout)
        except paylink_tcp.PayError as e:
            raise ControlError(e.code, e.reason) from None

    def rpc_cancel(self, params, conn):
        """Cancel a payment of this endpoint before lock: {id: payment id or txid hex, reason?}."""
        try:
            return self.paylinks.cancel(params.get("id"), params.get("reason"))
        except paylink_tcp.PayError as e:
            raise ControlError(e.code, e.reason) from None

    def rpc_developer_refuse_settle(self, params, conn):
        """Developer mode only: {link, refuse: bool}: cheat that peer (settlement module doc)."""
        link = _text(params, "link")
        refuse = params.get("refuse", True)
        if type(refuse) is not bool:
            raise ControlError("invalid", "refuse must be true or false")
        (self.engine.refuse_settle.add if refuse else self.engine.refuse_settle.discard)(link)
        log.warning("DEVELOPER MODE: %s settling with link %s", "refusing" if refuse else "no longer refusing", link)
        return {"link": link, "refuse": refuse, "refusing": sorted(self.engine.refuse_settle)}

    def rpc_pay_decline(self, params, conn):
        handle = _text(params, "handle")
        try:
            return self.paylinks.decline_payer(handle, params.get("reason"))
        except paylink_tcp.PayError as e:
            raise ControlError(e.code, e.reason) from None


async def _run(home, config, identity, json_ready, stdout, developer=False, dev_options=None):
    node = Node(home, config, identity, developer=developer, dev_options=dev_options)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except OSError as e:
        await node.stop()
        raise AmikoError("cannot listen on %s: %s: pick another --listen port in %s" % (
            config.listen, e.strerror or e, home.config_path)) from None
    if json_ready:
        out = stdout or sys.stdout
        out.write(json.dumps(node.rpc_info({}, None), sort_keys=True) + "\n")
        out.flush()
    try:
        await stop.wait()
    finally:
        await node.stop()
    return 0


def main(home, json_ready=False, stdout=None, developer=False, dev_options=None):
    """Run the node in the foreground until SIGTERM/SIGINT; returns the exit status."""
    private_umask()
    config = home.load_config()
    fixed = make_private(home.path)
    home.acquire()
    try:
        setup_logging(home)
        for fix in fixed:
            log.warning(describe_fix(fix))
        identity_mod = _modules()[1]
        identity = identity_mod.Identity.load(home.key_path)
        return asyncio.run(_run(home, config, identity, json_ready, stdout, developer, dev_options))
    finally:
        home.release()
