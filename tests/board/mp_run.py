"""Run a snippet on the real MicroPython unix port with firmware/ and shared/ on the path."""

import subprocess
from pathlib import Path

from micropython_runner import micropython_binary

ROOT = Path(__file__).resolve().parents[2]


def run_mp(code, stdin=b"", extra_path=(), timeout=30):
    path = [str(p) for p in extra_path] + [str(ROOT / "firmware"), str(ROOT / "shared")]
    env = {"MICROPYPATH": ":".join(path), "PATH": "/usr/bin:/bin"}
    return subprocess.run([micropython_binary(), "-c", code], input=stdin, capture_output=True, env=env,
                          timeout=timeout, cwd=str(ROOT))
