"""Tap to paid before/after: bench/taps.py of two trees run side by side, one table.

    .venv/bin/python bench/compare_taps.py --before TREE [--taps 100] [--taps-long 30] [--hops 1,3,6]
                                           [--kinds nfc,ble,serial] [--no-write]

Each tree runs its own bench/taps.py with its own virtualenv (TREE/.venv) at the same time, so
both see the same machine load; each saves its raw taps (--save), and this script puts them side
by side: tap to paid p50/p99 (arrival included), the arrival, Hello to paid, the phases, and what
went over the air. Ratio = after / before (below 1.00x: after is faster / smaller).
Writes the section "Tap to paid before/after (issue 13)" of bench/RESULTS.md.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_file import write_section  # noqa: E402  (this script's own directory)
from taps import NAMES, SEGMENTS, _hops  # noqa: E402
from terminal import pct  # noqa: E402


def run_both(before, after, args, directory):
    procs = {}
    for label, tree in (("before", before), ("after", after)):
        out = Path(directory) / (label + ".json")
        cmd = [str(tree / ".venv" / "bin" / "python"), str(tree / "bench" / "taps.py"), "--no-write",
               "--save", str(out), "--taps", str(args.taps), "--taps-long", str(args.taps_long),
               "--hops", args.hops, "--kinds", args.kinds]
        log = open(Path(directory) / (label + ".log"), "w")
        procs[label] = (subprocess.Popen(cmd, cwd=tree, stdout=log, stderr=subprocess.STDOUT), out, log)
    saved = {}
    for label, (proc, out, log) in procs.items():
        rc = proc.wait()
        log.close()
        if rc != 0:
            tail = Path(log.name).read_text().splitlines()[-15:]
            raise SystemExit("%s's bench/taps.py failed (exit %d); the end of its output:\n%s"
                             % (label, rc, "\n".join(tail)))
        data = json.loads(out.read_text())
        saved[label] = {int(h): v for h, v in data["results"].items()}
    return saved


def _ratio(a, b):
    return "%.2fx" % (b / a) if a else "-"


def _git_head(tree):
    r = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def summarize(saved, taps, before, after, elapsed):
    b, a = saved["before"], saved["after"]
    hops_list = sorted(a)
    kinds = [k for k in NAMES if k in a[hops_list[0]]]
    lines = ["Before: `%s` at %s. After: `%s` at %s. Both trees' bench/taps.py ran at the same time (same machine "
             "load); taps counted per configuration: %s. Tap to paid = the wallet entering the field (NFC) or "
             "coming into range (BLE) until the page shows paid, arrival included; USB serial: from the sale's "
             "start, the wallet plugged in (its arrival column is the previous sale's relay linger). "
             "Median and p99 per configuration; ratio = after / before."
             % (before, _git_head(before), after, _git_head(after),
                ", ".join("%d on %s" % (taps[h], _hops(h)) for h in hops_list)), ""]
    lines.append("| transport | route | tap to paid p50 ms before | after | ratio | p99 ms before | after | ratio "
                 "| arrival p50 ms before | after | Hello to paid p50 ms before | after |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for h in hops_list:
            row = []
            for side in (b, a):
                rs = side[h][kind]
                v = [r["tap_to_paid_ms"] for r in rs]
                row.append((statistics.median(v), pct(v, 99),
                            statistics.median(r["t"]["hello"] - r["t"]["arrive"] for r in rs),
                            statistics.median(r["t"]["paid"] - r["t"]["hello"] for r in rs)))
            (p50b, p99b, arrb, helb), (p50a, p99a, arra, hela) = row
            lines.append("| %s | %s | %g | %g | %s | %d | %d | %s | %g | %g | %g | %g |" % (
                NAMES[kind], _hops(h), p50b, p50a, _ratio(p50b, p50a), p99b, p99a, _ratio(p99b, p99a),
                arrb, arra, helb, hela))
    lines += ["", "Phases (median ms of each segment of the bridge's timeline), before / after:", ""]
    cols = [(k, h) for k in kinds for h in hops_list]
    lines.append("| segment | " + " | ".join("%s %s" % (NAMES[k], _hops(h)) for k, h in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for label, x, y, _what in SEGMENTS:
        cells = []
        for k, h in cols:
            cells.append(" / ".join("%g" % statistics.median(r["t"][y] - r["t"][x] for r in side[h][k])
                                    for side in (b, a)))
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    lines += ["", "Over the air per payment (median), before / after:", ""]
    lines.append("| transport | route | terminal -> wallet bytes | wallet -> terminal bytes | APDU exchanges |")
    lines.append("|---|---|---|---|---|")
    for kind in kinds:
        if kind == "serial":
            continue
        for h in hops_list:
            cells = []
            for key in ("bytes_in", "bytes_out", "apdus"):
                if kind != "nfc" and key == "apdus":
                    cells.append("-")
                    continue
                cells.append(" / ".join("%g" % statistics.median(r[key] for r in side[h][kind]) for side in (b, a)))
            lines.append("| %s | %s | %s |" % (NAMES[kind], _hops(h), " | ".join(cells)))
    lines += ["", "Wall time of the comparison: %.0f s." % elapsed]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, type=Path, help="the tree before the change (with its own .venv)")
    ap.add_argument("--after", default=HERE.parent, type=Path, help="the tree after the change (default: this repo)")
    ap.add_argument("--taps", type=int, default=100, help="counted taps per transport on 1 hop (default 100)")
    ap.add_argument("--taps-long", type=int, default=30, help="counted taps on longer routes (default 30)")
    ap.add_argument("--hops", default="1,3,6")
    ap.add_argument("--kinds", default="nfc,ble,serial")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    for tree in (args.before, args.after):
        if not (tree / ".venv" / "bin" / "python").exists():
            raise SystemExit("%s has no .venv: run `make .venv/.installed` there first" % tree)
    taps = {int(h): args.taps if int(h) == 1 else args.taps_long for h in args.hops.split(",")}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="amiko-compare-taps-") as directory:
        saved = run_both(args.before.resolve(), args.after.resolve(), args, directory)
    text = summarize(saved, taps, args.before, args.after, time.monotonic() - t0)
    print(text)
    if not args.no_write:
        command = "python bench/compare_taps.py --before %s --taps %d --taps-long %d --hops %s --kinds %s" % (
            args.before, args.taps, args.taps_long, args.hops, args.kinds)
        write_section("Tap to paid before/after (issue 13)", command, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
