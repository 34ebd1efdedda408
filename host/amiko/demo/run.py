"""`amiko demo [--once] [--json] [--payments N] [--transports nfc,ble,serial] [--hops N]`: the network,
the bridge, a virtual wallet that pays over NFC, Bluetooth LE and USB serial.

Set-up (amiko.demo.network, amiko.demo.wallet_tap): the nodes of a route (provider, hop1,
mp, shop by default), a virtual wallet board (USB serial on a pty, an NFC card behind a
simulated PN532 whose RF side is nfcpy's udp link, a BLE radio on bumble virtual controllers)
flashed with `amiko flash`, provisioned at the provider (`amiko wallet provision`, confirms by
itself up to AUTO) and topped up, and `amiko bridge` with three readers, in this order:
nfc:udp:HOST:PORT (nfcpy), ble:Amiko-D1?hci=... (bleak over bumble), serial:/dev/pts/N; and
the bridge's cashier page. Every payment is a cashier's sale (POST /api/sale) paid over one
transport in turn (--transports; --payments N rounds): for "nfc" the card is held in the
reader's field, for "ble" the wallet comes into range (the bridge connects), for "serial"
neither (the cable stays plugged in); the bridge offers the sale to the first reader whose
wallet is present (amiko.bridge.relayport), taps the wallet with the sale's amikopay URL, the
wallet pays through its provider and the network, the page shows paid. What is printed per
payment comes from the bridge's own timeline of the sale (its clock; 0 = contact, the wallet's
Hello answering this sale's tap): contact, receipt, confirm, routing, locked, token, paid on the page
and what the wallet and its provider said on the line; or, with --json, one JSON object a line:

    {"payment": N, "transport": "nfc"|"ble"|"serial", "transport_spec": "serial:/dev/pts/N"|...,
     "state": "committed"|"cancelled",
     "reason": ..., "arrival_ms": INT (the card entering the NFC field / the wallet coming into BLE
     range, until the wallet's Hello; 0 for the plugged-in serial wallet),
     "tap_to_paid_ms": INT (arrival until the page shows paid: what the customer waits, bridge's clock),
     "hello_to_paid_ms": INT (the wallet's Hello until the page shows paid),
     "page_tap_to_paid_ms": INT (what the page shows: from the sale's "connected", which for a
     wallet left plugged in includes waiting for its previous sale's session to end),
     "wallet_state": "committed"|... (the wallet's Done), "wallet": ID, "amount": ..., "txid": ...,
     "url": ..., "timeline_ms": {...}, "hops": N, "page": URL,
     "wallet_proof": {"state", "proof_ok", "signature_ok"} (--once: read back from the wallet)}

With --once the bridge is stopped after the payments, the wallet's history is read back over
serial (`amiko wallet history`) and each record gets the proof the wallet stored; records are
printed then. Without --once they are printed as they come, then the network, the wallet and
the page keep running until Ctrl-C (SIGINT/SIGTERM): sales started on the page are paid by the
virtual wallet (on the cable: the last transport leaves the card out of the field and BLE out
of range; above AUTO: `amiko emulate press confirm --home HOME`).
Exit 0 when every payment committed (with --once: and the wallet holds its proof), 1 when
one did not, 2 on a set-up error, 130 when interrupted during set-up. Every child process (nodes,
bridge, virtual board, simulated PN532) is stopped on every way out, and dies with the demo if it is killed."""

import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request

from amiko.cli import Command, CommandError
from amiko.demo.network import PAGE_TOKENS, DemoError, DemoNetwork
from amiko.demo.wallet_tap import KINDS, VirtualWallet, WalletError

POLL = 0.02
AUTO = 5000  # the demo wallet confirms by itself up to this amount
LIMIT = 10000
DAILY = 10 ** 12
FINAL_TIMEOUT = 90
WALLET_DONE_TIMEOUT = 15
RELAY_LINGER = 1.2  # amiko.relay.core.Relay.run(linger=1.0), and a margin


def _http(url, data=None, timeout=10):
    headers = {"Content-Type": "application/json"}
    for page, token in PAGE_TOKENS.items():  # the cashier page answers only signed-in clients
        if url.startswith(page):
            headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 method="GET" if data is None else "POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        raise DemoError("bridge answered %d to %s: %s" % (e.code, url, body)) from None
    except urllib.error.URLError as e:
        raise DemoError("the bridge's page %s does not answer: %s" % (url, e.reason)) from None


def _until(page, condition, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        state = _http(page + "api/state")
        if condition(state):
            return state
        if time.monotonic() > deadline:
            raise DemoError("timed out after %s s waiting for the page to show %s (it shows %s)"
                            % (timeout, what, state["phase"]))
        time.sleep(POLL)


class Demo:
    """The demo's world: DemoNetwork + VirtualWallet plugged into the bridge. start(); close()."""

    def __init__(self, directory, hops=3, page_listen=None, note=None, bridge_extra="", topup=100000):
        self.note = note or (lambda text: None)
        self.net = DemoNetwork(directory, page_listen=page_listen, note=self.note, bridge_extra=bridge_extra, hops=hops)
        self.wallet = VirtualWallet(directory, note=self.note)
        self.topup = topup
        self.bridge_readers = None

    @property
    def page(self):
        return self.net.bridge_url

    def start(self):
        # the board is flashed while the nodes come up (powered on here: children started by a
        # thread get their PR_SET_PDEATHSIG signal when that thread ends)
        self.wallet.power_on()
        failed = []
        plug = threading.Thread(target=lambda: _catch(self.wallet.flash_firmware, failed), daemon=True)
        plug.start()
        try:
            self.net.start()
        finally:
            plug.join()
        if failed:
            raise failed[0]
        self.wallet.provision(self.net.nodes["provider"].home, auto=AUTO, limit=LIMIT, daily=DAILY, topup=self.topup)
        self.readers(list(KINDS))  # nfc, ble, serial: the reader order
        return self

    def readers(self, kinds):
        """The bridge runs with the readers of `kinds` (restarted if it has others; the page keeps its address)."""
        specs = self.wallet.transports
        wanted = [specs[k] for k in kinds]
        if wanted != self.bridge_readers:
            self.net.stop_bridge()
            self.net.start_bridge(wanted)
            self.bridge_readers = wanted

    def close(self):
        try:
            self.net.close()
        finally:
            self.wallet.stop()


def _catch(fn, failed):
    try:
        fn()
    except Exception as e:  # re-raised by the caller's thread
        failed.append(e)


# bridge timeline key -> demo timeline key (the phases and the marks on the wallet's line)
_TIMELINE = (("hello", "contact"), ("confirming", "receipt"), ("confirm", "confirm"), ("routing", "routing"),
             ("provider_routed", "provider_routed"), ("payee_route", "payee_route"), ("locked", "locked"),
             ("provider_locked", "provider_locked"), ("token", "token"), ("paid", "paid_on_page"),
             ("provider_committed", "provider_committed"), ("wallet_done", "wallet_done"), ("cancelled", "cancelled"))


def _fresh_arrival(demo, kind):
    """The wallet away, then a sale waiting on the page, then the wallet enters the NFC field /
    comes into BLE range; returns the bridge's clock (CLOCK_MONOTONIC) at that arrival. The bridge
    runs with that one reader: a wallet left on the cable would take every sale at once."""
    wallet, page = demo.wallet, demo.page
    if kind == "ble" and not wallet.ble_paired:  # pairing once (the customer confirms on the wallet), not per payment
        demo.readers(["ble"])
        wallet.bring("ble")
    wallet.bring("serial")  # NFC out of the field, BLE out of range
    demo.readers([kind])
    spec = wallet.transports[kind]
    _until(page, lambda s: s["wallet_present"] != spec, 30, "the bridge to see the wallet leave %s" % kind)
    wallet.wait_unlinked()
    return spec


def one_payment(demo, number, amount, receipt, kind=None):
    """A sale on the page, paid by the virtual wallet; returns the JSON-ready record. kind ("nfc",
    "ble", "serial"): a fresh arrival over that transport, as a customer's would be: the wallet away,
    the sale waiting, then the card enters the field / the wallet comes into range (arrival_ms: from
    there to the wallet's Hello); "serial": the cable stays plugged in (arrival_ms 0, from the
    sale's start); None: as it is (the bridge's readers unchanged, arrival unknown)."""
    page = demo.page
    t0 = None
    if kind in ("nfc", "ble"):
        _fresh_arrival(demo, kind)
    elif kind == "serial":
        demo.wallet.bring("serial")
        demo.readers(["serial"])
    _http(page + "api/sale", {"amount": amount, "receipt": receipt})
    if kind in ("nfc", "ble"):
        _until(page, lambda s: s["phase"] == "waiting", 20, "the sale waiting for a wallet")
        t0 = time.monotonic()
        demo.wallet.arrive(kind)
    state = _until(page, lambda s: s["phase"] in ("paid", "cancelled"), FINAL_TIMEOUT, "paid or cancelled")
    paid = state["phase"] == "paid"
    if paid:  # the page is paid; the wallet says Done and its provider commits its balance
        state = _until(page, _wallet_finished, WALLET_DONE_TIMEOUT, "the wallet's Done and its provider's commit")
        if kind in ("nfc", "ble"):
            # the customer holds the wallet there until the session ends (the provider's last Status
            # has reached it), else the wallet finishes that exchange at its next contact
            time.sleep(RELAY_LINGER)
    sale = state["sale"]
    bridge_times = sale["timeline_ms"]
    # contact: the wallet's Hello answering this sale's tap (the wallet stays plugged in, so the
    # bridge's "connected" may come earlier, while it still finished the previous sale)
    zero = bridge_times.get("hello", bridge_times.get("connected"))
    timeline = {}
    if zero is not None:
        for key, name in _TIMELINE:
            if key in bridge_times:
                timeline[name] = bridge_times[key] - zero
    hello_to_paid = timeline["paid_on_page"] if paid and "contact" in timeline else None
    arrival = None
    if "contact" in timeline:
        if kind == "serial":
            arrival = 0
        elif t0 is not None:
            arrival = max(0, bridge_times["hello"] - round((t0 - sale["clock_started"]) * 1000))
    return {
        "payment": number, "transport": (sale["transport"] or "none").split(":")[0],
        "transport_spec": sale["transport"] or "none (no wallet connected)",
        "state": "committed" if paid else "cancelled",
        "reason": None if paid else sale.get("reason"),
        "arrival_ms": arrival,
        "tap_to_paid_ms": None if hello_to_paid is None or arrival is None else arrival + hello_to_paid,
        "hello_to_paid_ms": hello_to_paid,
        "page_tap_to_paid_ms": sale["tap_to_paid_ms"] if paid else None,
        "wallet_state": sale.get("wallet_state"), "wallet": demo.wallet.wallet_id,
        "amount": sale["amount"], "receipt": sale["receipt"], "txid": sale["txid"], "url": sale["url"],
        "timeline_ms": timeline, "hops": demo.net.hops, "page": page,
    }


def _wallet_finished(state):
    sale = state["sale"]
    return sale.get("wallet_state") is not None and (
        "provider_committed" in sale["timeline_ms"] or sale["wallet_state"] != "committed")


def attach_proofs(records, history):
    """Each record gets the proof the wallet stored for its txid (wallet_proof)."""
    by_txid = {row.get("txid"): row for row in history}
    for rec in records:
        row = by_txid.get(rec["txid"])
        rec["wallet_proof"] = None if row is None else {
            "state": row["state"], "proof_ok": row["proof_ok"], "signature_ok": row.get("signature_ok", False)}


def succeeded(rec):
    ok = rec["state"] == "committed" and rec["wallet_state"] == "committed"
    if "wallet_proof" in rec:
        proof = rec["wallet_proof"]
        ok = ok and proof is not None and proof["state"] == "committed" and proof["proof_ok"] and proof["signature_ok"]
    return ok


_LABELS = {
    "contact": "contact     the wallet answered the bridge's tap on %s (Hello)",
    "receipt": "receipt     the signed receipt reached the wallet",
    "confirm": "confirm     the wallet confirmed (by itself: below its auto-confirm amount)",
    "routing": "routes      the shop node has the confirmation: routing to the meeting point",
    "provider_routed": "            the wallet's provider found its route (authenticated Status)",
    "payee_route": "            the shop's route to the meeting point reached the wallet",
    "locked": "lock        the lock reached the shop node",
    "provider_locked": "            the provider locked the wallet's funds (authenticated Status)",
    "token": "token       the shop's token reached the wallet",
    "paid_on_page": "committed   the cashier page shows PAID",
    "provider_committed": "            the provider committed; the wallet's balance is final",
    "wallet_done": "            the wallet stored the proof of payment (Done)",
    "cancelled": "cancelled   the cashier page shows CANCELLED",
}


_WORDS = {"nfc": "NFC", "ble": "Bluetooth LE", "serial": "USB serial"}
_ARRIVAL = {"nfc": "the card entering the field until its Hello", "ble": "coming into range until its Hello",
            "serial": "plugged in: none"}


def format_payment(rec):
    lines = ["payment %d: %s sat \"%s\" via %s: %s" % (rec["payment"], rec["amount"], rec["receipt"], rec["transport_spec"],
                                                        rec["state"] + (" (%s)" % rec["reason"] if rec["reason"] else ""))]
    for key, ms in sorted(rec["timeline_ms"].items(), key=lambda kv: (kv[1], list(_LABELS).index(kv[0]))):
        label = _LABELS[key] % _WORDS.get(rec["transport"], rec["transport"]) if key == "contact" else _LABELS[key]
        lines.append("  %6d ms  %s" % (ms, label))
    if rec["tap_to_paid_ms"] is not None:
        lines.append("  tap to paid: %d ms = arrival %d ms (%s) + %d ms from Hello (wallet %s, route of %d hops)" % (
            rec["tap_to_paid_ms"], rec["arrival_ms"], _ARRIVAL[rec["transport"]], rec["hello_to_paid_ms"], rec["wallet"],
            rec["hops"]))
    proof = rec.get("wallet_proof", "absent")
    if proof != "absent":
        lines.append("  wallet history: %s" % ("no entry for this payment" if proof is None else
                                              "%s, token matches the txid: %s, shop's signature: %s"
                                              % (proof["state"], proof["proof_ok"], proof["signature_ok"])))
    return "\n".join(lines)


def _args(p):
    p.add_argument("--once", action="store_true", help="exit after the payments instead of running until Ctrl-C")
    p.add_argument("--payments", type=int, default=1, metavar="N",
                   help="how many payments over each transport (default 1)")
    p.add_argument("--transports", default=",".join(KINDS), metavar="LIST",
                   help="the wallet pays over these in turn (default %s)" % ",".join(KINDS))
    p.add_argument("--amount", type=int, default=1500, metavar="SAT",
                   help="amount of each payment (default 1500; the wallet confirms by itself up to %d)" % AUTO)
    p.add_argument("--hops", type=int, default=3, metavar="N", help="links between the provider and the shop (default 3)")
    p.add_argument("--dir", metavar="DIR", help="where the nodes' homes and the wallet go (default: a temporary directory, removed)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address of the cashier page (default: a free loopback port)")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _emit(out, rec):
    out.stdout.write((json.dumps(rec, sort_keys=True) if out.as_json else format_payment(rec)) + "\n")
    out.stdout.flush()


def _run(args, out):
    if not 1 <= args.payments <= 10000:
        raise CommandError("--payments must be 1..10000", "usage")
    kinds = [k.strip() for k in args.transports.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        raise CommandError("--transports: a comma-separated list of %s" % ", ".join(KINDS), "usage")
    if not 1 <= args.amount <= LIMIT:
        raise CommandError("--amount must be 1..%d (the demo wallet's limit per payment)" % LIMIT, "usage")
    directory = args.dir or tempfile.mkdtemp(prefix="amiko-demo-")
    old = signal.signal(signal.SIGTERM, _interrupt)
    demo = None
    records = []
    setting_up = True
    try:
        out.note("starting the demo in %s" % directory)
        demo = Demo(directory, hops=args.hops, page_listen=args.listen, note=out.note,
                    topup=max(100000, args.amount * args.payments * len(kinds) + 10000))
        demo.start()
        setting_up = False
        for i in range(1, args.payments * len(kinds) + 1):
            kind = kinds[(i - 1) % len(kinds)]
            rec = one_payment(demo, i, args.amount, "demo coffee #%d" % i, kind)
            records.append(rec)
            if not args.once:
                _emit(out, rec)
        if args.once:
            time.sleep(RELAY_LINGER)  # the bridge's relay session ends after a quiet second on the line
            demo.net.stop_bridge()  # frees the wallet's port
            attach_proofs(records, demo.wallet.history())
            for rec in records:
                _emit(out, rec)
        else:
            out.stdout.write("cashier page: %s  (sign in with pairing code %s, or a fresh one from `amiko bridge "
                             "pair --config %s`; start a sale there: the virtual wallet on %s pays it; amounts above "
                             "%d wait for `amiko emulate press confirm --home %s`; Ctrl-C stops everything)\n"
                             % (demo.page, demo.net.pairing_code, os.path.join(demo.net.dir, "bridge.toml"),
                                demo.wallet.pty, AUTO, demo.wallet.home))
            out.stdout.flush()
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        if setting_up:
            out.error("demo: interrupted during set-up", "interrupted")
            return 130
    except (DemoError, WalletError) as e:
        raise CommandError("demo: %s (logs in %s)" % (e, directory), "demo") from None
    finally:
        # a second Ctrl-C or SIGTERM while cleaning up must not cut it short
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if demo is not None:
                demo.close()
        finally:
            signal.signal(signal.SIGTERM, old)
            signal.signal(signal.SIGINT, old_int)
            if not args.dir:
                shutil.rmtree(directory, ignore_errors=True)
    return 0 if records and all(succeeded(r) for r in records) else 1


def commands():
    return [Command("demo", "a local network, a virtual wallet on NFC, BLE and USB serial, the bridge and its page, "
                    "payments (--once --json for scripts)", _args, _run, uses_home=False)]
