"""The whole path of issue 5 for real: a fresh virtual board is flashed with `amiko flash` (real CLI,
real mpremote over its pty, .mpy files), rebooted (`mpremote reset`), provisioned with a real
provider node, topped up, and pays a real payee node through amiko.relay; the proof is on the
wallet and `amiko wallet history` reads it back; once provisioned its port has no REPL. The board runs the firmware in the heap the
benchmark found plus a margin (WALLET_HEAP_KIB), and its state files stay inside HOME/flash."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from amiko_testing.network import ROOT, run_amiko
from amiko_testing.waits import wait_for
from amiko_testing.wallets import HEAP_MARGIN, WALLET_HEAP, WALLET_HEAP_KIB, pay_through_relay, provider_and_shop, provision, start_wallet, wallet_cli

from amiko.emulate import VirtualBoard

MPREMOTE = str(Path(sys.executable).parent / "mpremote")


def micropython_children(emulator_pid):
    pids = []
    for task in os.listdir("/proc/%d/task" % emulator_pid):
        with open("/proc/%d/task/%s/children" % (emulator_pid, task)) as f:
            pids += [int(p) for p in f.read().split()]
    argvs = []
    for pid in pids:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argvs.append(f.read().split(b"\0"))
        except OSError:
            pass
    return [[a.decode() for a in argv if a] for argv in argvs]


def test_flash_reboot_provision_topup_pay_history(net, tmp_path):
    prov, shop = provider_and_shop(net)

    board = VirtualBoard(tmp_path / "vb", heapsize=WALLET_HEAP).start()
    try:
        assert os.listdir(board.flash) == []  # a fresh board: nothing on its flash
        # the firmware runs in the benchmark's heap + margin: the unix port got exactly that -X option
        assert board.info["heapsize"] == WALLET_HEAP
        wait_for(lambda: any(argv[argv.index("-X") + 1:][:1] == ["heapsize=" + WALLET_HEAP]
                             for argv in micropython_children(board.proc.pid) if "-X" in argv),
                 10, "micropython -X heapsize=" + WALLET_HEAP)

        r = run_amiko(["flash", "--board", "VIRTUAL", "--port", board.pty, "--json"], timeout=120)
        assert r.returncode == 0, r
        assert r.json["board"] == "VIRTUAL" and r.json["unchanged"] == 0
        deployed = [str(p.relative_to(board.flash)) for p in Path(board.flash).rglob("*") if p.is_file()]
        assert "main.py" in deployed and "wallet/core.mpy" in deployed and "amiko_core/walletlink.mpy" in deployed
        assert [p for p in deployed if p.endswith(".py")] == ["main.py"], deployed  # the rest is .mpy
        cfg = json.loads((Path(board.flash) / "config.json").read_text())
        assert cfg["settings"] == {}  # no storage_root: the firmware's default "/data" applies
        wait_for(lambda: any("ready" in line for line in board.screen()), 15, "the wallet after flashing")

        # reboot with real mpremote (machine.reset(): a hard reset, booted like power-on)
        def boot_reasons():
            return [e["boot"] for e in board.events() if "boot" in e]

        before = len(boot_reasons())
        r = subprocess.run([MPREMOTE, "connect", board.pty, "reset"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "reset" in boot_reasons()[before:], 15, "the board to reboot")
        wait_for(lambda: board.screen() == ["Amiko wallet", "ready"] and board.events()[-1].get("display"), 15,
                 "the wallet after the reboot")

        # before provisioning the REPL is there (mpremote): the heap the firmware runs in, and /data is
        # HOME/flash/data (the flash dir is the board's "/": VfsPosix mount)
        r = subprocess.run([MPREMOTE, "connect", board.pty, "exec",
                            "import os, gc; print(sorted(os.listdir('/data'))); print(gc.mem_free() + gc.mem_alloc())"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert lines[-2] == str(sorted(os.listdir(Path(board.flash) / "data"))) == "[]"
        total = int(lines[-1])
        assert WALLET_HEAP_KIB * 1024 * 0.9 < total <= WALLET_HEAP_KIB * 1024, total
        before = len(boot_reasons())
        r = subprocess.run([MPREMOTE, "connect", board.pty, "reset"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr  # mpremote left the board in its REPL: start the wallet again
        wait_for(lambda: "reset" in boot_reasons()[before:], 15, "the board to reboot")
        wait_for(lambda: board.screen() == ["Amiko wallet", "ready"] and board.events()[-1].get("display"), 15,
                 "the wallet after the reboot")

        wallet = provision(board, prov, balance=2000)["wallet"]

        url = net.request(shop, 450, "croissant")
        out = pay_through_relay(board.pty, url)
        assert out["result"] == "committed", out
        assert out["hello"]["wallet"] == wallet

        info = wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json
        assert info["balance"] == 1550 and info["payments"][0]["state"] == "committed", info
        net.wait(lambda: shop.status()["balance"] == 450, 20, "shop paid")
        h = wallet_cli("history", "--port", board.pty, "--json")
        assert h.returncode == 0, h
        entry = h.json["history"][0]
        assert (entry["state"], entry["amount"], entry["receipt"]) == ("committed", 450, "croissant")
        assert entry["proof_ok"] is True and entry["signature_ok"] is True
        assert entry["token"] == info["payments"][0]["token"]

        # storage_root "/data" is HOME/flash/data: the flash dir is the board's "/" (VfsPosix mount)
        data = Path(board.flash) / "data"
        names = sorted(os.listdir(data))
        assert names == ["config.a", "journal.a"], names  # the key record's journal and the wallet's journal
        # provisioned: the port carries wallet frames only, mpremote gets no REPL (tests/wallet/test_locked_port.py)
        try:
            r = subprocess.run([MPREMOTE, "connect", board.pty, "exec", "print(1 + 1)"], capture_output=True,
                               text=True, timeout=15)
            assert r.returncode != 0, r.stdout
        except subprocess.TimeoutExpired:
            pass  # mpremote waits on a silent pty for ever
    finally:
        board.stop()


def test_wallet_heap_is_the_benchmark_figure_plus_margin(tmp_path):
    board = start_wallet(tmp_path)  # every virtual board of the wallet tests
    try:
        assert board.info["heapsize"] == WALLET_HEAP
        board.wait_for_screen("ready", timeout=10)  # the flashed .mpy set boots in it
    finally:
        board.stop()
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    begin, end = "<!-- Wallet firmware (issue 5):begin -->", "<!-- Wallet firmware (issue 5):end -->"
    section = text[text.index(begin):text.index(end)]
    found = re.search(r"Smallest `-X heapsize`.*?\*\*(\d+) KiB\*\*", section, re.S)
    assert found, "bench/RESULTS.md has no smallest heap figure: run bench/wallet.py"
    minimum = int(found.group(1))
    assert WALLET_HEAP_KIB >= minimum * HEAP_MARGIN, (WALLET_HEAP_KIB, minimum)
    assert WALLET_HEAP_KIB <= minimum * HEAP_MARGIN + 8, "the tests' heap is far above the benchmark's figure"
