"""Node network (issue 3): payment latency and payments per second over 1, 3 and 6 hops, with concurrency.

    .venv/bin/python bench/node.py [--hops 1,3,6] [--concurrency 1,4,16] [--payments 450] [--rounds 5]
                                   [--no-profile] [--no-write]

Per route length: a chain of real `amiko node` processes on loopback, each with its own home
and durable state as the node runs by default (SQLite WAL, synchronous=FULL, on the machine's
disk, not tmpfs): payer -> hop.. -> mp (the meeting point) -> hop.. -> payee, the meeting point
in the middle (1 hop: payer -> payee, the payee is the meeting point; 3 hops: payer, hop1, mp,
payee; 6 hops: payer, hop1, hop2, mp, hop4, hop5, payee). IOU channels funded by the side that
pays on them. One payment = `request` on the payee node, then `pay_start` and `pay_confirm`
on the payer node, each a call on the node's control socket (amiko.node.control.ControlClient,
one persistent connection per worker thread): no `amiko` process is started per payment, so
CLI start-up (about 100+ ms of Python imports) is not in the figures. Latency = pay_start
sent -> pay_confirm answered `committed` (payment link connect, signed Receipt, Confirm, both
routes, Lock, Commit{token} back at the payer); the request call is timed separately.
At concurrency C, C worker threads each run payments back to back until the run's count is
done; payments/s = payments / (first start -> last committed). All chains are up at once and
the configurations run in --rounds rounds, each running every (route, concurrency) in turn, so
the shared machine's load drift hits all alike. After each run the bench waits until every
node is quiet (nothing pending, reserved, locked or unacknowledged: every hop settled) and
checks the payer's and payee's balances moved by exactly the payments made. Node CPU comes
from /proc/PID/stat of the chain's node processes.

The profile (once, a fresh 6-hop chain): every node runs under cProfile (launched as
`python bench/node.py --profiled-node OUT HOME`, which runs amiko.cli.main(["node", ...]) with
sqlite3.connect wrapped to count and time COMMITs, and profiles only between SIGUSR1 and
SIGUSR2), a sequential window and a concurrency-16 window; strace -c counts the fsync and
fdatasync calls of one intermediate node in the same windows.
Writes its section of bench/RESULTS.md (bench/results_file.py). Exit 1 if a payment failed.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "host")]

from amiko import waits  # noqa: E402
from amiko.demo.network import DemoNode  # noqa: E402

AMOUNT = 100
FUNDING = 10_000_000
MEETING_POINT = "mp-bench"
WARMUP = 10
SECTION = "Node network (issue 3)"


# -- the profiled node (a child process: python bench/node.py --profiled-node OUT HOME)

def profiled_node(out, home):
    """amiko.cli.main(["node", "--home", home]) with COMMITs counted and cProfile between
    SIGUSR1 (start, counters reset) and SIGUSR2 (stop, write OUT.<k>.prof and OUT.<k>.json)."""
    import cProfile
    import sqlite3

    counters = {"commits": 0, "commit_s": 0.0, "relaxed": 0}
    relaxed = [False]  # the store lowered synchronous for this transaction (Store.transaction(durable=False))

    class CountingConnection(sqlite3.Connection):
        def execute(self, sql, *args):
            if sql == "COMMIT":
                return self.sqlite_commit_wal_fsync()
            if sql.startswith("PRAGMA synchronous="):
                relaxed[0] = sql != "PRAGMA synchronous=FULL"
            return super().execute(sql, *args)

        def sqlite_commit_wal_fsync(self):
            t = time.perf_counter()
            try:
                return super().execute("COMMIT")
            finally:
                counters["commits"] += 1
                counters["relaxed"] += relaxed[0]
                counters["commit_s"] += time.perf_counter() - t

    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        kwargs.setdefault("factory", CountingConnection)
        return real_connect(*args, **kwargs)

    sqlite3.connect = connect
    state = {"prof": None, "k": 0}

    def start(signum, frame):
        counters.update(commits=0, commit_s=0.0, relaxed=0)
        state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
        state["prof"] = cProfile.Profile()
        state["prof"].enable()

    def stop(signum, frame):
        prof = state["prof"]
        if prof is None:
            return
        prof.disable()
        cpu = time.process_time() - state["cpu0"]
        state["k"] += 1
        base = "%s.%d" % (out, state["k"])
        prof.dump_stats(base + ".prof")
        info = dict(counters, wall_s=time.perf_counter() - state["t0"],
                    cpu_s=cpu)
        with open(base + ".json.tmp", "w") as f:
            json.dump(info, f)
        os.rename(base + ".json.tmp", base + ".json")
        state["prof"] = None

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from amiko import cli

    return cli.main(["node", "--home", home])


# -- the network

def chain_names(hops):
    """Nodes from payer to payee for a route of `hops` links; the meeting point in the middle."""
    if hops == 1:
        return ["payer", "payee"], "payee"
    mp_at = (hops + 1) // 2
    names = ["payer"] + ["hop%d" % i if i != mp_at else "mp" for i in range(1, hops)] + ["payee"]
    return names, "mp"


def child_env():
    env = dict(os.environ)
    env.pop("AMIKO_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "shared"), str(ROOT / "host")] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


class BenchNode(DemoNode):
    """The demo's node process (home, control client, wait_ready, stop), started optionally under cProfile."""

    profile_out = None

    def start(self, profile_out=None):
        if not profile_out:
            return super().start()
        self.profile_out = profile_out
        self._log = open(self.log_path, "ab")
        argv = [sys.executable, str(Path(__file__).resolve()), "--profiled-node", profile_out, self.home]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     env=child_env())


def wait_for(condition, timeout, what):
    return waits.wait_for(condition, timeout, what, error=SystemExit, max_delay=0.2)


class Chain:
    def __init__(self, directory, hops, profile=False):
        self.dir = directory
        self.hops = hops
        self.names, self.mp = chain_names(hops)
        self.nodes = []
        for name in self.names:  # the meeting point's node before the payee, which names it NAME@KEY
            mp_ids = [n.meeting_points[0] for n in self.nodes if n.name == self.mp]
            self.nodes.append(BenchNode(directory, name, meeting_points=[MEETING_POINT] if name == self.mp else [],
                                        external=mp_ids if name == "payee" and self.mp != "payee" else []))
        self.payer, self.payee = self.nodes[0], self.nodes[-1]
        self.profile = profile

    def start(self):
        for n in self.nodes:
            n.start(os.path.join(self.dir, n.name + ".profile") if self.profile else None)
        for n in self.nodes:
            n.wait_ready()
        pairs = list(zip(self.nodes, self.nodes[1:]))
        for a, b in pairs:
            url = a.call("link", {"name": b.name, "credit_limit": FUNDING})["url"]  # b may deposit FUNDING
            r = b.call("link", {"name": a.name, "remote_url": url, "wait": 15, "credit_limit": FUNDING}, timeout=30)
            if not r.get("connected"):
                raise SystemExit("link %s <-> %s did not come up: %s" % (a.name, b.name, r.get("last_error")))
        for a, b in pairs:  # the side that pays on a channel funds it: money flows payer -> payee
            a.call("deposit", {"link": b.name, "amount": FUNDING})
        for a, b in pairs:
            wait_for(lambda: any(ch["link"] == a.name for ch in b.call("status")["channels"]), 20,
                     "channel %s -> %s recorded at %s" % (a.name, b.name, b.name))
        return self

    def balance(self, node):
        return node.call("status")["balance"]

    def quiet(self):
        for n in self.nodes:
            s = n.call("status")
            if s.get("pending"):
                return False
            for ch in s["channels"]:
                if ch.get("reserved") or ch.get("locked"):
                    return False
            for link in s["links"]:
                if link.get("unacked") or not link.get("connected"):
                    return False
        return True

    def close(self):
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop()


# -- payments

def run_payments(chain, count, concurrency, tag):
    """count payments by `concurrency` workers; returns (records, seconds first start -> last commit)."""
    records = []
    failures = []
    lock = threading.Lock()
    issued = [0]

    def worker():
        payee, payer = chain.payee.client(timeout=120), chain.payer.client(timeout=120)
        try:
            while True:
                with lock:
                    if issued[0] >= count or failures:
                        return
                    issued[0] += 1
                    i = issued[0]
                t0 = time.perf_counter()
                req = payee.call("request", {"amount": AMOUNT, "receipt": "%s %d" % (tag, i)})
                t1 = time.perf_counter()
                offer = payer.call("pay_start", {"url": req["url"]})
                t2 = time.perf_counter()
                if "handle" not in offer:
                    failures.append("payment %s %d: %s" % (tag, i, offer))
                    return
                res = payer.call("pay_confirm", {"handle": offer["handle"], "timeout": 60}, timeout=90)
                t3 = time.perf_counter()
                if res.get("result") != "committed":
                    failures.append("payment %s %d: %s: %s" % (tag, i, res.get("result"), res.get("reason")))
                    return
                with lock:
                    records.append({"start": t0, "end": t3, "request": t1 - t0, "receipt": t2 - t1,
                                    "confirm": t3 - t2, "pay": t3 - t1})
        except Exception as e:  # reported by the caller
            failures.append("payment %s: %s: %s" % (tag, type(e).__name__, e))
        finally:
            payee.close()
            payer.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit("payment failed: %s" % failures[0])
    elapsed = max(r["end"] for r in records) - min(r["start"] for r in records)
    return records, elapsed


def pct(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def proc_cpu(pid):
    """User+system CPU seconds of a process so far (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(hops_list, levels, payments, rounds, note):
    """Every chain up at once; `rounds` rounds, each running every (route, concurrency) in turn,
    so slow drift of the shared machine's load spreads over all configurations alike."""
    directory = tempfile.mkdtemp(prefix="amiko-bench-node-")
    chains = {}
    out = {h: {c: {"records": [], "elapsed": 0.0, "settle": [], "n": 0, "node_cpu": 0.0, "bench_cpu": 0.0, "pps": []}
               for c in levels} for h in hops_list}
    try:
        for h in hops_list:
            t0 = time.monotonic()
            os.makedirs(os.path.join(directory, "h%d" % h))
            chains[h] = Chain(os.path.join(directory, "h%d" % h), h)
            chains[h].start()
            run_payments(chains[h], WARMUP, 1, "warmup")
            wait_for(chains[h].quiet, 60, "the chain to settle after warm-up")
            note("%s: chain %s up and warmed in %.1f s" % (_h(h), " -> ".join(chains[h].names), time.monotonic() - t0))
        for rnd in range(1, rounds + 1):
            for h in hops_list:
                chain = chains[h]
                for c in levels:
                    n = -(-payments_for(payments, c) // rounds)
                    before = (chain.balance(chain.payer), chain.balance(chain.payee))
                    cpu0 = sum(proc_cpu(node.proc.pid) for node in chain.nodes)
                    bench0 = time.process_time()
                    records, elapsed = run_payments(chain, n, c, "r%d c%d" % (rnd, c))
                    bench_cpu = time.process_time() - bench0
                    node_cpu = sum(proc_cpu(node.proc.pid) for node in chain.nodes) - cpu0
                    tq = time.perf_counter()
                    wait_for(chain.quiet, 120, "the chain to settle after %d payments at concurrency %d" % (n, c))
                    settle = time.perf_counter() - tq
                    after = (chain.balance(chain.payer), chain.balance(chain.payee))
                    if before[0] - after[0] != n * AMOUNT or after[1] - before[1] != n * AMOUNT:
                        raise SystemExit("%d hops, concurrency %d: balances moved by %d (payer) and %d (payee), want %d"
                                         % (h, c, before[0] - after[0], after[1] - before[1], n * AMOUNT))
                    o = out[h][c]
                    o["records"] += records
                    o["elapsed"] += elapsed
                    o["settle"].append(settle)
                    o["n"] += n
                    o["node_cpu"] += node_cpu
                    o["bench_cpu"] += bench_cpu
                    o["pps"].append(n / elapsed)
                    pay = [r["pay"] * 1000 for r in records]
                    note("round %d, %s, c=%d: %d payments, p50 %.1f ms, p99 %.1f ms, %.1f payments/s, node CPU "
                         "%.1f ms/payment" % (rnd, _h(h), c, n, statistics.median(pay), pct(pay, 99), n / elapsed,
                                              1000 * node_cpu / n))
    finally:
        for chain in chains.values():
            chain.close()
        shutil.rmtree(directory, ignore_errors=True)
    return out


def payments_for(payments, c):
    """Per configuration: at least `payments`, and enough rounds at high concurrency."""
    return max(payments, 15 * c)


# -- profile

CATEGORIES = (
    ("sqlite COMMIT (WAL write + fsync)", None),
    ("sqlite other (queries, BEGIN, statements)", None),
    ("crypto: ecdsa (sign/verify)", None),
    ("hashing (hashlib)", None),
    ("CBOR + frames + messages (amiko_core)", None),
    ("asyncio + sockets (loop, transports, streams)", None),
    ("JSON (control socket)", None),
    ("logging", None),
    ("node code (amiko.node)", None),
    ("other", None),
)


def categorize(func):
    filename, _, name = func
    if "sqlite3" in name or "sqlite3" in filename or "CountingConnection" in name or "sqlite_commit" in name:
        return "sqlite other (queries, BEGIN, statements)"
    if "/ecdsa/" in filename or "gmpy" in name:
        return "crypto: ecdsa (sign/verify)"
    if "_hashlib" in name or "hashlib" in filename or "sha256" in name:
        return "hashing (hashlib)"
    if "amiko_core" in filename:
        return "CBOR + frames + messages (amiko_core)"
    if "/asyncio/" in filename or "selectors" in filename or "_socket" in name or "socket.py" in filename \
            or "select.epoll" in name:
        return "asyncio + sockets (loop, transports, streams)"
    if "/json/" in filename or "_json" in name:
        return "JSON (control socket)"
    if "/logging/" in filename:
        return "logging"
    if "amiko/node" in filename:
        return "node code (amiko.node)"
    return "other"


def summarize_profile(prof_path, info):
    """{category: seconds} of busy time (epoll waits excluded), COMMIT from the wrapper, top functions."""
    import pstats

    st = pstats.Stats(prof_path)
    cats = {name: 0.0 for name, _ in CATEGORIES}
    idle = 0.0
    top = []
    for func, (cc, nc, tt, ct, callers) in st.stats.items():
        if func[2] in ("<method 'poll' of 'select.epoll' objects>",):
            idle += tt
            continue
        cats[categorize(func)] += tt
        top.append((tt, ct, nc, func))
    commit = info["commit_s"]
    cats["sqlite COMMIT (WAL write + fsync)"] = commit
    cats["sqlite other (queries, BEGIN, statements)"] = max(0.0, cats["sqlite other (queries, BEGIN, statements)"] - commit)
    top.sort(reverse=True)
    calls = {}
    for func, (cc, nc, tt, ct, callers) in st.stats.items():
        for key, (suffix, name) in COUNTED.items():
            if func[0].endswith(suffix) and func[2] == name:
                calls[key] = calls.get(key, 0) + nc
    return cats, idle, top, calls


# functions whose call counts explain the transactions: (file suffix, name)
COUNTED = {
    "groups": ("amiko/node/links.py", "_apply_group"),  # one store transaction per group of reads
    "reads": ("amiko/node/links.py", "_apply_read"),  # socket reads with LinkMsgs/Acks
    "handled": ("amiko/node/links.py", "_call_handler"),  # one per link message applied
    "acks": ("amiko/node/outbox.py", "acked"),  # reads that carried an Ack
}


def strace_start(pid, out):
    if not shutil.which("strace"):
        return None
    return subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync,sync_file_range",
                             "-o", out, "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def strace_stop(proc, out):
    if proc is None:
        return None
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    counts = {}
    try:
        for line in open(out):
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync", "sync_file_range"):
                counts[parts[-1]] = int(parts[3])
    except OSError:
        return None
    return counts


def profile_run(windows, note):
    """A fresh 6-hop chain, every node under cProfile; windows: [(concurrency, payments)]."""
    directory = tempfile.mkdtemp(prefix="amiko-bench-node-prof-")
    chain = Chain(directory, 6, profile=True)
    traced = None
    results = []
    try:
        chain.start()
        traced = next(n for n in chain.nodes if n.name == "hop2")
        run_payments(chain, WARMUP, 1, "warmup")
        wait_for(chain.quiet, 60, "the profiled chain to settle after warm-up")
        for k, (c, n) in enumerate(windows, 1):
            for node in chain.nodes:
                node.proc.send_signal(signal.SIGUSR1)
            trace_out = os.path.join(directory, "strace.%d" % k)
            tracer = strace_start(traced.proc.pid, trace_out)
            time.sleep(0.5)  # the handlers have run and strace is attached
            records, elapsed = run_payments(chain, n, c, "prof%d" % k)
            wait_for(chain.quiet, 120, "the profiled chain to settle")
            fsyncs = strace_stop(tracer, trace_out)
            for node in chain.nodes:
                node.proc.send_signal(signal.SIGUSR2)
            per_node = {}
            for node in chain.nodes:
                base = "%s.%d" % (node.profile_out, k)
                wait_for(lambda: os.path.exists(base + ".json"), 30, "the profile of %s" % node.name)
                info = json.load(open(base + ".json"))
                per_node[node.name] = (info, summarize_profile(base + ".prof", info))
            pay = [r["pay"] * 1000 for r in records]
            note("profile window %d: c=%d, %d payments, p50 %.1f ms (under cProfile), fsyncs at hop2: %s"
                 % (k, c, n, statistics.median(pay), fsyncs))
            results.append({"c": c, "n": n, "nodes": per_node, "fsyncs": fsyncs, "traced": traced.name,
                            "p50": statistics.median(pay), "pps": n / elapsed})
    finally:
        chain.close()
        shutil.rmtree(directory, ignore_errors=True)
    return results


# -- report

def _h(hops):
    return "%d hop%s" % (hops, "s" if hops > 1 else "")


def report(results, levels, payments, rounds, prof, elapsed):
    hops_list = sorted(results)
    lines = [
        "Real `amiko node` processes on loopback, one chain per route length, the meeting point in the middle: "
        + "; ".join("%s: %s" % (_h(h), " -> ".join(chain_names(h)[0])) for h in hops_list) + ". "
        "Durable state as the node runs by default (SQLite WAL, synchronous=FULL; homes on the machine's disk, "
        "not tmpfs). Payments of %d base units driven through the control sockets directly (request on the payee node, "
        "pay_start + pay_confirm on the payer node, one persistent ControlClient connection per worker thread): "
        "no `amiko` process per payment, so CLI start-up is not measured. Latency = pay_start sent -> "
        "pay_confirm answered committed (payment link, signed receipt, both routes, lock, Commit{token} at the "
        "payer); the request call is timed apart. Concurrency C = C workers paying back to back through the same "
        "chain and channels; payments/s = payments / (first start -> last committed). All chains up at once; "
        "%d warm-up payments per chain not counted; per configuration max(%d, 15 x C) payments, in %d rounds "
        "that each run every configuration in turn (so the shared machine's load drift hits all alike). After "
        "each run the bench waited until every hop had settled (nothing pending, reserved, locked or "
        "unacknowledged: 'settled after' is the slowest such wait) and checked payer and payee balances moved "
        "by exactly the payments. Node CPU = user+sys of all the chain's node processes (/proc) during the "
        "payments, per payment; CPU ceiling = %d cores / (node CPU + this bench's client CPU) per payment, "
        "what the machine could do if CPU were the only limit. 2-core machine shared with other work: read "
        "medians and ratios, not absolute p99s." % (AMOUNT, WARMUP, payments, rounds, os.cpu_count() or 1),
        "",
        "| route | concurrency | payments | p50 ms | p90 ms | p99 ms | payments/s | per round | request p50 ms | "
        "receipt p50 ms | confirm->committed p50 ms | settled after (s) | node CPU ms/payment | CPU ceiling payments/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for h in hops_list:
        for c in levels:
            r = results[h][c]
            pay = [x["pay"] * 1000 for x in r["records"]]
            lines.append("| %s | %d | %d | %.1f | %.1f | %.1f | %.1f | %s | %.1f | %.1f | %.1f | %.2f | %.1f | %.0f |" % (
                _h(h), c, r["n"], statistics.median(pay), pct(pay, 90), pct(pay, 99), r["n"] / r["elapsed"],
                " / ".join("%.0f" % x for x in r["pps"]),
                statistics.median(x["request"] * 1000 for x in r["records"]),
                statistics.median(x["receipt"] * 1000 for x in r["records"]),
                statistics.median(x["confirm"] * 1000 for x in r["records"]), max(r["settle"]),
                1000 * r["node_cpu"] / r["n"], (os.cpu_count() or 1) * r["n"] / (r["node_cpu"] + r["bench_cpu"])))

    def p50(h, c):
        return statistics.median(x["pay"] for x in results[h][c]["records"])

    def pps(h, c):
        return results[h][c]["n"] / results[h][c]["elapsed"]

    base_h, base_c = hops_list[0], levels[0]
    lines += ["", "Growth with hop count (same concurrency; ratio to %s):" % _h(base_h), "",
              "| concurrency | " + " | ".join("p50 %s" % _h(h) for h in hops_list) + " | "
              + " | ".join("payments/s %s" % _h(h) for h in hops_list) + " |",
              "|---|" + "---|" * (2 * len(hops_list))]
    for c in levels:
        lines.append("| %d | %s | %s |" % (
            c, " | ".join("%.2fx" % (p50(h, c) / p50(base_h, c)) for h in hops_list),
            " | ".join("%.2fx" % (pps(h, c) / pps(base_h, c)) for h in hops_list)))
    lines += ["", "Growth with concurrency (same route; ratio to concurrency %d):" % base_c, "",
              "| route | " + " | ".join("p50 c=%d" % c for c in levels) + " | "
              + " | ".join("payments/s c=%d" % c for c in levels) + " |",
              "|---|" + "---|" * (2 * len(levels))]
    for h in hops_list:
        lines.append("| %s | %s | %s |" % (
            _h(h), " | ".join("%.2fx" % (p50(h, c) / p50(h, base_c)) for c in levels),
            " | ".join("%.2fx" % (pps(h, c) / pps(h, base_c)) for c in levels)))
    if len(hops_list) > 1:
        lo, hi = hops_list[0], hops_list[-1]
        per_hop = (p50(hi, base_c) - p50(lo, base_c)) / (hi - lo) * 1000
        lines += ["", "Sequential latency per added hop: about %.1f ms ((p50 %s - p50 %s) / %d)."
                  % (per_hop, _h(hi), _h(lo), hi - lo)]
    if prof:
        lines += ["", profile_report(prof), "", reading(results, levels, prof)]
    lines += ["", "Wall time of the whole run: %.0f s." % elapsed]
    return "\n".join(lines)


def profile_report(prof):
    roles = chain_names(6)[0]
    lines = ["### Where the time goes (profile, once)", "",
             "A fresh 6-hop chain (payer -> hop1 -> hop2 -> mp -> hop4 -> hop5 -> payee), every node under "
             "cProfile (wall-clock; `python bench/node.py --profiled-node OUT HOME` runs amiko.cli.main "
             "[\"node\", ...] with sqlite3.connect given a Connection subclass that counts and times each "
             "COMMIT; profiling on between SIGUSR1 and SIGUSR2 only, i.e. the payment window plus the wait "
             "until every hop settled). Wall ms busy = profiled wall-clock time outside epoll waits (it includes "
             "blocking in fsync and waiting for a CPU on the shared 2 cores); CPU = the process's user+sys time "
             "in the window; all per payment. fsync counts: strace -c on hop2 during the same window (ptrace "
             "stops hop2 at every system call, so its sqlite and asyncio times are inflated: compare the other "
             "columns). cProfile slows Python code about 1.5-2x, so read shares, not absolute ms. The wrapper's "
             "own Python frame (bench/node.py:execute, about 0.5 ms per payment) is in 'other'."]
    for w in prof:
        nodes = w["nodes"]
        lines += ["", "Window: concurrency %d, %d payments (p50 %.0f ms, %.1f payments/s under the profiler); "
                  "fsync calls at %s: %s." % (
                      w["c"], w["n"], w["p50"], w["pps"], w["traced"],
                      ", ".join("%s %d (%.1f per payment)" % (k, v, v / w["n"]) for k, v in sorted(w["fsyncs"].items()))
                      if w["fsyncs"] else "strace not available"), ""]
        names = [r for r in roles if r in nodes]
        lines.append("| per payment | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        n = w["n"]

        def row(label, fn, fmt="%.2f"):
            lines.append("| %s | %s |" % (label, " | ".join(fmt % fn(nodes[r]) for r in names)))

        row("COMMITs (SQLite transactions)", lambda x: x[0]["commits"] / n, "%.1f")
        row("&nbsp; of them durable (synchronous=FULL: fsync)", lambda x: (x[0]["commits"] - x[0].get("relaxed", 0)) / n,
            "%.1f")
        row("ms per COMMIT", lambda x: 1000 * x[0]["commit_s"] / max(1, x[0]["commits"]))
        row("CPU ms (user+sys)", lambda x: 1000 * (x[0]["cpu_s"]) / n)
        row("wall ms busy (profiled, outside epoll waits)", lambda x: 1000 * sum(x[1][0].values()) / n)
        for name, _ in CATEGORIES:
            row("&nbsp; %s" % name, lambda x, name=name: 1000 * x[1][0][name] / n)
        row("link group transactions (links._apply_group)", lambda x: x[1][3].get("groups", 0) / n, "%.1f")
        row("&nbsp; socket reads they applied (links._apply_read)", lambda x: x[1][3].get("reads", 0) / n, "%.1f")
        row("&nbsp; link messages applied", lambda x: x[1][3].get("handled", 0) / n, "%.1f")
        row("&nbsp; of the reads: carrying an Ack", lambda x: x[1][3].get("acks", 0) / n, "%.1f")
        row("&nbsp; of the reads: only Acks (at least)",
            lambda x: max(0, x[1][3].get("reads", 0) - x[1][3].get("handled", 0)) / n, "%.1f")
    last = prof[0]
    for role in ("hop1", "payee"):
        if role not in last["nodes"]:
            continue
        top = last["nodes"][role][1][2][:8]
        lines += ["", "Top functions by own time at %s (window 1), ms per payment: " % role + "; ".join(
            "%s %.2f (%s calls)" % (_fname(f), 1000 * tt / last["n"], _calls(nc / last["n"])) for tt, ct, nc, f in top) + "."]
    return "\n".join(lines)


def reading(results, levels, prof):
    """The figures that explain the tables, as one paragraph."""
    hops_list = sorted(results)
    hi = hops_list[-1]
    w_lo, w_hi = prof[0], prof[-1]
    hops_inner = [n for n in chain_names(6)[0] if n not in ("payer", "payee", w_lo["traced"])]

    def avg(w, fn):
        return statistics.mean(fn(w["nodes"][r]) / w["n"] for r in hops_inner)

    commits_lo = avg(w_lo, lambda x: x[0]["commits"])
    commits_hi = avg(w_hi, lambda x: x[0]["commits"])
    ack_only = avg(w_lo, lambda x: max(0, x[1][3].get("reads", 0) - x[1][3].get("handled", 0)))
    msgs = avg(w_lo, lambda x: x[1][3].get("handled", 0))
    ms_commit = statistics.mean(1000 * w_lo["nodes"][r][0]["commit_s"] / max(1, w_lo["nodes"][r][0]["commits"])
                                for r in hops_inner)
    cpu_node = {c: 1000 * results[hi][c]["node_cpu"] / results[hi][c]["n"] / (hi + 1) for c in levels}
    fs = lambda w: sum(w["fsyncs"].values()) / w["n"] if w["fsyncs"] else float("nan")  # noqa: E731
    return ("Reading: every node applies the socket reads of all its links that arrive within one loop iteration "
            "in one SQLite transaction (WAL; fsync unless the group carries only Acks) before "
            "it forwards or acknowledges anything, so a payment costs each intermediate node about %.1f COMMITs "
            "when payments come one at a time (%.1f link messages applied + at least %.1f reads carrying only "
            "Acks; %.1f ms per COMMIT, fsync included) and hop2 made %.1f fsync calls per payment; at concurrency "
            "%d reads carry several messages and Acks, and it drops to %.1f COMMITs (hop2: %.1f fsyncs) per "
            "payment. The COMMIT runs on the node's event-loop thread, so the node does nothing else during the "
            "fsync. Node CPU per payment per node of the %s chain: %s; every node of a chain spends CPU and "
            "fsyncs on every payment and all share the 2 cores and one disk, hence payments/s falls with hop "
            "count. Crypto is only at the "
            "endpoints: the payee signs the receipt, the payer verifies it (libsecp256k1 through coincurve); "
            "intermediate nodes do no signature work per payment. CBOR/frames and asyncio are a few ms per "
            "node per payment each."
            % (commits_lo, msgs, ack_only, ms_commit, fs(w_lo), w_hi["c"], commits_hi, fs(w_hi), _h(hi),
               ", ".join("%.1f ms at concurrency %d" % (cpu_node[c], c) for c in levels)))


def _calls(x):
    return "%.1f" % x if x < 10 else "%d" % round(x)


def _fname(func):
    filename, line, name = func
    if "CountingConnection.execute" in name:
        return "`sqlite3.Connection.execute` (C, all statements incl. COMMIT)"
    if filename == "~":
        return "`%s`" % name.replace("<", "").replace(">", "")
    short = filename.split("/host/")[-1].split("/shared/")[-1].split("site-packages/")[-1].split("/lib/python3.11/")[-1]
    return "`%s:%s`" % (short, name)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profiled-node"]:
        return profiled_node(argv[1], argv[2])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hops", default="1,3,6", help="route lengths, comma-separated (default 1,3,6)")
    ap.add_argument("--concurrency", default="1,4,16", help="concurrency levels (default 1,4,16)")
    ap.add_argument("--payments", type=int, default=450, help="minimum payments per configuration (default 450)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds over all configurations (default 5)")
    ap.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    hops_list = [int(h) for h in args.hops.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    note = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.monotonic()
    results = measure(hops_list, levels, args.payments, args.rounds, note)
    prof = None if args.no_profile else profile_run([(1, 60), (16, 160)], note)
    text = report(results, levels, args.payments, args.rounds, prof, time.monotonic() - t0)
    print(text)
    if not args.no_write:
        command = "python bench/node.py --hops %s --concurrency %s --payments %d --rounds %d%s" % (
            args.hops, args.concurrency, args.payments, args.rounds, " --no-profile" if args.no_profile else "")
        from results_file import write_section

        write_section(SECTION, command, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
