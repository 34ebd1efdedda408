"""A seeded storm of payments over real node processes while nodes crash and links drop.

Used by tests/node/test_chaos.py (short, in `make test`) and bench/chaos.py (long, by hand).

    result = run_storm(tmp_dir, nodes=6, payments=40, duration=15, seed=1, kill_every=4,
                       drop_every=2)

Network: nodes n0..n{N-1} on a ring with chords n_i - n_{i+N/2} for even i (cycles and
branches); meeting points "mp-0" at n0 and "mp-1" at n{N/2}; every link has a channel funded
from each side with FUNDING. Time-outs: route 2 s, lock 2 s, increment 3 s (an increment well
above a restart, so a claim delayed by a crash still arrives before the deadline).

The plan is fixed by the seed: payment k (payer, payee, amount) starts at k * duration /
payments; every kill_every seconds a node is SIGKILLed and restarted at once (the choice
seeded), every drop_every seconds one end of a link drops its connection (the developer
control method debug_drop_link, `amiko node --developer`), and every stall_every seconds a node
stops answering (SIGSTOP) for STALL seconds (seeded, 1..2.5 s: beyond the route and lock
time-outs, within the increment) and resumes (SIGCONT). Wall-clock timing still varies,
so the interleaving is not bit-for-bit repeatable; the plan and the invariants are.

Payments are driven through the nodes' control sockets (what `amiko request` / `amiko pay`
do, without a process per command) from a thread pool. A client whose node was killed
loses its answer; the payment's fate is then read from the nodes.

At the end every node is restarted if needed, the network is given time to settle (every
time-out fires), the nodes are stopped and their databases read. Invariants (each failure
is counted in result["violations"] with a description):
- the sum of all balances is unchanged, and both ends of every channel agree;
- nothing is reserved, locked, pending or unacknowledged anywhere, and no node has an open
  dispute (every peer is honest: each claim is settled by its deadline);
- every payment ended: the payer's and the payee's rows are 'committed' or 'cancelled' (a
  request never confirmed may stay 'requested' if no node carries it), and no route entry
  of it is in progress;
- each payment is committed on all of its hops or on none (no 'settled' next to a
  'rolled_back' entry, no refused claim or reverted commit), and payer and payee agree;
- each node's balance moved by exactly what it paid and received in committed payments;
- no node process died other than the ones the storm killed.
"""

import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amiko_testing import waits
from amiko_testing.network import Net, amiko_argv, amiko_env

from amiko.node.control import ControlClient, ControlError

FUNDING = 200000
TIMEOUTS = ["--route-timeout", "2", "--lock-timeout", "2", "--timeout-increment", "3"]
DEVELOPER_ARGS = ["--developer"]  # for debug_drop_link
STALL = (1.0, 2.5)


def client(node, timeout=30.0):
    return ControlClient(str(node.home), str(node.home / "control.sock"), timeout=timeout)


def call(node, method, params=None, timeout=30.0):
    with client(node, timeout) as c:
        return c.call(method, params or {}, timeout=timeout)


def wait_for(condition, timeout, what):
    """Like amiko_testing.waits.wait_for; a node not answering yet counts as not ready."""
    return waits.wait_for(condition, timeout, what, ignore=(ControlError,), delay=0.05)


def start_node(node):
    node.start(wait=False, args=DEVELOPER_ARGS)


def wait_ready(node, timeout=30):
    def ready():
        if node.proc.poll() is not None:
            raise AssertionError("node %s exited with %s:\n%s" % (node.name, node.proc.returncode, node.stderr_tail()))
        return call(node, "info", timeout=5)
    wait_for(ready, timeout, "node %s ready" % node.name)


def init_nodes(net, names, mps):
    """`amiko init` of every node in parallel processes; returns Nodes (not started).

    A meeting point is NAME@KEY of its node: the meeting points' nodes get their key first
    (init keeps a key it finds), so that every node can name the others' in the same round."""
    from amiko.node.identity import Identity
    from amiko_testing.network import Node, free_port

    ids = {}
    for name in mps:
        os.makedirs(net.dir / name, mode=0o700)
        key = Identity.create(str(net.dir / name / "node.key")).pubkey.hex()
        ids[name] = ["%s@%s" % (mp, key) for mp in mps[name]]
    nodes, procs = [], []
    for name in names:
        n = Node(net, name, net.dir / name, free_port())
        n.meeting_points = ids.get(name, [])
        net.nodes[name] = n
        args = ["init", "--home", str(n.home), "--json", "--listen", "127.0.0.1:%d" % n.port, "--name", name]
        for mp in mps.get(name, []):
            args += ["--meeting-point", mp]
        for mp in sorted(set(sum(ids.values(), [])) - set(ids.get(name, []))):
            args += ["--external-meeting-point", mp]
        procs.append(subprocess.Popen(amiko_argv() + args + TIMEOUTS, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=amiko_env()))
        nodes.append(n)
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    return nodes


def build(net, count):
    names = ["n%d" % i for i in range(count)]
    half = count // 2
    mps = {"n0": ["mp-0"], "n%d" % half: ["mp-1"]}
    nodes = init_nodes(net, names, mps)
    for n in nodes:
        start_node(n)
    for n in nodes:
        wait_ready(n)
    edges = [(i, (i + 1) % count) for i in range(count)]
    edges += [(i, i + half) for i in range(0, half, 2) if (i, i + half) not in edges and (i + half, i) not in edges]
    for i, j in edges:
        a, b = nodes[i], nodes[j]
        url = call(a, "link", {"name": b.name, "credit_limit": FUNDING})["url"]  # each end accepts FUNDING
        call(b, "link", {"name": a.name, "remote_url": url, "wait": 20, "credit_limit": FUNDING}, timeout=40)
        a.links[b.name] = b.name
        b.links[a.name] = a.name
    wait_for(lambda: all(all(x["connected"] for x in call(n, "status")["links"]) for n in nodes), 30, "links up")
    for i, j in edges:
        call(nodes[i], "deposit", {"link": nodes[j].name, "amount": FUNDING})
        call(nodes[j], "deposit", {"link": nodes[i].name, "amount": FUNDING})
    wait_for(lambda: all(len(call(n, "status")["channels"]) == 2 * len(n.links) for n in nodes), 30,
             "deposits recorded")
    return nodes, edges


class Storm:
    def __init__(self, net, nodes, edges, seed, payments, duration, kill_every, drop_every, stall_every=None,
                 workers=16):
        self.net = net
        self.nodes = nodes
        self.edges = edges
        self.rng = random.Random(seed)
        self.duration = duration
        self.kill_every = kill_every
        self.drop_every = drop_every
        self.stall_every = stall_every
        self.stalls = 0
        self.plan = []
        for k in range(payments):
            payer, payee = self.rng.sample(range(len(nodes)), 2)
            self.plan.append((k * duration / max(payments, 1), nodes[payer], nodes[payee], self.rng.randint(1, 1000)))
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.lock = threading.Lock()
        self.outcomes = []  # (payer, payee, amount, txid or None, client view)
        self.kills = []
        self.drops = 0
        self.killed = set()  # names of nodes the storm killed at least once

    def pay(self, payer, payee, amount):
        txid = None
        try:
            req = call(payee, "request", {"amount": amount, "receipt": "storm"})
            txid = req["txid"]
            with client(payer, timeout=30) as c:
                offer = c.call("pay_start", {"url": req["url"]}, timeout=30)
                if "result" in offer:
                    view = offer["result"]
                else:
                    res = c.call("pay_confirm", {"handle": offer["handle"], "timeout": 60}, timeout=90)
                    view = res["result"]
        except ControlError as e:
            view = "client lost: %s" % e.code if txid is not None else "no request"
        except Exception as e:  # noqa: BLE001 - any client failure is recorded, the storm goes on
            view = "client error: %s" % type(e).__name__
        with self.lock:
            self.outcomes.append((payer.name, payee.name, amount, txid, view))

    def kill_one(self):
        node = self.rng.choice(self.nodes)
        node.kill()
        self.kills.append(node.name)
        self.killed.add(node.name)
        start_node(node)
        wait_ready(node)

    def stall_one(self):
        node = self.rng.choice(self.nodes)
        seconds = self.rng.uniform(*STALL)
        proc = node.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGSTOP)
        self.stalls += 1
        t = threading.Timer(seconds, lambda: proc.poll() is None and proc.send_signal(signal.SIGCONT))
        t.daemon = True
        t.start()

    def drop_one(self):
        i, j = self.rng.choice(self.edges)
        a, b = self.nodes[i], self.nodes[j]
        try:
            call(a, "debug_drop_link", {"link": b.name}, timeout=5)
            self.drops += 1
        except ControlError:
            pass  # that node is restarting

    def run(self):
        start = time.monotonic()
        futures = []
        next_kill = self.kill_every or float("inf")
        next_drop = self.drop_every or float("inf")
        next_stall = self.stall_every or float("inf")
        plan = list(self.plan)
        while plan or time.monotonic() - start < self.duration:
            now = time.monotonic() - start
            while plan and plan[0][0] <= now:
                _, payer, payee, amount = plan.pop(0)
                futures.append(self.pool.submit(self.pay, payer, payee, amount))
            if now >= next_kill:
                next_kill += self.kill_every
                self.kill_one()
            if now >= next_stall:
                next_stall += self.stall_every
                self.stall_one()
            if now >= next_drop:
                next_drop += self.drop_every
                self.drop_one()
            time.sleep(0.02)
        for f in futures:
            f.result()
        self.pool.shutdown()
        return time.monotonic() - start


def settle(nodes, timeout=120):
    def quiet():
        for n in nodes:
            s = call(n, "status", timeout=10)
            if s["pending"] or any(ch["reserved"] or ch["locked"] for ch in s["channels"]):
                return False
            if any(link["unacked"] or not link["connected"] for link in s["links"]):
                return False
        return True
    wait_for(quiet, timeout, "the network to settle")


def read_db(node):
    db = sqlite3.connect(str(node.home / "node.db"))
    try:
        return {
            "channels": db.execute("SELECT link, id, local, remote, state FROM channels").fetchall(),
            "holds": db.execute("SELECT COUNT(*) FROM holds").fetchone()[0],
            "outbox": db.execute("SELECT COUNT(*) FROM link_outbox").fetchone()[0],
            "routes": db.execute("SELECT txid, side, state, reason FROM routes").fetchall(),
            "payments": db.execute("SELECT txid, role, state, amount, reason FROM payments").fetchall(),
            "disputes": db.execute("SELECT link, channel, txid, amount, reason FROM disputes WHERE state = 'open'").fetchall(),
        }
    finally:
        db.close()


def check(nodes, crashed):
    """The invariants (module doc) -> (violations, per-payment summary)."""
    violations = []
    data = {n.name: read_db(n) for n in nodes}
    total = sum(local for d in data.values() for (_, _, local, _, _) in d["channels"])
    expected_total = sum(2 * FUNDING * len(n.links) for n in nodes) // 2
    if total != expected_total:
        violations.append("total balance %d, expected %d" % (total, expected_total))
    ends = {}
    for name, d in data.items():
        for link, cid, local, remote, state in d["channels"]:
            ends.setdefault(cid, []).append((name, link, local, remote))
        if d["holds"]:
            violations.append("%s has %d holds" % (name, d["holds"]))
        if d["outbox"]:
            violations.append("%s has %d unacknowledged messages" % (name, d["outbox"]))
        for link, cid, txid, amount, reason in d["disputes"]:  # honest peers never leave one
            violations.append("%s has an open dispute on channel %d of link %s: %d (%s)" % (name, cid, link, amount, reason))
    for cid, pair in ends.items():
        if len(pair) != 2:
            violations.append("channel %d known to %d nodes" % (cid, len(pair)))
            continue
        (n1, l1, loc1, rem1), (n2, l2, loc2, rem2) = pair
        if (l1, l2) != (n2, n1) or (loc1, rem1) != (rem2, loc2):
            violations.append("channel %d disagrees: %r" % (cid, pair))
    txs = {}
    for name, d in data.items():
        for txid, side, state, reason in d["routes"]:
            t = txs.setdefault(bytes(txid), {"routes": [], "rows": {}})
            t["routes"].append((name, side, state, reason or ""))
        for txid, role, state, amount, reason in d["payments"]:
            t = txs.setdefault(bytes(txid), {"routes": [], "rows": {}})
            t["rows"][role] = (name, state, amount, reason)
    moved = {n.name: 0 for n in nodes}
    summary = {"committed": 0, "cancelled": 0, "never confirmed": 0}
    for txid, t in txs.items():
        tx = txid.hex()[:12]
        states = {s for (_, _, s, _) in t["routes"]}
        active = states & {"routing", "waiting", "routed", "locked"}
        if active:
            violations.append("%s still in progress: %r" % (tx, t["routes"]))
        if "settled" in states and "rolled_back" in states:
            violations.append("%s committed on some hops and rolled back on others: %r" % (tx, t["routes"]))
        for (name, side, state, reason) in t["routes"]:
            if reason.startswith("claim refused") or reason.startswith("commit reverted"):
                violations.append("%s late claim at %s: %s" % (tx, name, reason))
        payer, payee = t["rows"].get("payer"), t["rows"].get("payee")
        for row in (payer, payee):
            if row is not None and row[1] not in ("committed", "cancelled") and not (
                    row is payee and row[1] == "requested" and not t["routes"]):
                violations.append("%s: %s's payment is %s" % (tx, row[0], row[1]))
        if payer is not None and payee is not None and payer[1] != payee[1] and payee[1] != "requested":
            violations.append("%s: payer %s, payee %s" % (tx, payer[1], payee[1]))
        if payee is not None and payee[1] == "committed":
            summary["committed"] += 1
            moved[payee[0]] += payee[2]
            if payer is not None:
                moved[payer[0]] -= payee[2]
            if "rolled_back" in states:
                violations.append("%s committed at the payee but rolled back on a hop" % tx)
        elif payee is not None and payee[1] == "requested":
            summary["never confirmed"] += 1
        else:
            summary["cancelled"] += 1
    for n in nodes:
        balance = sum(local for (_, _, local, _, _) in data[n.name]["channels"])
        if balance != FUNDING * len(n.links) + moved[n.name]:
            violations.append("%s balance %d, expected %d" % (n.name, balance, FUNDING * len(n.links) + moved[n.name]))
    for name in crashed:
        violations.append("node %s died without being killed" % name)
    return violations, summary


def run_storm(tmp_dir, nodes=6, payments=40, duration=15.0, seed=1, kill_every=4.0, drop_every=2.0,
              stall_every=None, settle_timeout=120):
    net = Net(Path(tmp_dir))
    try:
        t0 = time.monotonic()
        ns, edges = build(net, nodes)
        built = time.monotonic() - t0
        storm = Storm(net, ns, edges, seed, payments, duration, kill_every, drop_every, stall_every)
        storm_time = storm.run()
        time.sleep(STALL[1])  # every stalled node resumed
        crashed = [n.name for n in ns if n.proc is None or n.proc.poll() is not None]
        for n in ns:
            if not n.running():
                start_node(n)
                wait_ready(n)
        t1 = time.monotonic()
        settle(ns, settle_timeout)
        settled = time.monotonic() - t1
        tracebacks = {}
        for n in ns:  # stop all at once (a second SIGTERM during shutdown would kill the process)
            n.proc.send_signal(signal.SIGTERM)
        for n in ns:
            try:
                rc = n.proc.wait(30)
            except subprocess.TimeoutExpired:
                rc = "none in 30 s"
            n.kill()
            if rc != 0:
                crashed.append("%s (exit %s on SIGTERM)" % (n.name, rc))
            text = n.stderr_path.read_text(errors="replace") if n.stderr_path.exists() else ""
            if "Traceback" in text:
                tracebacks[n.name] = text.count("Traceback")
        violations, summary = check(ns, crashed)
        views = {}
        for *_, view in storm.outcomes:
            views[view] = views.get(view, 0) + 1
        return {"nodes": nodes, "edges": len(edges), "payments": payments, "seed": seed, "duration": duration,
                "kills": len(storm.kills), "killed": storm.kills, "drops": storm.drops, "stalls": storm.stalls,
                "violations": violations, "summary": summary, "client_views": views, "tracebacks": tracebacks,
                "build_s": built, "storm_s": storm_time, "settle_s": settled}
    finally:
        net.close()
