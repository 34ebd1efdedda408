"""PN532 frame codec and APDU card (chaining, status words, hostile APDUs) on CPython and on
the MicroPython unix port, from source and compiled with mpy-cross: one set of checks."""

import shutil
import subprocess
from pathlib import Path

import pytest

import codec_checks
from amiko_testing.paths import ROOT

HERE = Path(__file__).resolve().parent

MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
MPY_CROSS = ROOT / ".venv" / "bin" / "mpy-cross"
CHECKS = sorted(n for n in dir(codec_checks) if n.startswith("check_"))


@pytest.mark.parametrize("name", CHECKS)
def test_cpython(name):
    getattr(codec_checks, name)()


def _run_mp(path):
    r = subprocess.run([str(MICROPYTHON), str(HERE / "codec_checks.py")], env={"MICROPYPATH": path},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().endswith("%d passed, 0 failed" % len(CHECKS)), r


def test_micropython_source():
    _run_mp("%s:%s:%s" % (ROOT / "firmware", ROOT / "shared", HERE))


def test_micropython_mpy(tmp_path):
    (tmp_path / "board").mkdir()
    shutil.copy(ROOT / "firmware" / "board" / "__init__.py", tmp_path / "board" / "__init__.py")
    for mod in ("pn532", "nfc_card"):
        subprocess.run([str(MPY_CROSS), "-o", str(tmp_path / "board" / (mod + ".mpy")),
                        str(ROOT / "firmware" / "board" / (mod + ".py"))], check=True)
    _run_mp("%s:%s:%s" % (tmp_path, ROOT / "shared", HERE))
