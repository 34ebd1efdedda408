"""The wallet's payment on 32-bit MicroPython builds, in-process (tests/mp/wallet_heap_scenario.py).

    record(dir)                      the scenario recorded by the .venv unix port (from source) -> script
    mpy_set(dir, board_id)           the .mpy set `amiko flash` deploys to that board (amiko.flash.build)
    run_wasm(heap, set_dir, script)  the replay in the WebAssembly port (npm, node_modules/) -> result dict
    run_unix32(binary, heap, ...)    the replay in the 32-bit unix port (bench/build_micropython32.sh)

A result is the scenario's JSON line plus "gc_total" on the WebAssembly port: that build grows its heap
(MICROPY_GC_SPLIT_HEAP_AUTO) when a collection cannot satisfy an allocation, so "the payment fits in N
bytes" there reads "the heap it started with (N) did not grow".
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

from amiko_testing.micropython import micropython_binary
from amiko_testing.paths import ROOT

SCENARIO = ROOT / "tests" / "mp" / "wallet_heap_scenario.py"
NODE_MODULES = ROOT / "node_modules"
WASM_PACKAGE = NODE_MODULES / "@micropython" / "micropython-webassembly-pyscript"
WASM_RUNNER = ROOT / "testing" / "wasm" / "run_micropython.mjs"
MP32_DIR = ROOT / "build" / "mp32"
SCRIPT_NAME = "wallet_heap_script.txt"


def record(out_dir):
    """Record the scenario (provision, Tap, payment, history) with the .venv unix port; returns the script path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    script = out_dir / SCRIPT_NAME
    env = dict(os.environ, MICROPYPATH=":".join(str(ROOT / d) for d in ("firmware", "shared", "tests/mp")))
    r = subprocess.run([micropython_binary(), str(SCENARIO), "record", str(out_dir / "record-root"), str(script)],
                       capture_output=True, text=True, env=env, timeout=120, cwd=str(out_dir))
    if r.returncode != 0:
        raise RuntimeError("recording the scenario failed: %s%s" % (r.stdout, r.stderr))
    return script


def mpy_set(out_dir, board_id="ESP32_GENERIC", frozen=False):
    """The board's flashed set (every module as .mpy, as `amiko flash` builds it) plus the scenario as .mpy,
    in out_dir; frozen=True: the scenario only (the firmware is in the binary)."""
    from amiko.flash import boards as boards_mod
    from amiko.flash import build, mpy_cross_binary

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if not frozen:
        entry = boards_mod.find(board_id)
        for board_path, local in build(entry, out_dir / ".build"):
            if board_path == "/main.py":
                continue
            target = out_dir / board_path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(local, target)
        shutil.rmtree(out_dir / ".build")
    subprocess.run([mpy_cross_binary(), "-o", str(out_dir / "wallet_heap_scenario.mpy"), "-s", SCENARIO.name,
                    str(SCENARIO)], check=True, capture_output=True)
    return out_dir


def _result(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"ok": False, "error": stdout.strip()[-500:]}


def run_wasm(heap_bytes, set_dir, script, timeout=120):
    set_dir = Path(set_dir)
    shutil.copy(script, set_dir / SCRIPT_NAME)
    r = subprocess.run(["node", str(WASM_RUNNER), str(heap_bytes), str(set_dir), "/tmp/wallet", "/lib/" + SCRIPT_NAME],
                       capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    if len(lines) < 2:
        return {"ok": False, "error": (r.stdout + r.stderr).strip()[-500:]}
    out = dict(lines[-2])
    out["gc_total"] = lines[-1]["gc_total"]
    return out


def unix32_binary(kind):
    """build/mp32/{plain,frozen}/micropython (bench/build_micropython32.sh), or None when not built."""
    path = MP32_DIR / kind / "micropython"
    return str(path) if path.exists() else None


def run_unix32(binary, heap_bytes, set_dir, script, timeout=120):
    set_dir = Path(set_dir)
    shutil.copy(script, set_dir / SCRIPT_NAME)
    work = set_dir / "run"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    # the firmware first from the frozen modules, as on a board (".frozen" then the flash), nothing of the host's
    env = {"MICROPYPATH": ".frozen:" + str(set_dir), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([binary, "-X", "heapsize=%d" % heap_bytes, "-m", "wallet_heap_scenario", "replay",
                        str(work / "wallet"), str(set_dir / SCRIPT_NAME)], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=str(work))
    return _result(r.stdout + r.stderr)
