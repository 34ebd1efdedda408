"""Where the repository's parts are, for tests and benchmarks."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
SHARED = ROOT / "shared"
VECTORS = ROOT / "tests" / "vectors"
