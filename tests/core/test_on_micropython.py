"""Every core test module under tests/mp runs under the real MicroPython binary,
from source and from .mpy files compiled by mpy-cross."""

from pathlib import Path

import pytest

from amiko_testing.micropython import ROOT, compile_to_mpy, run_mp_tests

MP_MODULES = sorted(p.stem for p in (ROOT / "tests" / "mp").glob("test_*.py"))


def _check(result):
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and not last.startswith("0 passed"), result.stdout


@pytest.mark.parametrize("module", MP_MODULES)
def test_module_on_micropython(module):
    _check(run_mp_tests([module]))


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpy")
    compiled = compile_to_mpy(ROOT / "shared" / "amiko_core", out)
    assert compiled
    return out


@pytest.mark.parametrize("module", MP_MODULES)
def test_module_on_micropython_from_mpy(module, mpy_dir):
    # Only the compiled tree is on the path: the .py sources cannot be picked up.
    assert not list(Path(mpy_dir).rglob("*.py"))
    _check(run_mp_tests([module], path=[mpy_dir]))
