"""ARCHITECTURE.md stays true: every path it names in backticks exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"`((?:host|shared|firmware|tests|bench|hardware)/[A-Za-z0-9_./-]+|boards\.json)`")


def named_paths():
    return sorted(set(PATH.findall((ROOT / "ARCHITECTURE.md").read_text())))


def test_architecture_names_paths():
    assert len(named_paths()) >= 20


def test_every_named_path_exists():
    missing = [p for p in named_paths() if not (ROOT / p.rstrip("/").rstrip("*")).exists()]
    assert not missing, "ARCHITECTURE.md names paths that do not exist: %s" % missing
