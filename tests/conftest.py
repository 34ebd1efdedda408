from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The test helpers (the `net` fixture, waits, teardown checks): testing/amiko_testing.
pytest_plugins = ["amiko_testing.plugin", "amiko_testing.network"]


@pytest.fixture(scope="session")
def root():
    return ROOT

# tests/mp/ holds MicroPython test modules run by tests/core/test_on_micropython.py
# under the real micropython binary; pytest must not collect them itself.
collect_ignore = ["mp"]

# Every control call is checked against schemas/control/METHOD.json by the node itself: the
# test nodes run with `--developer --dev-check-schemas` (amiko_testing.network.CHECKED_ARGS).
