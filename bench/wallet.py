"""Wallet benchmark (issue 5): heap, time per payment, flash bytes. Writes its section of bench/RESULTS.md.

    .venv/bin/python bench/wallet.py [--no-write] [--payments N]
    .venv/bin/python bench/wallet.py --flash-writes BEFORE_TREE [--no-write] [--payments N]

1. Flash bytes: what `amiko flash` deploys for each board of boards.json (amiko.flash.build: .mpy
   files + source main.py; config.json and the manifest come on top).
2. A virtual board is flashed with the real CLI (`amiko flash --board VIRTUAL --port PTY`, real
   mpremote); its flash directory is "the flashed .mpy set" used below.
3. Peak heap during a payment: that set with bench/wallet_heap_main.py as /main.py (a test-only
   wrapper around the same App loop that samples gc.mem_alloc), provisioned with a real provider
   node (`amiko wallet provision`), topped up, paying a real payee node through amiko.relay.
4. Smallest -X heapsize: bisection (1 KiB steps) over fresh virtual boards with the unchanged
   flashed set and main.py: pass = provision + top-up + payment committed + proof in history.
5. Time per payment: bench/wallet_micropython.py (same .mpy set, in-process scripted world),
   split into crypto / CBOR+messages / storage / other; projected to a 240 MHz ESP32 with the
   pystone ratio (pystone 1.2 run here under the same unix port, against a published ESP32 figure).

--cpu BEFORE_TREE: only the wallet's CPU per payment (issue 13), before/after side by side in one
run: both trees' firmware and core compiled to .mpy as `amiko flash` compiles them for the virtual
board (mpy-cross -march=host), timed by this tree's bench/wallet_micropython.py in alternating
rounds, this tree also with its RIPEMD-160 forced to the pure compression (interpreted only);
plus host instructions per payment counted by callgrind (bench/wallet_instructions.py) where
valgrind is installed. Writes its own section.

--flash-writes BEFORE_TREE: only the flash writes per payment, this tree's firmware and
BEFORE_TREE's (e.g. /work/wt/before) side by side in one run, both counted by this tree's
bench/wallet_micropython.py (its counting filesystem layer under wallet.storage), from source.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from amiko_testing.network import Net, run_amiko  # noqa: E402
from amiko_testing.wallets import pay_through_relay  # noqa: E402

from amiko.emulate import VirtualBoard  # noqa: E402
from amiko.flash import boards as boards_mod  # noqa: E402
from amiko.flash import build  # noqa: E402

BIN = Path(sys.executable).parent
MARGIN = 1.25
RUNS = 2
# Published: MicroPython v1.12 (2019-12-20) on an ESP32 at 240 MHz, pystone_lowmem (pystone 1.2):
# "This machine benchmarks at 1661 pystones/second" (github.com/micropython/micropython/issues/5673).
ESP32_PYSTONES = 1661
ESP32_SOURCE = "https://github.com/micropython/micropython/issues/5673"


def flash_bytes():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in boards_mod.load()["boards"]:
            files = build(entry, Path(tmp) / entry["id"])
            mpy = sum(src.stat().st_size for p, src in files if p.endswith(".mpy"))
            main = sum(src.stat().st_size for p, src in files if not p.endswith(".mpy"))
            rows.append((entry["id"], len(files), mpy, main))
    return rows


def wallet_cli(*args):
    return run_amiko(["wallet"] + [str(a) for a in args], timeout=60)


def copy_flash(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("data"))


def pay_once(net, prov, shop, board, amount=300):
    """provision, top up, pay; returns (ok, detail)."""
    r = wallet_cli("provision", "--port", board.pty, "--provider", prov.home, "--auto", "1000", "--json")
    if r.returncode != 0:
        return False, "provision: %s" % (r.stderr.strip()[-200:],)
    r = wallet_cli("topup", "--provider", prov.home, "--port", board.pty, "1000", "--json")
    if r.returncode != 0:
        return False, "topup: %s" % (r.stderr.strip()[-200:],)
    url = net.request(shop, amount, "bench")
    out = pay_through_relay(board.pty, url, timeout=30)
    if out.get("result") != "committed":
        return False, "payment: %s" % (out.get("result"),)
    h = wallet_cli("history", "--port", board.pty, "--json")
    if h.returncode != 0 or not h.json["history"] or not h.json["history"][0]["proof_ok"]:
        return False, "history: %s" % (h.stderr.strip()[-200:],)
    return True, "committed"


def trial(net, prov, shop, ref_flash, home, heap_kib):
    board = VirtualBoard(home, heapsize="%dk" % heap_kib)
    copy_flash(ref_flash, board.flash)
    board.start()
    try:
        try:
            board.wait_for_screen("ready", timeout=5)
        except Exception:
            return False, "did not boot"
        return pay_once(net, prov, shop, board)
    finally:
        board.stop()


def micropython_times(ref_flash, payments):
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MICROPYPATH="%s:%s" % (ref_flash, ROOT / "tests" / "mp"))
        r = subprocess.run([str(BIN / "micropython"), str(ROOT / "bench" / "wallet_micropython.py"),
                            tmp + "/root", str(payments)], capture_output=True, text=True, env=env, timeout=300)
    if r.returncode:
        raise SystemExit("bench/wallet_micropython.py failed: %s %s" % (r.stdout[-2000:], r.stderr[-2000:]))
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


FS_FIELDS = (("files written (flash writes)", "fs_files_written"),
             ("files removed", "fs_removes"), ("files renamed", "fs_renames"), ("bytes written", "fs_bytes"))
MUTATIONS = (("filesystem mutations (written + removed + renamed)", "fs_mutations"),)


def flash_writes(before, payments):
    out = {}
    for label, tree in (("before", Path(before)), ("after", ROOT)):
        path = "%s:%s" % (tree / "shared", tree / "firmware")
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, MICROPYPATH="%s:%s" % (path, ROOT / "tests" / "mp"))
            r = subprocess.run([str(BIN / "micropython"), str(ROOT / "bench" / "wallet_micropython.py"),
                                tmp + "/root", str(payments)], capture_output=True, text=True, env=env, timeout=600)
        if r.returncode:
            raise SystemExit("%s: bench/wallet_micropython.py failed: %s" % (tree, r.stderr[-2000:]))
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")][1:]
        for row in rows:
            row["fs_mutations"] = row["fs_files_written"] + row["fs_removes"] + row["fs_renames"]
        out[label] = {k: [row[k] for row in rows] for _, k in FS_FIELDS + MUTATIONS}

    def cell(xs):
        return "%d / %.1f / %d" % (median(xs), sum(xs) / len(xs), max(xs))

    lines = ["Per payment over %d payments (the first left out): median / mean / max. The wallet's storage through a "
             "counting filesystem layer (bench/wallet_micropython.py), the scripted payee and provider of "
             "tests/mp/wallet_world.py, one process on the MicroPython unix port. Before = %s, after = this tree. "
             "On LittleFS each file written, removed or renamed is at least one metadata commit on flash; the "
             "journal writes into a preallocated file (positioned write, no new file, no remove, no rename). A payment "
             "whose record does not fit the journal file compacts it (before: one more write, the live records; "
             "after: the live records with the payment's own, as its one write: about 11 KiB); the max is the "
             "payment of the first compaction, which also creates the second journal file (filled once, 64 KiB)."
             % (payments - 1, before), "",
             "| per payment | before | after |", "|---|---:|---:|"]
    for name, k in FS_FIELDS + MUTATIONS:
        lines.append("| %s | %s | %s |" % (name, cell(out["before"][k]), cell(out["after"][k])))
    return "\n".join(lines)


def compile_tree(tree, out):
    """tree's shared/amiko_core and firmware/wallet as .mpy under out, flags as amiko.flash.build for
    the virtual board (its arch is "host")."""
    for src, prefix in ((Path(tree) / "shared" / "amiko_core", "amiko_core"), (Path(tree) / "firmware" / "wallet", "wallet")):
        for py in sorted(src.rglob("*.py")):
            rel = "%s/%s" % (prefix, py.relative_to(src).as_posix())
            target = Path(out) / (rel[:-3] + ".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([str(BIN / "mpy-cross"), "-march=host", "-s", rel, "-o", str(target), str(py)], check=True,
                           capture_output=True)


def callgrind_instructions(mpy_dir, args):
    """Host instructions executed inside filter_iternext (bench/wallet_instructions.py), or None."""
    if not shutil.which("valgrind"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = dict(os.environ, MICROPYPATH="%s:%s" % (mpy_dir, ROOT / "tests" / "mp"))
        r = subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=filter_iternext",
                            "--callgrind-out-file=%s" % out, sys.executable, str(BIN / "micropython"),
                            str(ROOT / "bench" / "wallet_instructions.py")] + [str(a) for a in args],
                           capture_output=True, text=True, env=env, timeout=600)
        if r.returncode or not out.exists():
            raise SystemExit("callgrind run failed: %s" % r.stderr[-2000:])
        for line in out.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return None


def ripemd160_us(mpy_dir, which, count=200):
    code = ("import time\nfrom amiko_core import hashing\nf = hashing.ripemd160_%s\nd = bytes(range(32))\n"
            "best = 10 ** 9\nfor _ in range(7):\n    t0 = time.ticks_us()\n    for _ in range(%d):\n        f(d)\n"
            "    best = min(best, time.ticks_diff(time.ticks_us(), t0))\nprint(best / %d)\n" % (which, count, count))
    r = subprocess.run([str(BIN / "micropython"), "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=str(mpy_dir)), timeout=120)
    return float(r.stdout.strip().splitlines()[-1])


CPU_KEYS = ("total_us", "crypto_us", "cbor_us", "storage_us")


def cpu(before, payments, rounds):
    pystones, pystone_path = pystones_here()
    ratio = pystones / ESP32_PYSTONES if pystones else None
    configs = (("before", Path(before), False), ("after", ROOT, False), ("after, interpreted only", ROOT, True))
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for label, tree, _ in configs:
            if str(tree) not in dirs:
                dirs[str(tree)] = Path(tmp) / ("mpy%d" % len(dirs))
                compile_tree(tree, dirs[str(tree)])
        rows = {label: [] for label, _, _ in configs}
        for rnd in range(rounds):
            for c, (label, tree, pure) in enumerate(configs):
                env = dict(os.environ, MICROPYPATH="%s:%s" % (dirs[str(tree)], ROOT / "tests" / "mp"))
                root = Path(tmp) / ("root-%d-%d" % (rnd, c))
                r = subprocess.run([str(BIN / "micropython"), str(ROOT / "bench" / "wallet_micropython.py"), str(root),
                                    str(payments)] + (["pure"] if pure else []),
                                   capture_output=True, text=True, env=env, timeout=300)
                if r.returncode:
                    raise SystemExit("%s: bench/wallet_micropython.py failed: %s" % (label, r.stderr[-2000:]))
                got = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
                rows[label].extend(got[1:])  # the first payment of a process warms up
        instr = {}
        for label, tree, pure in configs:
            n = callgrind_instructions(dirs[str(tree)], ["wallet", Path(tmp) / ("cg-" + label.replace(" ", "_").replace(",", "")),
                                                         4, 1] + (["pure"] if pure else []))
            instr[label] = None if n is None else n // 3
        after_dir = dirs[str(ROOT)]
        per_pystone = None
        if pystone_path:
            n = callgrind_instructions(after_dir, ["pystone", pystone_path, PYSTONE_LOOPS])
            per_pystone = n / PYSTONE_LOOPS if n else None
        rmd = {w: ripemd160_us(after_dir, w) for w in ("pure", "viper")}
        rmd_instr = {w: callgrind_instructions(after_dir, ["ripemd160", w, 20]) for w in ("pure", "viper")}
    return render_cpu(before, payments, rounds, rows, instr, rmd, rmd_instr, pystones, pystone_path, ratio, per_pystone)


PYSTONE_LOOPS = 2000


def render_cpu(before, payments, rounds, rows, instr, rmd, rmd_instr, pystones, pystone_path, ratio, per_pystone):
    rev = subprocess.run(["git", "-C", str(before), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if rev.returncode == 0:
        before = "%s (commit %s)" % (before, rev.stdout.strip())
    labels = list(rows)
    med = {}
    for label in labels:
        med[label] = {k: median([r[k] for r in rows[label]]) for k in CPU_KEYS}
        m = med[label]
        m["other_us"] = m["total_us"] - m["crypto_us"] - m["cbor_us"] - m["storage_us"]
        m["cpu_us"] = m["crypto_us"] + m["cbor_us"] + m["other_us"]
        m["cbor_calls"] = median([r["cbor_calls"] for r in rows[label]])
        m["crypto_calls"] = median([r["crypto_calls"] for r in rows[label]])
        m["ripemd160"] = rows[label][-1].get("ripemd160", "pure")
    out = ["Wallet CPU per payment: bench/wallet_micropython.py, the wallet (firmware and core as .mpy, compiled as "
           "`amiko flash` compiles them for the virtual board: mpy-cross -march=host) paying the scripted payee and "
           "provider of tests/mp/wallet_world.py in one unix-port process; only the wallet's App.step() is timed, "
           "split by exclusive time of wrapped functions. Before = %s, after = this tree, and this tree with its "
           "RIPEMD-160 forced to the pure-Python compression (what a port without the viper emitter runs). "
           "%d rounds alternating the three, %d payments a process, the first left out: median of %d payments each. "
           "The machine is shared: read the ratios; the instruction counts below do not depend on the load."
           % (before, rounds, payments, len(rows[labels[0]])), ""]
    out.append("| per payment | " + " | ".join(labels) + " |")
    out.append("|---|" + "---:|" * len(labels))

    def line(name, key, fmt="%d"):
        out.append("| %s | %s |" % (name, " | ".join(fmt % med[label][key] for label in labels)))

    out.append("| RIPEMD-160 | %s |" % " | ".join(med[label]["ripemd160"] for label in labels))
    line("crypto (µs)", "crypto_us")
    line("CBOR + messages + frames (µs)", "cbor_us")
    line("CBOR/message/frame calls (nested included)", "cbor_calls")
    line("other: wallet logic, payer machine, frame loop (µs)", "other_us")
    line("**CPU = crypto + CBOR + other (µs)**", "cpu_us")
    line("storage, file I/O of the host (µs, does not project)", "storage_us")
    if all(instr.values()):
        out.append("| host instructions per App.step() work, callgrind (millions, storage I/O included) | %s |"
                   % " | ".join("%.2f" % (instr[label] / 1e6) for label in labels))
    if per_pystone and all(instr.values()):
        out.append("| **projected ESP32 240 MHz (ms) by instructions: per payment / %d a pystone / %d pystones/s** | %s |"
                   % (per_pystone, ESP32_PYSTONES,
                      " | ".join("**%.0f**" % (instr[label] / per_pystone / ESP32_PYSTONES * 1000.0) for label in labels)))
    if ratio:
        out.append("| projected ESP32 240 MHz CPU (ms) by time, pystone ratio %.0fx |%s |"
                   % (ratio, " | ".join(" %.0f" % (med[label]["cpu_us"] * ratio / 1000.0) for label in labels)))
    out.append("")
    if ratio:
        out.append("Projection (an estimate, not a measurement): pystone 1.2 (%s) runs at %d pystones/s under this "
                   "unix port, measured in this run; MicroPython on an ESP32 at 240 MHz: %d pystones/s (v1.12, %s), "
                   "so interpreted code is taken to run %.0fx slower there (assumptions as in the wallet firmware "
                   "section: code mix like pystone, same build options, code in flash cache)."
                   % (pystone_path, pystones, ESP32_PYSTONES, ESP32_SOURCE, ratio))
        out[-1] += (" The time-based figure mixes two moments of a loaded machine (pystone's, the wallet's); the "
                    "instruction-based one does not: callgrind counts the host instructions of the wallet's steps "
                    "(bench/wallet_instructions.py, %d payments after one warm-up) and of %d pystones under the "
                    "same port, and a payment is projected as that many pystones at the ESP32's rate. It is the "
                    "figure to compare with the 60 ms goal; it counts the host file I/O of the storage as CPU work."
                    % (3, PYSTONE_LOOPS))
    speed = rmd["pure"] / rmd["viper"] if rmd["viper"] else None
    text = ("Native code: the only viper code is the RIPEMD-160 compression (amiko_core.ripemd160_viper; hash160 of "
            "the token, once or twice a payment). On this unix port one RIPEMD-160 of 32 bytes takes %.1f µs pure and "
            "%.1f µs viper (best of 7 x 200), %.1fx faster" % (rmd["pure"], rmd["viper"], speed))
    if rmd_instr["pure"] and rmd_instr["viper"]:
        text += ("; callgrind: %d and %d host instructions a hash (%.1fx)"
                 % (rmd_instr["pure"] // 20, rmd_instr["viper"] // 20, rmd_instr["pure"] / rmd_instr["viper"]))
    text += (". Method for the ESP32: assume the same viper/bytecode speed-up on Xtensa as measured here, i.e. the "
             "viper code's time scales by the same pystone ratio as the rest, which is how the after column is "
             "projected. The interpreted-only column is the figure without that assumption (every line bytecode). "
             "Cross-check by instruction count: the viper hash executes ~%d host instructions; at one Xtensa "
             "instruction per cycle and even twice as many instructions as on x86-64 that is ~%.1f ms at 240 MHz, "
             "against %.1f ms by the pystone ratio. On a 32-bit port the pure compression is worse than its "
             "projection: 32-bit words above 2**30 are not small ints there, so nearly every step of it allocates "
             "a long int; the viper code keeps them in registers."
             % ((rmd_instr["viper"] or 0) // 20, 2 * (rmd_instr["viper"] or 0) / 20 / 240e3,
                rmd["viper"] * (ratio or 0) / 1000.0))
    out.append(text)
    return "\n".join(out)


def pystones_here():
    """pystone 1.2 (CPython's Lib/test/pystone.py, any local copy) under the unix port: pystones/s."""
    found = sorted(glob.glob("/root/.pyenv/versions/*/lib/python3*/test/pystone.py") +
                   glob.glob("/usr/lib/python3*/test/pystone.py"))
    if not found:
        return None, None
    runner = ("import sys\nsrc = open(sys.argv[1]).read().replace(\"if __name__ == '__main__':\", 'if False:')\n"
              "g = {'__name__': 'pystone'}\nexec(src, g)\nbest = 0\nfor _ in range(5):\n"
              "    best = max(best, g['pystones'](20000)[1])\nprint(int(best))\n")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(runner)
    try:
        r = subprocess.run([str(BIN / "micropython"), f.name, found[0]], capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(f.name)
    return int(r.stdout.strip().splitlines()[-1]), found[0]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--payments", type=int, default=21)
    ap.add_argument("--flash-writes", metavar="BEFORE_TREE")
    ap.add_argument("--cpu", metavar="BEFORE_TREE")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.cpu:
        body = cpu(args.cpu, args.payments, args.rounds)
        print(body)
        if not args.no_write:
            from results_file import write_section

            write_section("Wallet CPU per payment (issue 13)", "python bench/wallet.py --cpu %s --payments %d --rounds %d"
                          % (args.cpu, args.payments, args.rounds), body)
        return
    if args.flash_writes:
        body = flash_writes(args.flash_writes, args.payments)
        print(body)
        if not args.no_write:
            from results_file import write_section

            write_section("Wallet flash writes per payment (issue 13)",
                          "python bench/wallet.py --flash-writes %s --payments %d" % (args.flash_writes, args.payments),
                          body)
        return

    sizes = flash_bytes()
    pystones, pystone_path = pystones_here()

    tmp = Path(tempfile.mkdtemp(prefix="amiko-bench-wallet-"))
    net = Net(tmp, checked=False)
    try:
        ref = VirtualBoard(tmp / "ref").start()
        try:
            r = subprocess.run([str(BIN / "amiko"), "flash", "--board", "VIRTUAL", "--port", ref.pty, "--json"],
                               capture_output=True, text=True, timeout=120)
            if r.returncode:
                raise SystemExit("amiko flash failed: %s" % r.stderr)
            flashed = json.loads(r.stdout.strip().splitlines()[-1])
        finally:
            ref.stop()
        ref_flash = Path(ref.flash)
        for p in ("data", ".amiko_manifest.json"):
            target = ref_flash / p
            if target.is_dir():
                shutil.rmtree(target)
        rows = micropython_times(ref_flash, args.payments)

        prov = net.node("prov")
        shop = net.node("shop", meeting_points=["mp-shop"])
        net.connect(prov, shop)
        net.deposit(prov, shop, 100000)

        # peak heap, sampled by the wrapper main
        probe = VirtualBoard(tmp / "probe")
        copy_flash(ref_flash, probe.flash)
        shutil.copy(ROOT / "bench" / "wallet_heap_main.py", Path(probe.flash) / "main.py")
        probe.start()
        try:
            probe.wait_for_screen("ready", timeout=10)
            ok, detail = pay_once(net, prov, shop, probe)
            assert ok, detail
            heap = [e["heap"] for e in probe.events() if "heap" in e][-1]
        finally:
            probe.stop()

        # bisection: smallest heap (KiB) in which the unchanged flashed set pays. The outcome near the
        # limit depends on how the serial bytes arrive in chunks (when the GC runs), so a size passes
        # only if RUNS fresh boards in a row pay; the result is then confirmed by RUNS more (else +1 KiB).
        count = [0]

        def passes(kib, runs=RUNS):
            for _ in range(runs):
                count[0] += 1
                ok, detail = trial(net, prov, shop, ref_flash, tmp / ("t%d" % count[0]), kib)
                if not ok:
                    break
            attempts.append((kib, ok, detail))
            print("heap %d KiB: %s" % (kib, detail), file=sys.stderr)
            return ok

        attempts = []
        lo, hi = 8, 256
        assert passes(hi), "no payment even at %d KiB" % hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if passes(mid):
                hi = mid
            else:
                lo = mid
        while not passes(hi):
            hi += 1
    finally:
        net.close()
        shutil.rmtree(tmp, ignore_errors=True)

    min_kib = hi
    test_kib = int(min_kib * MARGIN + 0.999)
    body = render(sizes, flashed, heap, min_kib, test_kib, attempts, rows, pystones, pystone_path)
    print(body)
    if not args.no_write:
        from results_file import write_section

        write_section("Wallet firmware (issue 5)", "python bench/wallet.py", body)


def render(sizes, flashed, heap, min_kib, test_kib, attempts, rows, pystones, pystone_path):
    out = []
    out.append("### Flash bytes of the deployed set\n")
    out.append("What `amiko flash --board ID` copies (amiko.flash.build: firmware/ and shared/amiko_core/ as "
               ".mpy from mpy-cross, main.py as source; board modules the board does not use are left out). "
               "/config.json and /.amiko_manifest.json come on top.\n")
    out.append("| board | files | .mpy bytes | main.py bytes | total |")
    out.append("|---|---:|---:|---:|---:|")
    for board_id, n, mpy, main in sizes:
        out.append("| %s | %d | %d | %d | %d |" % (board_id, n, mpy, main, mpy + main))
    out.append("\nThe virtual board flashed by `amiko flash` over its pty (real mpremote): %d files, %d bytes "
               "(MicroPython %s)." % (len(flashed["copied"]), flashed["bytes_total"], flashed["micropython"]))
    out.append("\n### Heap during a payment (virtual board, unix port, 64-bit)\n")
    out.append("One payment (provision with a real provider node, top-up, Tap, payment relayed by amiko.relay to "
               "the provider and a real payee node, committed, history read back), firmware = the flashed .mpy set; "
               "bench/wallet_heap_main.py replaces main.py only to sample `gc.mem_alloc()` after every step that "
               "received bytes. The emulator ROM holds `_vboard.rom_alloc` = %d bytes (subtracted below)." % heap["rom"])
    out.append("")
    out.append("| figure | bytes |")
    out.append("|---|---:|")
    out.append("| after boot (modules imported, App built), live | %d |" % (heap["boot"] - heap["rom"]))
    out.append("| peak live during the payment (after gc.collect) | %d |" % (heap["live"] - heap["rom"]))
    out.append("| peak of one step without collecting (live + that step's garbage) | %d |" % (heap["step"] - heap["rom"]))
    out.append("")
    out.append("Sampled at step boundaries (%d steps); the bisection below is the figure that counts." % heap["steps"])
    out.append("\nSmallest `-X heapsize` in which that full payment passes with the unchanged flashed set and "
               "main.py (bisection in 1 KiB steps; a size counts as passing when %d fresh boards in a row pay, "
               "and the result passed %d more): "
               "**%d KiB** (ROM included; the firmware's own share is about %d KiB)." % (
                   RUNS, RUNS, min_kib, min_kib - heap["rom"] // 1024))
    out.append("Tried, in order: " + ", ".join("%d KiB %s" % (k, "ok" if ok else "fails (%s)" % d)
                                               for k, ok, d in attempts) + ". Near the limit the outcome varies "
               "from run to run (allocation order follows how the serial bytes arrive); the tests' margin covers it.")
    out.append("The wallet tests (tests/wallet) run the virtual board at %d KiB = %d KiB + 25%% "
               "(amiko_testing.wallets WALLET_HEAP_KIB, asserted by "
               "tests/wallet/test_flash_provision_pay.py)." % (test_kib, min_kib))
    out.append("These are 64-bit figures (8-byte words and object headers); a 32-bit board (ESP32, RP2040) needs "
               "less for the same objects. Not measured on a 32-bit build here: check `gc.mem_free()` on the board.")
    rows = rows[1:]  # the first payment warms up (first file creation)
    keys = ("total_us", "crypto_us", "cbor_us", "storage_us")
    med = {k: median([r[k] for r in rows]) for k in keys}
    other = med["total_us"] - med["crypto_us"] - med["cbor_us"] - med["storage_us"]
    writes = rows[-1]["file_writes"]
    out.append("\n### MicroPython time per payment in the wallet\n")
    out.append("bench/wallet_micropython.py: the flashed .mpy set pays %d times (median shown) in one unix-port "
               "process against the scripted payee and provider of tests/mp/wallet_world.py; only the time "
               "inside the wallet's App.step() is counted, split by exclusive time of wrapped functions." % len(rows))
    out.append("")
    ratio = pystones / ESP32_PYSTONES if pystones else None
    out.append("| part | unix port (µs) | calls (nested included) | projected ESP32 240 MHz (ms) |")
    out.append("|---|---:|---:|---:|")

    def proj(us):
        return "%.1f" % (us * ratio / 1000.0) if ratio else "n/a"

    last = rows[-1]
    out.append("| crypto (HMAC-SHA256 of every Auth/Status, hash160 of the token, storage checksums) | %d | %d | %s |"
               % (med["crypto_us"], last["crypto_calls"], proj(med["crypto_us"])))
    out.append("| CBOR + messages + frames | %d | %d | %s |" % (med["cbor_us"], last["cbor_calls"], proj(med["cbor_us"])))
    out.append("| storage (file I/O incl. os.sync; %d writes a payment) | %d | %d | see below |"
               % (writes, med["storage_us"], last["storage_calls"]))
    out.append("| other (wallet logic, payer state machine, frame loop) | %d | | %s |" % (other, proj(other)))
    out.append("| **total** | %d | | |" % med["total_us"])
    if ratio:
        cpu = med["crypto_us"] + med["cbor_us"] + other
        out.append("\nProjection (an estimate, not a measurement): pystone 1.2 (%s) runs at %d pystones/s under "
                   "this unix port (best of 5, measured right before the wallet timings, same machine load); the published figure for MicroPython on an ESP32 at 240 MHz is %d pystones/s "
                   "(v1.12, %s), so interpreted code is taken to run %.0fx slower there. That assumes the wallet's "
                   "code mix scales like pystone (interpreter-bound: the pure-Python RIPEMD-160 and CBOR do; "
                   "SHA-256 is C on both, so crypto is over-estimated), the same MicroPython build options, and "
                   "code in flash cache as in that measurement (the same issue shows a build at 499 pystones/s: "
                   "a slow build would triple it). CPU work per payment on the ESP32: about %.0f ms. "
                   "RIPEMD-160 ran as %s code here; `bench/wallet.py --cpu BEFORE_TREE` gives the interpreted-only "
                   "figure, the method for the viper code and a load-independent projection by instruction counts."
                   % (pystone_path, pystones, ESP32_PYSTONES, ESP32_SOURCE, ratio, cpu * ratio / 1000.0,
                      last.get("ripemd160", "pure")))
        fw = last.get("fs_files_written", writes)
        out.append("Storage on the ESP32 is bound by the SPI flash, not the CPU: a payment writes %d files "
                   "(%d removed, %d renamed, %d bytes; see the section on flash writes per payment), each "
                   "at least page programs and a LittleFS metadata commit, up to a 4 KiB sector erase "
                   "(typically ~45 ms on common SPI NOR, datasheet figure); assume 50-150 ms a file written, so "
                   "%d-%d ms a payment. The unix-port storage figure is dominated by os.sync() of the host and "
                   "does not project." % (fw, last.get("fs_removes", 0), last.get("fs_renames", 0),
                                          last.get("fs_bytes", 0), fw * 50, fw * 150))
    else:
        out.append("\nNo pystone.py found on this machine: no ESP32 projection.")
    return "\n".join(out)


if __name__ == "__main__":
    main()
