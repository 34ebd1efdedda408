"""The long chaos storm (issue 4): by default 300 payments over 60 s on 10 nodes while random
nodes are SIGKILLed and restarted and links dropped. Writes its section of bench/RESULTS.md.

    .venv/bin/python bench/chaos.py [--nodes 10] [--payments 300] [--duration 60] [--seed 1]

The storm and its invariants are testing/amiko_testing/chaos.py (the short version runs in the tests).
Exit status 1 if any invariant was violated.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

from amiko_testing.chaos import run_storm
from results_file import write_section  # this script's own directory


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--payments", type=int, default=300)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill-every", type=float, default=4.0)
    ap.add_argument("--drop-every", type=float, default=2.0)
    ap.add_argument("--stall-every", type=float, default=3.0)
    ap.add_argument("--no-write", action="store_true", help="print only, do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="amiko-chaos-") as tmp:
        r = run_storm(tmp, nodes=args.nodes, payments=args.payments, duration=args.duration, seed=args.seed,
                      kill_every=args.kill_every, drop_every=args.drop_every, stall_every=args.stall_every,
                      settle_timeout=180)
    print(json.dumps(r, indent=2, sort_keys=True))
    s = r["summary"]
    lines = [
        "Seeded storm (testing/amiko_testing/chaos.py): %d nodes, %d links (ring + chords, cycles), 2 meeting points; "
        "route/lock time-out 2 s, increment 3 s; durable state (SQLite, synchronous=FULL)." % (r["nodes"], r["edges"]),
        "",
        "| measure | value |",
        "|---|---|",
        "| payments started | %d over %.0f s (seed %d) |" % (r["payments"], r["duration"], r["seed"]),
        "| committed / cancelled / never confirmed (payee's view) | %d / %d / %d |"
        % (s["committed"], s["cancelled"], s["never confirmed"]),
        "| nodes SIGKILLed and restarted | %d (%s) |" % (r["kills"], ", ".join(r["killed"])),
        "| link connections dropped | %d |" % r["drops"],
        "| nodes stalled (SIGSTOP 1-2.5 s, then SIGCONT) | %d |" % r["stalls"],
        "| what the paying clients saw | %s |" % ", ".join("%s: %d" % kv for kv in sorted(r["client_views"].items())),
        "| time: build / storm / settle | %.0f s / %.0f s / %.0f s |" % (r["build_s"], r["storm_s"], r["settle_s"]),
        "| nodes with logged tracebacks | %s |" % (", ".join("%s: %d" % kv for kv in sorted(r["tracebacks"].items())) or "none"),
        "| **invariant violations** | **%d** |" % len(r["violations"]),
        "",
        "Invariants: total balance unchanged and both ends of every channel agree; nothing reserved, locked, "
        "pending or unacknowledged; every payment ended (committed or cancelled at both ends); each payment "
        "committed on all of its hops or none, payer and payee agree; every node's balance moved by exactly "
        "its committed payments; no node died other than the ones killed.",
    ]
    if r["violations"]:
        lines += ["", "Violations:", ""] + ["- %s" % v for v in r["violations"][:50]]
    if not args.no_write:
        cmd = "python bench/chaos.py --nodes %d --payments %d --duration %g --seed %d" % (
            args.nodes, args.payments, args.duration, args.seed)
        write_section("Chaos storm (issue 4)", cmd, "\n".join(lines))
    return 1 if r["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
