"""The shop terminal's payment time as the cashier sees it (issue 6), over routes of 1, 3 and 6 hops.

    .venv/bin/python bench/terminal.py [--payments 100] [--hops 1,3,6] [--poll-interval 0.05] [--no-write]

Per route length: the demo's world (amiko.demo: real `amiko node` processes provider, hop1..,
mp, shop; a virtual wallet board flashed with `amiko flash`, provisioned and topped up at the
provider; `amiko bridge` with the wallet on USB serial), then WARMUP payments not counted and
--payments counted ones, each a cashier's sale on the page paid by the wallet confirming by
itself. The measure is the bridge's own clock: from the wallet's Hello answering the sale's
tap ("wallet connected") until the bridge's page state is paid ("page shows paid"); the
breakdown by phase comes from the same timeline (the phases the bridge follows on the shop
node and the frames it relays on the wallet's line). The bridge runs with its default
poll_interval (0.05 s: how often it asks the shop node about the payment), as deployed.
Writes its section of bench/RESULTS.md (bench/results_file.py). Exit 1 if a payment failed.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "host")]

from results_file import write_section  # noqa: E402  (this script's own directory)

from amiko.demo.run import Demo, one_payment  # noqa: E402

WARMUP = 5
AMOUNT = 100

# (label, from, to) segments of the timeline (ms since contact), in the order they happen
SEGMENTS = (
    ("contact -> receipt", "contact", "receipt", "Tap relayed, wallet's Pay to the shop node, signed Receipt back"),
    ("receipt -> confirm", "receipt", "confirm", "wallet checks receipt and limits, stores state, confirms by itself"),
    ("confirm -> routes", "confirm", "routes", "both sides route to the meeting point (provider's Status routed, "
     "shop's HavePayeeRoute; the later of the two)"),
    ("routes -> lock", "routes", "provider_locked", "funds locked along the payer side (provider's Status locked)"),
    ("lock -> token", "provider_locked", "token", "shop node commits, its Commit{token} reaches the wallet"),
    ("token -> page paid", "token", "paid_on_page", "the bridge sees the shop node's committed row (polling)"),
)
AFTER = (("the wallet's Done (proof stored)", "paid_on_page", "wallet_done"),
         ("the provider's committed Status", "paid_on_page", "provider_committed"))


def _hops(h):
    return "%d hop%s" % (h, "s" if h > 1 else "")


def pct(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def run_route(hops, payments, poll, note):
    directory = tempfile.mkdtemp(prefix="amiko-bench-terminal-")
    demo = Demo(directory, hops=hops, note=note, bridge_extra="poll_interval = %s\n" % poll,
                topup=AMOUNT * (payments + WARMUP) + 10000)
    records = []
    t0 = time.monotonic()
    try:
        demo.start()
        note("%s: set up in %.1f s; %d warm-up + %d payments" % (_hops(hops), time.monotonic() - t0, WARMUP, payments))
        for i in range(WARMUP + payments):
            rec = one_payment(demo, i + 1, AMOUNT, "bench %d" % (i + 1))
            if rec["state"] != "committed" or rec["wallet_state"] != "committed":
                raise SystemExit("payment %d on %d hops failed: %s / wallet %s"
                                 % (i + 1, hops, rec["reason"], rec["wallet_state"]))
            if i >= WARMUP:
                t = rec["timeline_ms"]
                t["routes"] = max(t["provider_routed"], t["payee_route"])
                records.append(rec)
            if (i + 1) % 25 == 0:
                note("  %s: %d payments" % (_hops(hops), i + 1))
    finally:
        demo.close()
        shutil.rmtree(directory, ignore_errors=True)
    return records


def summarize(results, payments, poll, elapsed):
    hops_list = sorted(results)
    lines = ["Payment time as the cashier sees it: from the wallet's Hello answering the sale's tap (wallet "
             "connected) until the bridge's page state is paid, bridge's clock; %d payments per route after %d "
             "warm-up, each a real sale on the page paid by a virtual wallet board (MicroPython unix port, firmware "
             "as .mpy flashed with `amiko flash`) on USB serial (pty) through `amiko bridge`, auto-confirm "
             "below its limit; real `amiko node` processes; bridge poll_interval %s s (its default). Route: "
             "provider -> hop1 .. -> mp (meeting point) -> shop; 1 hop = provider -> shop (the shop is the meeting "
             "point). 2-core machine shared with other work: read medians and ratios, not absolute p99s."
             % (payments, WARMUP, poll), ""]
    lines.append("| route | p50 ms | p90 ms | p99 ms | max ms | p50 vs 1 hop |")
    lines.append("|---|---|---|---|---|---|")
    base = statistics.median(r["hello_to_paid_ms"] for r in results[hops_list[0]])
    for hops in hops_list:
        v = [r["hello_to_paid_ms"] for r in results[hops]]
        lines.append("| %d hop%s | %g | %d | %d | %d | %.2fx |" % (hops, "s" if hops > 1 else "", statistics.median(v),
                                                                pct(v, 90), pct(v, 99), max(v), statistics.median(v) / base))
    lines += ["", "Breakdown by phase (median ms of each segment of the bridge's timeline; the segments add up to "
              "about the total):", ""]
    lines.append("| segment | " + " | ".join("%d hop%s" % (h, "s" if h > 1 else "") for h in hops_list) + " | what |")
    lines.append("|---|" + "---|" * len(hops_list) + "---|")
    for label, a, b, what in SEGMENTS:
        row = [statistics.median(r["timeline_ms"][b] - r["timeline_ms"][a] for r in results[h]) for h in hops_list]
        lines.append("| %s | %s | %s |" % (label, " | ".join("%g" % x for x in row), what))
    lines += ["", "Not in the cashier's time, relative to the page showing paid (negative: before it): "
              + "; ".join("%s p50 %s" % (label, ", ".join("%g ms (%s)" % (statistics.median(
                  r["timeline_ms"][b] - r["timeline_ms"][a] for r in results[h]), _hops(h)) for h in hops_list))
                          for label, a, b in AFTER) + ".",
              "", "Milestones, p50 ms since contact: " + "; ".join(
                  _hops(h) + ": " + ", ".join("%s %g" % (k, statistics.median(r["timeline_ms"][k] for r in results[h]))
                                              for k in ("receipt", "confirm", "routes", "provider_locked", "token",
                                                        "paid_on_page")) for h in hops_list) + ".",
              "", "Wall time of the whole run: %.0f s." % elapsed]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payments", type=int, default=100)
    ap.add_argument("--hops", default="1,3,6", help="route lengths, comma-separated (default 1,3,6)")
    ap.add_argument("--poll-interval", type=float, default=0.05, help="the bridge's poll_interval (default 0.05)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    hops_list = [int(h) for h in args.hops.split(",")]
    note = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.monotonic()
    results = {h: run_route(h, args.payments, args.poll_interval, note) for h in hops_list}
    text = summarize(results, args.payments, args.poll_interval, time.monotonic() - t0)
    print(text)
    if not args.no_write:
        command = "python bench/terminal.py --payments %d --hops %s" % (args.payments, args.hops)
        if args.poll_interval != 0.05:
            command += " --poll-interval %s" % args.poll_interval
        write_section("Shop terminal: tap to paid (issue 6)", command, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
