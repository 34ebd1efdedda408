import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "node"))
sys.path.insert(0, str(HERE.parent / "wallet"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "firmware"))  # board.pn532 / board.nfc_card for the CPython checks
