"""Payment latency and throughput of two source trees side by side, in one run (issue 11: before/after BOLT 8).

    .venv/bin/python bench/compare_trees.py --before DIR [--after DIR] [--hops 1,3] [--concurrency 1,16]
                                            [--payments 100] [--rounds 3] [--no-write]
                                            [--section NAME] [--change TEXT]

What it measures: the figures of bench/node.py (real `amiko node` processes on loopback, one chain
per route length, payments driven through the control sockets; latency = pay_start sent ->
pay_confirm answered committed; payments/s = payments / (first start -> last committed); see
that script's docstring) for the tree BEFORE a change and the tree AFTER it.

How: each tree is driven by its own bench/node.py with its own virtualenv, because the bench
scripts differ between the trees (the new one sets credit limits and names the meeting point
NAME@KEY), i.e. per tree and round one process

    DIR/.venv/bin/python DIR/bench/node.py --no-profile --no-write --hops H --concurrency C
                                           --payments N --rounds 1

(which brings its chains up, warms them, runs every configuration once, checks the balances and
prints its markdown table on stdout). The trees alternate within a round and the order flips
every round (before, after | after, before | ...), so the shared machine's load drift hits both
alike. The table both versions print is parsed by its column names (route, concurrency,
payments, p50 ms, p99 ms, payments/s, node CPU ms/payment). Reported per (hops, concurrency):
the median over rounds of p50 and p99 latency and of payments/s for each tree, every round's
payments/s, and the ratio after/before (latency ratio > 1: after is slower; payments/s ratio
< 1: after is slower). Writes its section of bench/RESULTS.md (bench/results_file.py) with
uname, nproc, the load average at start and end, the commit of each tree and the exact command.
Exits 1 if either tree's bench fails (its exit code and last stderr lines are printed).
"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from results_file import write_section  # noqa: E402  (this script's own directory)

SECTION = "Node network before/after BOLT 8 (issue 11)"
CHANGE = ("the BOLT 8 work (the after tree's script also sets credit limits and names the meeting point "
          "NAME@KEY)")
COLUMNS = {"p50": "p50 ms", "p99": "p99 ms", "pps": "payments/s", "cpu": "node CPU ms/payment", "n": "payments"}
RUN_TIMEOUT = 900


def node_bench_argv(tree, hops, concurrency, payments):
    return [str(tree / ".venv" / "bin" / "python"), str(tree / "bench" / "node.py"), "--no-profile", "--no-write",
            "--hops", hops, "--concurrency", concurrency, "--payments", str(payments), "--rounds", "1"]


def parse_table(text):
    """{(hops, concurrency): {p50, p99, pps, cpu, n}} from the first markdown table of bench/node.py's report."""
    lines = [line.strip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("| route | concurrency |")), None)
    if start is None:
        raise ValueError("no results table (a line starting '| route | concurrency |') in the output")
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    missing = [col for col in COLUMNS.values() if col not in header]
    if missing:
        raise ValueError("results table lacks the columns %s" % ", ".join(missing))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
        hops = int(cells["route"].split()[0])  # "1 hop", "3 hops"
        rows[(hops, int(cells["concurrency"]))] = {key: float(cells[col]) for key, col in COLUMNS.items()}
    if not rows:
        raise ValueError("results table has no rows")
    return rows


def run_tree(label, tree, args, note):
    argv = node_bench_argv(tree, args.hops, args.concurrency, args.payments)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=str(tree), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SystemExit("%s tree: bench/node.py did not finish within %d s: %s" % (label, RUN_TIMEOUT, shlex.join(argv)))
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SystemExit("%s tree: bench/node.py exited %d: %s\n%s" % (label, proc.returncode, shlex.join(argv), tail))
    try:
        rows = parse_table(proc.stdout)
    except ValueError as e:
        raise SystemExit("%s tree: cannot read bench/node.py's output (%s): %s" % (label, e, shlex.join(argv)))
    note("%s: %s in %.0f s" % (label, "; ".join("%dh c%d p50 %.1f ms %.1f/s" % (h, c, r["p50"], r["pps"])
                                                 for (h, c), r in sorted(rows.items())), time.monotonic() - t0))
    return rows


def tree_commit(tree):
    def git(*a):
        return subprocess.run(["git", "-C", str(tree)] + list(a), capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "not a git tree"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" (with uncommitted changes)" if dirty else "")


def machine_line():
    u = os.uname()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    return "uname: `%s %s %s %s`; nproc: %s" % (u.sysname, u.release, u.version, u.machine, nproc)


def report(results, trees, args, loads, elapsed):
    """results[label] = list over rounds of parse_table() dicts."""
    keys = sorted(results["before"][0])
    order = ", ".join("%d: %s" % (i + 1, " then ".join(rnd)) for i, rnd in enumerate(rounds_order(args.rounds)))

    def med(label, key, field):
        return statistics.median(r[key][field] for r in results[label])

    lines = [
        "The figures of bench/node.py (section 'Node network (issue 3)' explains what they are: real `amiko node` "
        "chains on loopback, durable SQLite, latency = pay_start sent -> pay_confirm answered committed, "
        "payments/s = payments / (first start -> last committed)) for the tree before %s and after "
        "it, each tree driven by its own bench/node.py and virtualenv: per round one `DIR/.venv/bin/python DIR/bench/node.py "
        "--no-profile --no-write --hops %s --concurrency %s --payments %d --rounds 1` per tree, which brings its "
        "chains up, runs 10 warm-up payments per chain (not counted), then max(%d, 15 x C) payments per "
        "configuration, and checks the balances. %d rounds, the two trees alternating and the order flipping each "
        "round (%s), so load drift hits both alike. Figures: the median over the rounds of each round's p50, p99 "
        "and payments/s; ratio = after / before (latency > 1.00x or payments/s < 1.00x: after is slower)."
        % (args.change, args.hops, args.concurrency, args.payments, args.payments, args.rounds, order),
        "",
        "Before: `%s` at %s. After: `%s` at %s." % (trees["before"], tree_commit(trees["before"]),
                                                   trees["after"], tree_commit(trees["after"])),
        "%s. The machine was shared during the run (other helpers were running tests): load average %s at "
        "the start, %s at the end; read the medians and the ratios, not absolute p99s." % (
            machine_line(), "/".join("%.2f" % x for x in loads[0]), "/".join("%.2f" % x for x in loads[1])),
        "",
        "| route | concurrency | payments per round | p50 ms before | p50 ms after | p50 after/before | "
        "p99 ms before | p99 ms after | p99 after/before | payments/s before | payments/s after | "
        "payments/s after/before | payments/s per round before | payments/s per round after | "
        "node CPU ms/payment before | node CPU ms/payment after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        h, c = key
        b = {f: med("before", key, f) for f in COLUMNS}
        a = {f: med("after", key, f) for f in COLUMNS}
        lines.append("| %d hop%s | %d | %d | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx | %s | %s "
                     "| %.1f | %.1f |" % (
                         h, "s" if h > 1 else "", c, a["n"], b["p50"], a["p50"], a["p50"] / b["p50"], b["p99"], a["p99"],
                         a["p99"] / b["p99"], b["pps"], a["pps"], a["pps"] / b["pps"],
                         " / ".join("%.1f" % r[key]["pps"] for r in results["before"]),
                         " / ".join("%.1f" % r[key]["pps"] for r in results["after"]), b["cpu"], a["cpu"]))
    lines += ["", "Wall time of the whole comparison: %.0f s." % elapsed]
    return "\n".join(lines)


def rounds_order(rounds):
    return [("before", "after") if i % 2 == 0 else ("after", "before") for i in range(rounds)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, type=Path, help="the tree before the change (with its own .venv)")
    ap.add_argument("--after", default=HERE.parent, type=Path, help="the tree after the change (default: this repo)")
    ap.add_argument("--hops", default="1,3", help="route lengths, comma-separated (default 1,3)")
    ap.add_argument("--concurrency", default="1,16", help="concurrency levels (default 1,16)")
    ap.add_argument("--payments", type=int, default=100, help="minimum payments per configuration and round (default 100)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each running both trees once (default 3)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update bench/RESULTS.md")
    ap.add_argument("--section", default=SECTION, help="the bench/RESULTS.md section to write (default: %r)" % SECTION)
    ap.add_argument("--change", default=CHANGE, help="what changed between the trees, for the report (default: %r)"
                    % CHANGE)
    args = ap.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for label, tree in trees.items():
        for need in (tree / ".venv" / "bin" / "python", tree / "bench" / "node.py"):
            if not need.exists():
                raise SystemExit("%s tree %s: %s is missing" % (label, tree, need))
    note = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.monotonic()
    loads = [os.getloadavg()]
    results = {"before": [], "after": []}
    for i, order in enumerate(rounds_order(args.rounds), 1):
        for label in order:
            note("round %d/%d: %s tree (%s)" % (i, args.rounds, label, trees[label]))
            results[label].append(run_tree(label, trees[label], args, note))
    loads.append(os.getloadavg())
    if sorted(results["before"][0]) != sorted(results["after"][0]):
        raise SystemExit("the trees reported different configurations: %s vs %s"
                         % (sorted(results["before"][0]), sorted(results["after"][0])))
    text = report(results, trees, args, loads, time.monotonic() - t0)
    print(text)
    if not args.no_write:
        write_section(args.section, ".venv/bin/python bench/compare_trees.py " + shlex.join(argv), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
