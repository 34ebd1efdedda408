"""An in-process, deterministic network of engines for the engine tests.

Each SimNode is a real Store (SQLite file under the test's tmp dir) with a real Engine.
Links are the outbox tables themselves: delivering a message reads the sender's next
unacknowledged outbox row (amiko.node.outbox) after the receiver's last_in, and applies it
the way the link layer does (host/amiko/node/links.py, exactly-once LinkMsg/Ack):
handler + set_last_in in ONE transaction; a handler that raises rolls back, then a second
transaction consumes the seq and enqueues an Error to the sender; acks (outbox.acked at the
sender) are separate steps that the scheduler may delay.

The daemon and the payment link between payer and payee are emulated by Payment and the
sim's event handling: Confirm starts both halves, the payee's route_found becomes
HavePayeeRoute at the payer, the payer locks once both halves are routed, the payee's
"locked" becomes Commit{token} at the payer (release_token), and an endpoint's
route_failed becomes Cancel: the other endpoint cancels its half (auto_cancel). Those hops
are scheduled steps too.

The scheduler (Sim.step) picks uniformly, with its own seeded Random, among everything
that can happen next: deliver the next message of any link that has one (per-link FIFO is
kept: only the lowest undelivered seq of a link can be delivered), acknowledge a link,
redeliver an already consumed message (it must be ignored), or run a queued endpoint
action. So a seed fixes the whole interleaving.

Time is a fake clock (Sim.time, seconds; every step adds 1 ms): Sim.advance(seconds) moves
it on and fires every timer that fell due at every node, each in its own transaction, as
the daemon's timer loop does. Sim.block(a, b) holds back delivery on the link a -> b (a
node that stopped answering) until unblock(a, b). auto_lock=False keeps the payer from
locking when both halves are routed (call Sim.lock_now(p) yourself). Hostile nodes: Sim.refusing holds (node
name, message type) pairs a node answers with an Error without reading them; Sim.thieves
names payers that take Commit{token} and never hand it to their engine. Sim.tamper, if set, is
fn(sender name, receiver, msg) -> msg, applied to every delivered message (a hostile sender).
Every node has an identity key fixed by its name (node_identity); meeting points given by
NAME become NAME@KEY, and Sim.mp(NAME) is that id.
"""

import hashlib
import random

from amiko_core import messages as m
from amiko_core.errors import AmikoError

from amiko.node import events, outbox
from amiko.node.engine import Engine
from amiko.node.events import Event
from amiko.node.identity import ORDER, Identity
from amiko.node.store import Store


def node_identity(name):
    """A node's identity key, fixed by its name (a restarted node keeps it)."""
    return Identity(int.from_bytes(hashlib.sha256(b"amiko sim node " + name.encode()).digest(), "big") % (ORDER - 1) + 1)

ERR_REJECTED = 3
CREDIT_LIMIT = 10 ** 12  # what Sim.link lets each end accept in deposits from the other


class SimNode:
    def __init__(self, sim, name, path, config):
        self.sim = sim
        self.name = name
        self.path = path
        self.config = config
        self.store = Store(str(path), synchronous=sim.synchronous)
        self.identity = node_identity(name)
        engine_config = dict(config, name=name, external_meeting_points=())
        self.engine = Engine(self.store, engine_config, self.identity, clock=sim.clock)
        self.bind_external()
        self.events = []
        self.engine.subscribe(lambda ev: sim._on_event(self, ev))

    def bind_external(self):
        """external_meeting_points given by NAME: those held by a node of the sim, as NAME@KEY."""
        ids = [self.sim.mp(x, missing_ok=True) for x in self.config.get("external_meeting_points", ())]
        self.engine.cfg.external_meeting_points = tuple(x for x in ids if x is not None)

    def tx(self):
        self.sim._dirty.add(self.name)  # its outboxes or inbox positions may change
        return self.store.transaction()

    def query(self, sql, args=()):
        with self.store.read() as db:
            return db.execute(sql, args).fetchall()

    def balance(self):
        return self.query("SELECT COALESCE(SUM(local), 0) FROM channels")[0][0]

    def status(self):
        with self.store.read() as db:
            return self.engine.status(db)

    def __repr__(self):
        return "SimNode(%s)" % self.name


class Payment:
    def __init__(self, payer, payee, amount, request, meeting_point):
        self.payer = payer
        self.payee = payee
        self.amount = amount
        self.txid = request["txid"]
        self.token = request["token"]
        self.payment_id = request["payment_id"]
        self.meeting_point = meeting_point
        self.routed = set()        # sides whose route_found reached the payer
        self.locked = False
        self.failed = []           # (node, side, reason)
        self.settled = set()       # (node name, side) that emitted "settled"
        self.token_sent = False
        self.cancelled = False

    @property
    def done(self):
        return (self.payer.name, 0) in self.settled and (self.payee.name, 1) in self.settled


class Sim:
    def __init__(self, tmp_path, seed=0, synchronous="OFF", redeliver=0.05, ack_delay=True, auto_cancel=True,
                 auto_lock=True, **config):
        self.dir = tmp_path
        self.rng = random.Random(seed)
        self.synchronous = synchronous
        self.redeliver = redeliver
        self.ack_delay = ack_delay
        self.auto_cancel = auto_cancel
        self.auto_lock = auto_lock
        self.blocked = set()       # (sender name, receiver name) whose delivery is held back
        self.refusing = set()      # (node name, message type) a hostile node answers with an Error, unread
        self.thieves = set()       # payer names that take Commit{token} and settle nothing
        self.fired = []            # (node name, kind, side) of every timer fired
        self.config = config
        self.time = 1_700_000_000.0
        self.nodes = {}
        self.pairs = []            # (a, b) links, both directions exist
        self.actions = []          # queued endpoint actions (callables)
        self.payments = {}         # txid -> Payment
        self.errors = []           # (receiver, sender, msg name, reason) for every rejected message
        self.delivered = 0
        self.steps = 0
        self._dirty = set()
        self._cache = {}           # (a, b) -> (next undelivered row, consumed unacked rows)
        self.tamper = None         # fn(sender name, receiver, msg) -> msg: a hostile sender's rewrite

    def clock(self):
        return self.time

    def advance(self, seconds):
        """Move the fake clock on and fire every timer due at any node; returns how many fired."""
        self.time += seconds
        return self.fire_due()

    def fire_due(self):
        count = 0
        for n in self.nodes.values():
            with n.store.read() as db:
                due = n.engine.due_timers(db, now=self.time)
            for t in due:
                with n.tx() as db:
                    if n.engine.fire_timer(db, t["txid"], t["side"], t["kind"], now=self.time):
                        self.fired.append((n.name, t["kind"], t["side"]))
                        count += 1
        return count

    def restart(self, node):
        """A crash (between transactions, as SIGKILL leaves it) and restart: the node's engine
        is rebuilt from its database alone. Returns the new SimNode (references are updated)."""
        node.store.close()
        new = SimNode(self, node.name, node.path, node.config)
        self.nodes[node.name] = new
        self.pairs = [(new if a is node else a, new if b is node else b) for a, b in self.pairs]
        for p in self.payments.values():
            if p.payer is node:
                p.payer = new
            if p.payee is node:
                p.payee = new
        self._cache.clear()
        return new

    def block(self, a, b):
        self.blocked.add((a.name, b.name))

    def unblock(self, a, b):
        self.blocked.discard((a.name, b.name))
        self._dirty.update((a.name, b.name))

    # ---- building ----

    def node(self, name, meeting_points=(), **config):
        """A node that is the meeting points named (NAME, becoming NAME@<its key>); external
        meeting points may be given by NAME alone if a node created before is that meeting point."""
        cfg = dict(self.config)
        cfg.update(config)
        cfg["meeting_points"] = list(meeting_points)
        n = SimNode(self, name, self.dir / ("%s.db" % name), cfg)
        self.nodes[name] = n
        for other in self.nodes.values():
            other.bind_external()  # a meeting point named before its node existed
        return n

    def mp(self, name, missing_ok=False):
        """The id NAME@KEY of the meeting point NAME of a node of this sim (a full id as it is)."""
        if "@" in name:
            return name
        found = [mp for n in self.nodes.values() for mp in n.engine.cfg.meeting_points if mp.rpartition("@")[0] == name]
        if not found and missing_ok:
            return None
        assert len(found) == 1, "meeting point %s is held by %d nodes of this sim" % (name, len(found))
        return found[0]

    def link(self, a, b, credit_limit=CREDIT_LIMIT):
        """Link a and b; each end accepts deposits from the other up to credit_limit
        (None: no limit set, so a peer's Deposit is refused, the node's default)."""
        for x, y in ((a, b), (b, a)):
            with x.tx() as db:
                x.engine.add_link(db, y.name)
                if credit_limit is not None:
                    x.engine.set_credit_limit(db, y.name, credit_limit)
        self.pairs.append((a, b))

    def deposit(self, a, b, amount):
        with a.tx() as db:
            return a.engine.deposit(db, b.name, amount)

    def all_links(self):
        for a, b in self.pairs:
            yield a, b
            yield b, a

    # ---- delivery (the link layer's contract) ----

    def _undelivered(self, a, b):
        """The next (seq, type, body) a -> b that b has not consumed, or None."""
        with b.store.read() as db:
            last = outbox.last_in(db, a.name)
        rows = outbox.unacked(a.store, b.name, after=last, limit=1)
        return rows[0] if rows else None

    def _consumed_unacked(self, a, b):
        """Seqs a -> b consumed by b but not yet acknowledged at a."""
        with b.store.read() as db:
            last = outbox.last_in(db, a.name)
        rows = outbox.unacked(a.store, b.name)
        return [r for r in rows if r[0] <= last]

    def receive(self, b, a_name, seq, mtype, body):
        """b consumes message seq of link a_name, exactly as the link layer does."""
        msg = m.decode(mtype, body)
        if self.tamper is not None:
            msg = self.tamper(a_name, b, msg)
        try:
            with b.tx() as db:
                last = outbox.last_in(db, a_name)
                if seq <= last:
                    return "duplicate"
                assert seq == last + 1, "gap on link %s -> %s" % (a_name, b.name)
                if (b.name, mtype) in self.refusing:
                    raise AmikoError("%s refuses every %s (hostile)" % (b.name, msg.name))
                b.engine.on_link_message(db, a_name, msg)
                outbox.set_last_in(db, a_name, seq)
            self.delivered += 1
            return "applied"
        except AmikoError as e:
            self.errors.append((b.name, a_name, msg.name, e.reason))
            with b.tx() as db:
                outbox.set_last_in(db, a_name, seq)
                if mtype != m.ERROR:
                    outbox.enqueue(db, a_name, m.Message(m.ERROR, code=ERR_REJECTED, reason=e.reason[:200],
                                                         ref_type=mtype, ref_seq=seq), limit=None)
            return "rejected"

    def ack(self, a, b):
        with b.store.read() as db:
            last = outbox.last_in(db, a.name)
        if last:
            with a.tx() as db:
                outbox.acked(db, b.name, last)

    # ---- scheduling ----

    def _link_state(self, a, b):
        key = (a.name, b.name)
        if key not in self._cache or a.name in self._dirty or b.name in self._dirty:
            self._cache[key] = (self._undelivered(a, b), self._consumed_unacked(a, b))
        return self._cache[key]

    def _choices(self):
        out = []
        states = [(a, b) + self._link_state(a, b) for a, b in self.all_links()]
        self._dirty.clear()
        for a, b, row, done in states:
            if (a.name, b.name) in self.blocked:
                continue
            if row is not None:
                out.append(("deliver", a, b, row))
            if done:
                out.append(("ack", a, b, None))
                if self.redeliver and self.rng.random() < self.redeliver:
                    out.append(("redeliver", a, b, self.rng.choice(done)))
        for i in range(len(self.actions)):
            out.append(("action", i, None, None))
        return out

    def step(self):
        choices = self._choices()
        if not choices:
            return False
        kind, x, y, row = self.rng.choice(choices)
        self.steps += 1
        self.time += 0.001
        if kind in ("deliver", "redeliver"):
            outcome = self.receive(y, x.name, *row)
            assert kind == "deliver" or outcome == "duplicate"
            if not self.ack_delay:
                self.ack(x, y)
        elif kind == "ack":
            self.ack(x, y)
        else:
            self.actions.pop(x)()
        return True

    def run(self, max_steps=200000):
        for _ in range(max_steps):
            if not self.step():
                return self.steps
        raise AssertionError("the network did not settle in %d steps" % max_steps)

    def later(self, fn):
        self.actions.append(fn)

    # ---- payments: the daemon + payment link emulation ----

    def pay(self, payer, payee, amount, meeting_point=None, start_payee=True, start_payer=True):
        """Request at payee, confirm at payer; both halves start routing (as scheduled actions)."""
        with payee.tx() as db:
            req = payee.engine.create_request(db, amount, "order %d" % len(self.payments))
        mp = self.mp(meeting_point) if meeting_point else req["meeting_points"][0]
        p = Payment(payer, payee, amount, req, mp)
        self.payments[p.txid] = p
        with payer.tx() as db:
            payer.engine.record_payment(db, txid=p.txid, role="payer", payment_id=p.payment_id, amount=amount,
                                        receipt="order", state="confirmed", meeting_point=mp)
        if start_payer:
            self.later(lambda: self._start(payer, p, 0))
        if start_payee:
            self.later(lambda: self._start(payee, p, 1))
        return p

    def _start(self, node, p, side):
        node = (p.payer, p.payee)[side]  # the current object, should the node have restarted
        if p.cancelled:
            return  # the payment link told this endpoint before it started
        with node.tx() as db:
            if side == 1:
                node.engine.update_payment(db, p.txid, "payee", state="confirmed")
            node.engine.start_route(db, p.txid, side, p.amount, p.meeting_point, p.payment_id)

    def _on_event(self, node, ev):
        node.events.append(ev)
        p = self.payments.get(ev.txid) if isinstance(ev, Event) else None
        if p is None:
            return
        if ev.kind == events.ROUTE_FOUND:
            if ev.side == 0 and node is p.payer:
                self._routed(p, 0)
            elif ev.side == 1 and node is p.payee:
                self.later(lambda: self._routed(p, 1))  # HavePayeeRoute over the payment link
        elif ev.kind == events.ROUTE_FAILED:
            p.failed.append((node.name, ev.side, ev.reason))
            if self.auto_cancel:  # Cancel over the payment link: the other endpoint drops its half
                self.later(lambda: self._cancel_other_half(p, ev.side, ev.reason))
        elif ev.kind == events.LOCKED and node is p.payee and node.engine.cfg.auto_release:
            self.later(lambda: self._commit_at_payer(p))  # Commit{token} over the payment link
        elif ev.kind == events.SETTLED:
            p.settled.add((node.name, ev.side))
        elif ev.kind == events.ROLLED_BACK:
            p.failed.append((node.name, ev.side, ev.reason))

    def _cancel_other_half(self, p, failed_side, reason):
        self.cancel(p, "payment cancelled: " + reason, sides=(1 - failed_side,))

    def cancel(self, p, reason, sides=(0, 1)):
        """An endpoint cancels p before lock, and tells the other over the payment link:
        each endpoint drops its half (or never starts it)."""
        p.cancelled = True
        for side in sides:
            node = (p.payer, p.payee)[side]
            with node.tx() as db:
                r = db.execute("SELECT up_link, state FROM routes WHERE txid = ? AND side = ?",
                               (p.txid, side)).fetchone()
                if r is not None and r[0] is None and r[1] in ("routing", "waiting", "routed"):
                    node.engine.cancel_route(db, p.txid, side, reason)
                elif r is None:  # told before it started routing
                    node.engine.update_payment(db, p.txid, ("payer", "payee")[side], state="cancelled", reason=reason)

    def _routed(self, p, side):
        p.routed.add(side)
        if p.routed == {0, 1} and not p.locked and not p.cancelled and self.auto_lock:
            p.locked = True
            self.later(lambda: self._lock(p))

    def lock_now(self, p):
        p.locked = True
        self._lock(p)

    def _lock(self, p):
        try:
            with p.payer.tx() as db:
                p.payer.engine.lock(db, p.txid)
        except AmikoError as e:  # the payer's half ended meanwhile (e.g. its lock timer fired)
            p.failed.append((p.payer.name, 0, e.reason))

    def _commit_at_payer(self, p):
        p.token_sent = True
        if p.payer.name in self.thieves:
            return  # it has the token, its proof of payment, and keeps it from its engine
        try:
            with p.payer.tx() as db:
                p.payer.engine.release_token(db, p.txid, p.token)
        except AmikoError as e:  # the payer's half was rolled back before Commit arrived
            p.failed.append((p.payer.name, 0, e.reason))

    # ---- checks ----

    def channel_pairs(self):
        """((a, row_at_a), (b, row_at_b)) for every channel, matched by link and id."""
        out = []
        for a, b in self.pairs:
            rows_a = {r[0]: r[1:] for r in a.query(
                "SELECT id, local, remote, state FROM channels WHERE link = ?", (b.name,))}
            rows_b = {r[0]: r[1:] for r in b.query(
                "SELECT id, local, remote, state FROM channels WHERE link = ?", (a.name,))}
            assert set(rows_a) == set(rows_b), "channels of %s-%s differ: %s vs %s" % (a, b, rows_a, rows_b)
            for cid in rows_a:
                out.append((a, b, cid, rows_a[cid], rows_b[cid]))
        return out

    def check_quiet(self):
        """Both ends of every channel agree; nothing reserved, locked, pending or queued."""
        for a, b, cid, ra, rb in self.channel_pairs():
            assert (ra[0], ra[1], ra[2]) == (rb[1], rb[0], rb[2]), \
                "channel %d %s%s vs %s%s" % (cid, a.name, ra, b.name, rb)
        for n in self.nodes.values():
            assert n.query("SELECT * FROM holds") == [], "%s has holds" % n.name
            pending = n.query("SELECT txid, side, state FROM routes WHERE state IN ('routing', 'waiting', 'routed', 'locked')")
            assert pending == [], "%s has pending routes %s" % (n.name, pending)
            assert n.query("SELECT * FROM link_outbox") == [], "%s has unacknowledged messages" % n.name

    def balances(self):
        return {name: n.balance() for name, n in self.nodes.items()}

    def dump(self, node):
        return node.store.dump()

    def close(self):
        for n in self.nodes.values():
            n.store.close()
