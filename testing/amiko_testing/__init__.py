"""Amiko Pay's test helpers, used by tests/ and bench/ (as pyln-testing is for Core Lightning).

- `network`: real `amiko node` processes on loopback (the `net` fixture, Net, Node).
- `waits`: the one condition wait (`wait_for`).
- `micropython`: the real MicroPython unix port (run code, run tests/mp, mpy-cross).
- `boards`, `wallets`: the virtual board and a flashed, provisioned wallet on it.
- `nfc`, `bridges`, `node_methods`, `bolt8`: NFC simulation, the bridge and cashier page,
  control methods of a throw-away node, a raw BOLT 8 client for hostile tests.
- `leaks`: the check at teardown that no node kept payment state past its deadline.
"""
