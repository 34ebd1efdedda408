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

# Every control call the clients make (the CLI in its own process too, through the environment)
# is checked against schemas/control/METHOD.json: see amiko.node.schemas.
import os  # noqa: E402

os.environ["AMIKO_CHECK_SCHEMAS"] = "1"
