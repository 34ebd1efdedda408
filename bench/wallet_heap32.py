"""The wallet's heap during a payment on 32-bit MicroPython (issue 13): .mpy on the filesystem vs frozen.

    .venv/bin/python bench/wallet_heap32.py [--write]

The payment is tests/mp/wallet_heap_scenario.py (provision, Tap, payment committed, history read back,
over the serial transport, in-process): recorded once by the .venv unix port, replayed with nothing
else in the heap on
  * the 32-bit unix port built by bench/build_micropython32.sh (run it first): "plain" loads the .mpy
    set `amiko flash` deploys to an ESP32_GENERIC; "frozen" has firmware/manifest.py frozen in. The
    smallest `-X heapsize` in which the replay passes is found by bisection in 1 KiB steps (the replay is
    deterministic: one run per size, the result confirmed by one more run at the size and at size - 1 KiB);
  * the WebAssembly port from npm (node_modules/, make test installs it), the .mpy set: boot, peak live
    and peak step figures (that port grows its heap instead of collecting during a step, so it has no
    smallest heap to bisect).
Prints the figures; --write puts them in bench/RESULTS.md, section "Wallet heap on 32-bit MicroPython
(issue 13)". --before TREE: the same measurement of another checkout (e.g. a `git worktree` of the base
commit with this script, its helpers and its own build/mp32), run first, shown side by side.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from amiko_testing import heap32  # noqa: E402
from results_file import write_section  # noqa: E402

SECTION = "Wallet heap on 32-bit MicroPython (issue 13)"
KIB = 1024


def smallest_heap(binary, set_dir, script, lo_kib=8, hi_kib=512):
    """Smallest heap (KiB) in which the replay passes, and the tries [(KiB, ok)]."""
    tries = []

    def ok(kib):
        r = heap32.run_unix32(binary, kib * KIB, set_dir, script)
        tries.append((kib, r["ok"]))
        return r["ok"]

    if not ok(hi_kib):
        raise RuntimeError("the replay fails even in %d KiB" % hi_kib)
    while hi_kib - lo_kib > 1:
        mid = (lo_kib + hi_kib) // 2
        if ok(mid):
            hi_kib = mid
        else:
            lo_kib = mid
    if not ok(hi_kib) or ok(hi_kib - 1):
        raise RuntimeError("the bisection does not repeat: %r" % tries)
    return hi_kib, tries


def measure():
    work = Path(tempfile.mkdtemp(prefix="wallet-heap32-"))
    script = heap32.record(work / "record")
    mpy = heap32.mpy_set(work / "mpy", "ESP32_GENERIC")
    frozen = heap32.mpy_set(work / "frozen", frozen=True)
    rows = {}
    for kind, set_dir in (("plain", mpy), ("frozen", frozen)):
        binary = heap32.unix32_binary(kind)
        if binary is None:
            raise SystemExit("build/mp32/%s/micropython is missing: run bench/build_micropython32.sh" % kind)
        kib, tries = smallest_heap(binary, set_dir, script)
        big = heap32.run_unix32(binary, 256 * KIB, set_dir, script)
        rows[kind] = {"min_kib": kib, "tries": tries, "boot": big["boot"], "live": big["live"], "step": big["step"]}
    rows["wasm"] = heap32.run_wasm(16 * KIB, mpy, script)
    if not rows["wasm"]["ok"]:
        raise RuntimeError("the replay failed on the WebAssembly port: %r" % rows["wasm"])
    return rows


def measure_tree(tree):
    env = dict(os.environ, PYTHONPATH="%s/host:%s/testing" % (tree, tree))
    r = subprocess.run([sys.executable, str(Path(tree) / "bench" / "wallet_heap32.py")], env=env, cwd=str(tree),
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise RuntimeError("the run in %s failed: %s" % (tree, r.stderr[-2000:]))
    return json.loads(r.stdout.splitlines()[0])


def markdown(rows, before=None, before_name=None):
    p, f, w = rows["plain"], rows["frozen"], rows["wasm"]
    lines = [
        "One payment over the serial transport (tests/mp/wallet_heap_scenario.py: provision, Tap, the payment "
        "committed against the scripted payee and provider of tests/mp/wallet_world.py, the history entry read "
        "back), recorded once, then replayed in-process with only the wallet in the heap (the firmware's "
        "wallet.app.App and board.Board; the wallet must send exactly the recorded bytes). 32-bit builds: "
        "the unix port v1.28.0 built with gcc -m32 (bench/build_micropython32.sh: 4-byte words, 16-byte GC "
        "blocks as on an ESP32), and the WebAssembly port (npm @micropython/micropython-webassembly-pyscript "
        "1.27.0, package.json).",
        "",
        "| build | firmware from | smallest heap (KiB) | boot, live (bytes) | peak live (bytes) | peak step at 256 KiB (bytes) |",
        "|---|---|---:|---:|---:|---:|",
        "| unix 32-bit | frozen (firmware/manifest.py) | **%d** | %d | %d | %d |"
        % (f["min_kib"], f["boot"], f["live"], f["step"]),
        "| unix 32-bit | .mpy set of ESP32_GENERIC on the filesystem | **%d** | %d | %d | %d |"
        % (p["min_kib"], p["boot"], p["live"], p["step"]),
        "| WebAssembly | .mpy set of ESP32_GENERIC | - (heap grows) | %d | %d | %d |" % (w["boot"], w["live"], w["step"]),
    ]
    if before:
        bp, bf, bw = before["plain"], before["frozen"], before["wasm"]
        lines += [
            "| *before (%s)*: unix 32-bit | frozen | %d | %d | %d | %d |"
            % (before_name, bf["min_kib"], bf["boot"], bf["live"], bf["step"]),
            "| *before*: unix 32-bit | .mpy | %d | %d | %d | %d |" % (bp["min_kib"], bp["boot"], bp["live"], bp["step"]),
            "| *before*: WebAssembly | .mpy | - | %d | %d | %d |" % (bw["boot"], bw["live"], bw["step"]),
            "",
            "Before -> after (same run): the board layer's selection code (board/setup.py) is dropped from "
            "sys.modules once board.select() has run, and wallet.app loads the modules one at a time with a "
            "collection after each (the loading garbage of one module no longer leaves holes between the next "
            "one's objects, which had kept the 2 KiB frame buffers from finding room).",
        ]
    lines += [
        "",
        "Smallest heap: bisection in 1 KiB steps of `-X heapsize` (tries, KiB: frozen %s; .mpy %s)."
        % (", ".join("%d %s" % (k, "ok" if ok else "fails") for k, ok in f["tries"]),
           ", ".join("%d %s" % (k, "ok" if ok else "fails") for k, ok in p["tries"])),
        "live = gc.mem_alloc() after gc.collect() at a step boundary (what the firmware holds); step = "
        "gc.mem_alloc() at the end of a step before that collect (live + everything the step allocated). "
        "The WebAssembly port collects only between steps (back in JavaScript) and grows its heap instead, so "
        "its step figure is a payment with no collection inside a step.",
        "Goal (issue 13): serial or NFC payment <= 48 KiB frozen, <= 96 KiB from .mpy. NFC and BLE are not "
        "in this table: their transports need a PN532 or the `bluetooth` module, which neither build has "
        "in-process (the NFC card's code is frozen with the rest; its buffers are what it adds to the heap).",
        "Pinned by tests/wallet/test_heap32.py (margin 25%% as tests/wallet: frozen %d KiB, .mpy %d KiB "
        "checked against this table; the WebAssembly .mpy payment's peak live checked in every `make test`)."
        % (-(-f["min_kib"] * 5 // 4), -(-p["min_kib"] * 5 // 4)),
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--before", metavar="TREE")
    args = ap.parse_args()
    before = measure_tree(args.before) if args.before else None
    rows = measure()
    print(json.dumps(rows))
    name = None
    if args.before:
        name = subprocess.run(["git", "-C", args.before, "log", "-1", "--format=%h"], capture_output=True,
                              text=True).stdout.strip()
    text = markdown(rows, before, name)
    print(text)
    if args.write:
        command = ".venv/bin/python bench/wallet_heap32.py --write" + (" --before " + args.before if before else "")
        write_section(SECTION, command, text)


if __name__ == "__main__":
    main()
