"""What the provider's receipt check (issue 12) adds to a payment.

    .venv/bin/python bench/receipt_check.py [--n 2000] [--no-write]

A wallet's Auth{route} is checked by its provider before any funds move. In one run, on the
same Auth frames (a real payee Identity's signed Receipt, as a node sends it, inside the
wallet's Auth with its HMAC):
  without  what the provider did per route Auth before issue 12: decode the frame, look at
           the MAC (walletlink.verify);
  with     the same, then amiko.node.receipts.problem: decode the Receipt, sha256 of its
           signed bytes against receipt_hash, payment and key checks, and the ECDSA
           signature (libsecp256k1 through coincurve).
The two are interleaved (without, with, without, ...) so that load on the machine hits both
alike; medians in microseconds. For comparison, the same signature checked with the pure-Python
`ecdsa` package (amiko.node.identity.verify). The tap-to-paid figures of the sections above
(hundreds of milliseconds) put the difference in proportion.
Writes the section "Provider receipt check (issue 12)" of bench/RESULTS.md.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "host")]

from results_file import write_section  # noqa: E402

from amiko_core import frame  # noqa: E402
from amiko_core import messages as m  # noqa: E402
from amiko_core import walletlink as wl  # noqa: E402
from amiko_core.token import new_token, transaction_id  # noqa: E402

from amiko.node import identity, receipts  # noqa: E402

KEY = os.urandom(32)
FROM_HELLO_MS = 57.5  # bench/RESULTS.md, issue 7: USB serial, 1 hop, from Hello p50


def route_frame(payee, n):
    txid = transaction_id(new_token())
    r = m.Message(m.RECEIPT, id="pay-%d" % n, amount=900, receipt="2 coffees", txid=txid,
                  meeting_points=["mp-shop"], payee_key=payee.pubkey, payee="Corner cafe")
    r = m.Message(m.RECEIPT, dict(r.fields, signature=payee.sign(m.receipt_signed_bytes(r))))
    a = wl.auth(KEY, "w-bench", n + 1, wl.ROUTE, txid, 900, "mp-shop", payee.pubkey, wl.receipt_hash(r), wl.AUTO,
                receipt=m.encode(r))
    return m.to_frame(a), r


def without_check(data):
    msg = m.from_frame(frame.FrameDecoder(4096).feed(data)[0])
    assert wl.verify(KEY, msg)
    return msg


def with_check(data):
    msg = without_check(data)
    assert receipts.problem(msg) is None
    return msg


def timed(fn, arg):
    t = time.perf_counter()
    fn(arg)
    return (time.perf_counter() - t) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    payee = identity.Identity.generate()
    frames = [route_frame(payee, i) for i in range(args.n)]
    for data, _ in frames[:50]:  # warm-up
        with_check(data)
    wo, wi, ec = [], [], []
    for data, r in frames:
        wo.append(timed(without_check, data))
        wi.append(timed(with_check, data))
    for data, r in frames[: max(50, args.n // 10)]:
        signed = m.receipt_signed_bytes(r)
        ec.append(timed(lambda _: identity.verify(r.payee_key, signed, r.signature), None))
    med_wo, med_wi = statistics.median(wo), statistics.median(wi)
    size = len(frames[0][0])
    body = "\n".join([
        "Per route Auth (%d of them, interleaved; Auth frame %d bytes with the Receipt inside):" % (args.n, size),
        "",
        "| provider's check of an Auth{route} | median µs | p90 µs |",
        "|---|---:|---:|",
        "| without the receipt check (decode + MAC, as before) | %.0f | %.0f |" % (med_wo, _p90(wo)),
        "| with the receipt check (+ Receipt decode, hash, coincurve ECDSA verify) | %.0f | %.0f |" % (med_wi, _p90(wi)),
        "| **added by the receipt check** | **%.0f** | |" % (med_wi - med_wo),
        "| for comparison: the same signature with pure-Python `ecdsa` (identity.verify), %d runs | %.0f | %.0f |"
        % (len(ec), statistics.median(ec), _p90(ec)),
        "",
        "The check runs once per payment (on the route Auth; lock, commit and query Auths only",
        "compare the bound payee key and receipt hash with the stored ones): %.2f ms added to a" % ((med_wi - med_wo) / 1000),
        "payment, against tap-to-paid medians of about 1 s and %.0f ms from the wallet's Hello" % FROM_HELLO_MS,
        "(USB serial, 1 hop, section \"Tap to paid by transport (issue 7)\"): %.2f %% of the latter." % (
            (med_wi - med_wo) / 10 / FROM_HELLO_MS),
        "With the pure-Python curve the signature alone would take %.1f ms." % (statistics.median(ec) / 1000),
    ])
    print(body)
    if not args.no_write:
        write_section("Provider receipt check (issue 12)", "bench/receipt_check.py --n %d" % args.n, body)


def _p90(xs):
    return sorted(xs)[int(len(xs) * 0.9)]


if __name__ == "__main__":
    main()
