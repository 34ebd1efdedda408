"""Tap to paid by transport (issue 7): NFC, BLE and USB serial, routes of 1, 3 and 6 hops.

    .venv/bin/python bench/taps.py [--taps 100] [--taps-long 30] [--hops 1,3,6] [--kinds nfc,ble,serial] [--no-write]

Per route length, the demo's world (amiko.demo: real `amiko node` processes provider, hop1..,
mp, shop; a virtual wallet board flashed with `amiko flash`, provisioned and topped up, with USB
serial (pty), an NFC card behind a simulated PN532 (nfcpy udp RF link) and a BLE radio (bumble
virtual controller)); then per transport `amiko bridge` with that one reader (nfc:udp:..,
ble:NAME?hci=.., serial:/dev/pts/N; bridge poll_interval 0.05 s, its default) and WARMUP taps
not counted, then --taps counted ones on 1 hop and --taps-long on longer routes. One tap:

  the wallet away (NFC: out of the field; BLE: out of range) and the bridge has seen it leave ->
  a cashier's sale on the page (waiting for a wallet) -> the wallet enters the field / comes
  into range (t0, this process's monotonic clock = the bridge's) -> ... -> the page shows paid
  -> the wallet's Done and its provider's commit -> the wallet is taken away again.

USB serial has no arrival: the wallet stays plugged in, and t0 is the sale's start (the bridge
taps the plugged wallet at once). Tap to paid = t0 until the bridge's page state is paid (the
bridge's timeline, same clock). Breakdown by phase from the bridge's timeline; bytes over the
air per payment from the wallet's side of the radio (NFC: C-APDU + R-APDU bytes the simulated
PN532 carried, and APDUs = reader round trips; BLE: GATT write + notification values the radio
carried), from entering until the wallet is taken away right after its Done.
Writes the section "Tap to paid by transport (issue 7)" of bench/RESULTS.md. Exit 1 on a failed tap.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "host")]

from results_file import write_section  # noqa: E402  (this script's own directory)
from terminal import pct  # noqa: E402

from amiko.demo.run import Demo, _http, _until, _wallet_finished  # noqa: E402

WARMUP = 3
DEBUG = False
AMOUNT = 100
KINDS = ("nfc", "ble", "serial")
NAMES = {"nfc": "NFC", "ble": "BLE", "serial": "USB serial"}

# (label, from, to, what): the bridge's timeline marks; "arrive" = t0 (entered / connected / sale start)
SEGMENTS = (
    ("arrive -> hello", "arrive", "hello", "NFC: sense, activate, SELECT, Tap, Hello; BLE: scan, connect, "
     "GATT discovery, subscribe, Tap, Hello; serial: Tap, Hello"),
    ("hello -> receipt", "hello", "confirming", "wallet's Pay to the shop node, signed Receipt back"),
    ("receipt -> confirm", "confirming", "confirm", "wallet checks receipt and limits, stores state, confirms"),
    ("confirm -> routes", "confirm", "routes", "both sides routed to the meeting point (the later of the two)"),
    ("routes -> lock", "routes", "provider_locked", "funds locked along the payer side"),
    ("lock -> token", "provider_locked", "token", "shop node commits, Commit{token} reaches the wallet"),
    ("token -> page paid", "token", "paid", "the node pushes the committed row to the bridge (watch)"),
)


def _hops(h):
    return "%d hop%s" % (h, "s" if h > 1 else "")


def away(wallet, kind):
    if kind == "nfc":
        wallet.board.nfc_leave()
    elif kind == "ble":
        wallet.board.ble_away(True)


def arrive(wallet, kind):
    if kind == "nfc":
        wallet.board.nfc_enter()
    elif kind == "ble":
        wallet.board.ble_away(False)


def radio_stats(wallet, kind):
    if kind == "nfc":
        s = wallet.board.nfc_stats()
        return {"apdus": s["apdus"], "bytes_in": s.get("bytes_in", 0), "bytes_out": s.get("bytes_out", 0)}
    if kind == "ble":
        s = wallet.board.ble_stats()
        return {"bytes_in": s["rx_bytes"], "bytes_out": s["tx_bytes"]}
    return {}


def one_tap(demo, kind, spec, n):
    page = demo.page
    _until(page, lambda s: s["phase"] != "waiting" and s["wallet_present"] != spec or kind == "serial", 30,
           "the wallet gone")
    before = radio_stats(demo.wallet, kind)
    _http(page + "api/sale", {"amount": AMOUNT, "receipt": "tap %d" % n})
    if kind != "serial":
        _until(page, lambda s: s["phase"] == "waiting", 20, "the sale waiting for a wallet")
        time.sleep(0.05)
        t0 = time.monotonic()
        arrive(demo.wallet, kind)
    state = _until(page, lambda s: s["phase"] in ("paid", "cancelled"), 90, "paid or cancelled")
    if state["phase"] != "paid":
        raise SystemExit("tap %d over %s failed: %s" % (n, kind, state["sale"].get("reason")))
    state = _until(page, _wallet_finished, 15, "the wallet's Done")
    sale = state["sale"]
    if sale["wallet_state"] != "committed":
        raise SystemExit("tap %d over %s: the wallet says %s" % (n, kind, sale["wallet_state"]))
    away(demo.wallet, kind)
    if kind != "serial":
        _until(page, lambda s: s["wallet_present"] != spec, 30, "the bridge to see the wallet leave")
        if kind == "ble":
            deadline = time.monotonic() + 10
            while demo.wallet.board.ble_links() and time.monotonic() < deadline:
                time.sleep(0.01)
    after = radio_stats(demo.wallet, kind)
    phases = {}
    if kind == "ble":  # the wallet's radio: when each arrival phase happened (CLOCK_MONOTONIC, as t0)
        arrival = demo.wallet.board.ble_stats().get("arrival") or {}
        phases = {k: round((v - t0) * 1000, 1) for k, v in arrival.items() if isinstance(v, float)}
        phases.update({k: arrival[k] for k in ("adverts", "att_requests") if k in arrival})
    t = dict(sale["timeline_ms"])
    t["arrive"] = 0 if kind == "serial" else round((t0 - sale["clock_started"]) * 1000)
    t["routes"] = max(t["provider_routed"], t["payee_route"])
    rec = {"tap_to_paid_ms": t["paid"] - t["arrive"], "t": t, "ble_arrival": phases}
    if DEBUG:
        print(kind, sorted(t.items(), key=lambda kv: kv[1]), file=sys.stderr)
    rec.update({k: after[k] - before[k] for k in after})
    return rec


def run_route(hops, taps, kinds, note):
    directory = tempfile.mkdtemp(prefix="amiko-bench-taps-")
    demo = Demo(directory, hops=hops, note=lambda text: None, bridge_extra="poll_interval = 0.05\n",
                topup=AMOUNT * (taps + WARMUP) * len(kinds) + 10000)
    out = {}
    t0 = time.monotonic()
    try:
        demo.start()
        specs = demo.wallet.transports
        note("%s: set up in %.1f s" % (_hops(hops), time.monotonic() - t0))
        for kind in kinds:
            demo.net.stop_bridge()
            demo.wallet.bring("serial")  # NFC out of the field, BLE out of range
            demo.net.start_bridge([specs[kind]])
            if kind == "ble" and not demo.wallet.ble_paired:  # the bond, once (the customer confirms on the wallet)
                demo.wallet.bring("ble")
                demo.wallet.bring("serial")
            recs = []
            t1 = time.monotonic()
            for i in range(WARMUP + taps):
                rec = one_tap(demo, kind, specs[kind], i + 1)
                if i >= WARMUP:
                    recs.append(rec)
            out[kind] = recs
            note("  %s %s: %d taps in %.0f s, p50 %g ms" % (_hops(hops), kind, taps, time.monotonic() - t1,
                                                             statistics.median(r["tap_to_paid_ms"] for r in recs)))
    finally:
        demo.close()
        shutil.rmtree(directory, ignore_errors=True)
    return out


def summarize(results, taps_by_hops, elapsed):
    hops_list = sorted(results)
    kinds = [k for k in KINDS if k in results[hops_list[0]]]
    lines = ["Tap to paid as the customer sees it: from the wallet entering the reader's field (NFC) or coming "
             "into range (BLE; the terminal scans, connects, discovers and subscribes) until the bridge's page "
             "state is paid; USB serial: from the sale's start with the wallet plugged in. Bridge's clock "
             "(CLOCK_MONOTONIC, shared with this script). Taps counted per configuration: %s, after %d warm-up. "
             "One virtual wallet board (MicroPython unix port, firmware flashed with `amiko flash`) with the "
             "three transports: NFC = firmware PN532 driver + simulated PN532 (UART frames) + nfcpy's udp RF "
             "link + nfcpy reader in `amiko bridge`; BLE = firmware on a simulated `bluetooth` module + bumble "
             "virtual controllers on a LocalLink + bleak with the bumble backend in the bridge; serial = pty. "
             "`amiko bridge` runs with the one reader under test (poll_interval 0.05 s); real `amiko node` "
             "processes; auto-confirm. 2-core machine shared with other work: read medians and ratios."
             % (", ".join("%d on %s" % (taps_by_hops[h], _hops(h)) for h in hops_list), WARMUP), ""]
    lines.append("| transport | route | taps | p50 ms | p90 ms | p99 ms | max ms | from Hello: p50 ms | p99 ms |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for h in hops_list:
            v = [r["tap_to_paid_ms"] for r in results[h][kind]]
            w = [r["t"]["paid"] - r["t"]["hello"] for r in results[h][kind]]
            lines.append("| %s | %s | %d | %g | %d | %d | %d | %g | %d |" % (
                NAMES[kind], _hops(h), len(v), statistics.median(v), pct(v, 90), pct(v, 99), max(v),
                statistics.median(w), pct(w, 99)))
    lines += ["", "From Hello: from the wallet's Hello answering the bridge's Tap until the page shows paid (what "
              "bench/terminal.py measures), i.e. without the arrival. USB serial's arrival phase is the previous "
              "sale's relay session lingering (amiko.relay.core: 1 s of quiet after the wallet's Done) because this "
              "script starts the next sale right after the Done; read its \"from Hello\" columns. NFC's and BLE's "
              "arrival phase is measured from the card entering / the wallet coming into range (see the section "
              "\"Tap arrival, NFC before/after (issue 13)\" for where it goes)."]
    lines += ["", "Breakdown by phase (median ms of each segment of the bridge's timeline):", ""]
    cols = [(k, h) for k in kinds for h in hops_list]
    lines.append("| segment | " + " | ".join("%s %s" % (NAMES[k], _hops(h)) for k, h in cols) + " | what |")
    lines.append("|---|" + "---|" * len(cols) + "---|")
    for label, a, b, what in SEGMENTS:
        row = [statistics.median(r["t"][b] - r["t"][a] for r in results[h][k]) for k, h in cols]
        lines.append("| %s | %s | %s |" % (label, " | ".join("%g" % x for x in row), what))
    lines += ["", "Over the air per payment (median; from entering until the wallet is taken away right after "
              "its Done, so the terminal's idle polls in between count too):", ""]
    lines.append("| transport | route | terminal -> wallet bytes | wallet -> terminal bytes | NFC round trips (APDUs) |")
    lines.append("|---|---|---|---|---|")
    for kind in kinds:
        if kind == "serial":
            continue
        for h in hops_list:
            rs = results[h][kind]
            lines.append("| %s | %s | %g | %g | %s |" % (
                NAMES[kind], _hops(h), statistics.median(r["bytes_in"] for r in rs),
                statistics.median(r["bytes_out"] for r in rs),
                "%g (min %d, max %d)" % (statistics.median(r["apdus"] for r in rs), min(r["apdus"] for r in rs),
                                         max(r["apdus"] for r in rs)) if kind == "nfc" else "-"))
    lines += ["", "NFC bytes are APDU bytes (C-APDU from the reader incl. SELECT, EXCHANGE headers and empty polls; "
              "R-APDU incl. status words), without ISO-DEP block headers; BLE bytes are GATT values (write "
              "without response to RX, notifications on TX), without ATT/L2CAP headers. USB serial carries the "
              "same frames without an APDU/GATT layer.", "", "Wall time of the whole run: %.0f s." % elapsed]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=100, help="counted taps per transport on 1 hop (default 100)")
    ap.add_argument("--taps-long", type=int, default=None, help="counted taps on longer routes (default: --taps)")
    ap.add_argument("--hops", default="1,3,6")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--debug", action="store_true", help="print each tap's timeline")
    ap.add_argument("--save", metavar="FILE", help="also keep the raw results (JSON)")
    ap.add_argument("--merge", metavar="FILES", help="summarize saved results (comma-separated) instead of running")
    ap.add_argument("--merge-note", help="how the merged runs were made (for the section's command line)")
    args = ap.parse_args(argv)
    global DEBUG
    DEBUG = args.debug
    hops_list = [int(h) for h in args.hops.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    taps_long = args.taps if args.taps_long is None else args.taps_long
    note = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.monotonic()
    if args.merge:  # results of runs made separately (--save), e.g. route lengths run side by side
        results, taps_by_hops, elapsed = {}, {}, 0.0
        for path in args.merge.split(","):
            saved = json.loads(Path(path).read_text())
            results.update({int(h): v for h, v in saved["results"].items()})
            taps_by_hops.update({int(h): v for h, v in saved["taps"].items()})
            elapsed = max(elapsed, saved["elapsed"])
        hops_list = sorted(results)
        args.taps, taps_long = taps_by_hops.get(1, args.taps), max(taps_by_hops.values())
        args.hops = ",".join(str(h) for h in hops_list)
    else:
        taps_by_hops = {h: args.taps if h == 1 else taps_long for h in hops_list}
        results = {h: run_route(h, taps_by_hops[h], kinds, note) for h in hops_list}
        elapsed = time.monotonic() - t0
    if args.save:
        Path(args.save).write_text(json.dumps({"results": results, "taps": taps_by_hops, "elapsed": elapsed}))
    text = summarize(results, taps_by_hops, elapsed)
    print(text)
    if not args.no_write:
        command = "python bench/taps.py --taps %d --taps-long %d --hops %s" % (args.taps, taps_long, args.hops)
        if args.merge:
            command = ("python bench/taps.py --merge %s (runs saved with --save: %s)"
                       % (args.merge, args.merge_note or "separately"))
        write_section("Tap to paid by transport (issue 7)", command, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
