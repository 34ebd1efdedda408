"""boards.json: the supported boards (MicroPython's board vocabulary + this project's keys).

The format is specified by boards.schema.json next to it; tests/test_boards.py validates it.
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BOARDS_JSON = ROOT / "boards.json"
SCHEMA_JSON = ROOT / "boards.schema.json"
FIRMWARE_DIR = ROOT / "firmware"
CORE_DIR = ROOT / "shared" / "amiko_core"


class BoardsError(Exception):
    pass


def load(path=None):
    path = Path(path) if path else BOARDS_JSON
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise BoardsError("board list %s not found" % path) from None
    except ValueError as e:
        raise BoardsError("board list %s is not valid JSON: %s" % (path, e)) from None
    return data


def find(board_id, path=None):
    boards = load(path)["boards"]
    for entry in boards:
        if entry["id"] == board_id:
            return entry
    raise BoardsError("no board %r in %s: use one of %s"
                      % (board_id, path or BOARDS_JSON, ", ".join(b["id"] for b in boards)))


def parse_version(text):
    """"1.22.0" -> (1, 22, 0)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise BoardsError("bad MicroPython version %r (expected MAJOR.MINOR[.PATCH])" % text)
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))
