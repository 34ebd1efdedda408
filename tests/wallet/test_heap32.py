"""The wallet's payment on 32-bit MicroPython (issue 13), and the firmware's FROZEN_MANIFEST.

* The WebAssembly port (npm, node_modules/ from package-lock.json, installed by make test) replays the
  recorded serial payment (tests/mp/wallet_heap_scenario.py) with the .mpy set `amiko flash` deploys to
  an ESP32_GENERIC: a 32-bit build pays with exactly the bytes of the 64-bit one, and the firmware's
  peak live heap there leaves the payment room within the .mpy goal (96 KiB): the 32-bit unix port's
  bisection (bench/RESULTS.md) needs about 12 KiB above the peak live figure; WASM_LIVE_LIMIT keeps 16.
* bench/RESULTS.md's 32-bit unix figures (bench/wallet_heap32.py: the port built from MicroPython's
  source, which make test cannot fetch, so the frozen figure lives in the bench) meet the goals, and
  the tests' heaps derived from them keep the 25% margin of tests/wallet (amiko_testing.wallets).
* firmware/manifest.py freezes exactly the modules `amiko flash` copies to each board.
"""

import math
import os
import re
import subprocess

import pytest

from amiko_testing import heap32
from amiko_testing.paths import ROOT
from amiko_testing.wallets import HEAP_MARGIN

GOAL_FROZEN_KIB = 48  # serial or NFC payment, firmware frozen (issue 13)
GOAL_MPY_KIB = 96  # the same from .mpy files on the filesystem
HEAD_ROOM_KIB = 16  # what a payment needs above the peak live heap (bisection - live on unix 32-bit: ~12)
WASM_LIVE_LIMIT = (GOAL_MPY_KIB - HEAD_ROOM_KIB) * 1024
HEAP32_FROZEN_KIB = 45  # ceil(36 * 1.25): bench/RESULTS.md, checked below
HEAP32_MPY_KIB = 114  # ceil(91 * 1.25)


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    return heap32.record(tmp_path_factory.mktemp("heap32-record"))


def test_wasm_port_is_installed_from_the_lock_file():
    import json

    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@micropython/micropython-webassembly-pyscript"]["version"]
    installed = json.loads((heap32.WASM_PACKAGE / "package.json").read_text())["version"]
    assert installed == pinned == "1.27.0"


def test_wasm_payment_from_mpy_fits_the_goal(script, tmp_path):
    result = heap32.run_wasm(16 * 1024, heap32.mpy_set(tmp_path / "set", "ESP32_GENERIC"), script)
    assert result["ok"], result
    assert result["boot"] <= result["live"] < result["step"]
    assert result["live"] <= WASM_LIVE_LIMIT, result


def test_wasm_replay_fails_when_the_wallet_diverges(script, tmp_path):
    # the replay checks what the wallet sends: a recording the wallet does not reproduce fails it
    lines = script.read_text().splitlines()
    lines[-1] = "00" * 32
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    result = heap32.run_wasm(16 * 1024, heap32.mpy_set(tmp_path / "set", "ESP32_GENERIC"), bad)
    assert not result["ok"] and "other bytes" in result["error"], result


def _bench_figures():
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    begin = "<!-- Wallet heap on 32-bit MicroPython (issue 13):begin -->"
    end = "<!-- Wallet heap on 32-bit MicroPython (issue 13):end -->"
    assert begin in text, "bench/RESULTS.md has no 32-bit heap section: run bench/wallet_heap32.py --write"
    section = text[text.index(begin):text.index(end)]
    frozen = re.search(r"\| unix 32-bit \| frozen \(firmware/manifest.py\) \| \*\*(\d+)\*\*", section)
    mpy = re.search(r"\| unix 32-bit \| \.mpy set of ESP32_GENERIC on the filesystem \| \*\*(\d+)\*\*", section)
    assert frozen and mpy, section
    return int(frozen.group(1)), int(mpy.group(1))


def test_bench_32bit_figures_meet_the_goals_and_the_margin():
    frozen, mpy = _bench_figures()
    assert frozen <= GOAL_FROZEN_KIB, frozen
    assert mpy <= GOAL_MPY_KIB, mpy
    assert HEAP32_FROZEN_KIB == math.ceil(frozen * HEAP_MARGIN)
    assert HEAP32_MPY_KIB == math.ceil(mpy * HEAP_MARGIN)


class _Manifest:
    """The manifest API of MicroPython's tools/manifestfile.py, recording what would be frozen."""

    def __init__(self, port_dir):
        self.port_dir = port_dir
        self.frozen = set()
        self.included = []

    def globals(self):
        return {"include": self.include, "package": self.package, "module": self.module}

    def include(self, path, **kwargs):
        self.included.append(path.replace("$(PORT_DIR)", self.port_dir))

    def package(self, name, files=None, base_path="."):
        base = os.path.join(base_path, name)
        if files is None:
            files = [os.path.relpath(os.path.join(d, f), base) for d, _, fs in os.walk(base) for f in fs
                     if f.endswith(".py")]
        for f in files:
            assert os.path.exists(os.path.join(base, f)), f
            self.frozen.add(name + "/" + f)

    def module(self, name, base_path="."):
        self.frozen.add(name)


def _run_manifest(board_id, port):
    m = _Manifest("ports/" + port)
    cwd = os.getcwd()
    old = os.environ.get("AMIKO_BOARD")
    os.environ["AMIKO_BOARD"] = board_id
    try:
        os.chdir(ROOT / "firmware")  # manifestfile.py runs a manifest in its directory
        exec((ROOT / "firmware" / "manifest.py").read_text(), m.globals())
    finally:
        os.chdir(cwd)
        if old is None:
            del os.environ["AMIKO_BOARD"]
        else:
            os.environ["AMIKO_BOARD"] = old
    return m


def test_manifest_freezes_what_amiko_flash_copies_for_every_board():
    from amiko.flash import boards as boards_mod
    from amiko.flash import sources

    for entry in boards_mod.load()["boards"]:
        m = _run_manifest(entry["id"], entry["port"])
        flashed = {rel for rel, _ in sources(entry) if rel != "main.py"}
        assert m.frozen == flashed, entry["id"]
        assert "manifest.py" not in {rel for rel, _ in sources(entry)}
        # a real port's own frozen modules stay in (esp32: _boot.py mounts the filesystem)
        assert m.included == ([] if entry["port"] == "unix" else ["ports/%s/boards/manifest.py" % entry["port"]])


def test_manifest_needs_a_board():
    env = {k: v for k, v in os.environ.items() if k != "AMIKO_BOARD"}
    code = ("import os; os.chdir('firmware'); exec(open('manifest.py').read(), "
            "{'include': print, 'package': print, 'module': print})")
    r = subprocess.run(["python3", "-c", code], cwd=str(ROOT), env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "set AMIKO_BOARD" in r.stderr
