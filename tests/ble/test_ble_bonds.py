"""The firmware's bond store (board/ble.py BondStore) on CPython over the firmware's own power-cut-safe
storage: the stack's secrets by (sec_type, key) and by index, replaced and removed, kept across a
new store on the same root (a reboot), the oldest dropped beyond MAX_SECRETS."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from wallet.storage import Storage  # noqa: E402  (the firmware's module, on CPython)

_spec = importlib.util.spec_from_file_location("fw_board_ble_bonds", ROOT / "firmware" / "board" / "ble.py")
fw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fw)


def test_bond_store_round_trip_and_reboot(tmp_path):
    store = fw.BondStore(Storage(str(tmp_path)))
    assert store.get(2, 0, None) is None and store.get(2, 0, b"peer") is None
    assert store.set(2, memoryview(b"peer-a"), memoryview(b"keys-a")) is True
    assert store.set(2, b"peer-b", b"keys-b") and store.set(1, b"ours", b"mine")
    assert store.get(2, 0, memoryview(b"peer-a")) == b"keys-a"
    assert [store.get(2, i, None) for i in range(3)] == [b"keys-a", b"keys-b", None]
    store.set(2, b"peer-a", b"keys-a2")  # replaced, not duplicated
    store.set(1, b"ours", None)  # removed
    again = fw.BondStore(Storage(str(tmp_path)))  # the wallet rebooted
    assert again.get(2, 0, b"peer-a") == b"keys-a2" and again.get(2, 0, b"peer-b") == b"keys-b"
    assert again.get(1, 0, b"ours") is None and again.get(2, 2, None) is None


def test_bond_store_keeps_the_newest(tmp_path):
    store = fw.BondStore(Storage(str(tmp_path)))
    for i in range(fw.MAX_SECRETS + 3):
        store.set(2, b"peer-%d" % i, b"k" * 300)
    again = fw.BondStore(Storage(str(tmp_path)))
    kept = [i for i in range(fw.MAX_SECRETS + 3) if again.get(2, 0, b"peer-%d" % i) is not None]
    assert kept == list(range(3, fw.MAX_SECRETS + 3))
