"""A virtual board (amiko.emulate) flashed with the wallet firmware, for the wallet's process tests.

Every board here runs MicroPython with `-X heapsize=WALLET_HEAP`: the smallest heap in which
bench/wallet.py found a full payment passes (bench/RESULTS.md, "Wallet firmware (issue 5)"),
plus HEAP_MARGIN; tests/wallet/test_flash_provision_pay.py checks the two agree.
"""

import asyncio
import json
import os
import shutil
from pathlib import Path

from amiko_testing.network import ROOT, run_amiko

from amiko.emulate import VirtualBoard

BENCH_MIN_HEAP_KIB = 133  # bench/RESULTS.md: the flashed .mpy set, a full payment, ROM included (64-bit unix port)
HEAP_MARGIN = 1.25
WALLET_HEAP_KIB = 167  # ceil(133 * 1.25)
WALLET_HEAP = "%dk" % WALLET_HEAP_KIB


def virtual_entry():
    boards = json.loads((ROOT / "boards.json").read_text())["boards"]
    return [b for b in boards if b["port"] == "unix"][0]


def flash_firmware(flash_dir):
    """What `amiko flash --board VIRTUAL` puts on the board, without the serial port: the .mpy set of
    amiko.flash.build (main.py as source) and /config.json with no settings (storage_root: "/data")."""
    from amiko.flash import build, config_bytes, mpy_cross_version

    old_umask = os.umask(0o077)  # what a flashed board holds is private (the emulator would fix it, loudly)
    try:
        _flash_firmware(flash_dir, build, config_bytes, mpy_cross_version)
    finally:
        os.umask(old_umask)


def _flash_firmware(flash_dir, build, config_bytes, mpy_cross_version):
    flash = Path(flash_dir)
    flash.mkdir(parents=True, exist_ok=True)
    entry = virtual_entry()
    for path, src in build(entry, flash.parent / "mpy-build"):
        target = flash / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    (flash / "config.json").write_bytes(config_bytes(entry, {}, mpy_cross_version()))


def start_wallet(tmp_path, name="vb"):
    home = Path(tmp_path) / name
    board = VirtualBoard(home, heapsize=WALLET_HEAP)
    flash_firmware(board.flash)
    return board.start()


def wallet_cli(*args, timeout=60):
    return run_amiko(["wallet"] + [str(a) for a in args], timeout=timeout)


def pay_through_relay(pty, url=None, timeout=60):
    """This computer as the terminal: amiko.relay over the board's serial port for one contact."""
    from amiko.relay.core import Relay
    from amiko.transports import open_transport

    async def go():
        t = open_transport("serial:" + pty)
        try:
            return await Relay(t).run(url, timeout=timeout)
        finally:
            t.close()

    return asyncio.run(go())


def provider_and_shop(net, funding=10000):
    """The wallet's provider node "prov" and a shop node "shop" (meeting point mp-shop), linked,
    prov with funding deposited toward the shop."""
    prov = net.node("prov")
    shop = net.node("shop", meeting_points=["mp-shop"])
    net.connect(prov, shop)
    net.deposit(prov, shop, funding)
    return prov, shop


def provision(board, prov, *options, balance=3000, auto=1000):
    """`amiko wallet provision` of board's wallet at prov (with options, e.g. "--limit", "2000"),
    then a top-up of balance (none if 0); the provision command's JSON result."""
    r = wallet_cli("provision", "--port", board.pty, "--provider", prov.home, "--auto", auto, *options, "--json")
    assert r.returncode == 0, r
    if balance:
        top = wallet_cli("topup", "--provider", prov.home, "--port", board.pty, balance, "--json")
        assert top.returncode == 0 and top.json["balance"] == balance, top
    return r.json
