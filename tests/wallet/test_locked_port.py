"""A provisioned wallet has no REPL on its USB serial port (issue 12), through the real virtual board,
the real firmware (flashed .mpy set), real mpremote and real provider/shop nodes.

The attack (on the code before this change): the terminal holds the wallet's port; Ctrl-C drops it
into the MicroPython REPL and `mpremote connect PORT exec "print(open('data/config.a').read())"`
prints the key the wallet shares with its provider. Now: Ctrl-C / Ctrl-A are bytes the wallet
answers with a Refused frame, mpremote gets no raw REPL, the key never crosses the port, and the
wallet still pays. Maintenance is deliberate: cancel held at power-on, then confirm, wipes the keys
(and only then mpremote works again); `amiko flash --update-mode` walks through it.
"""

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import serial
from amiko_testing.network import amiko_argv, amiko_env, run_amiko  # noqa: F401 (net is a fixture)
from amiko_testing.waits import wait_for
from amiko_testing.wallets import pay_through_relay, provider_and_shop, provision, start_wallet, wallet_cli
from wallet.storage import Storage  # the firmware's module, on CPython

MPREMOTE = str(Path(sys.executable).parent / "mpremote")
MPREMOTE_WAIT = 15  # mpremote waits forever for a raw REPL on a pty that stays silent: give up after this


def mpremote(pty, *args, timeout=MPREMOTE_WAIT):
    """(returncode or None if it had to be killed, everything it printed)."""
    p = subprocess.Popen([MPREMOTE, "connect", pty] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return None, out


def wallet_config(board):
    """The wallet's key record as the firmware stored it (read from the host, the board's owner)."""
    return Storage(str(Path(board.flash) / "data")).load("config")


def assert_no_secret(out, cfg):
    assert cfg["key"].hex().encode() not in out.lower()
    assert cfg["key"] not in out
    assert cfg["wallet"].encode() not in out  # the record was not printed in any form
    assert b"raw REPL" not in out and b">>> " not in out and b"MicroPython v" not in out


def provisioned(net, tmp_path, auto=1000, topup=3000):
    prov, shop = provider_and_shop(net)
    board = start_wallet(tmp_path)
    board.wait_for_screen("ready", timeout=15)
    provision(board, prov, balance=topup, auto=auto)
    return prov, shop, board


def read_for(port, seconds):
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data += port.read(4096)
    return data


def test_ctrl_c_and_mpremote_get_no_repl_and_no_key_and_the_wallet_still_pays(net, tmp_path):
    prov, shop, board = provisioned(net, tmp_path)
    try:
        cfg = wallet_config(board)
        # the terminal's Ctrl-C, Ctrl-A (raw REPL), Ctrl-B, Ctrl-D, Ctrl-E: no prompt, a refusal
        with serial.Serial(board.pty, timeout=0.05, exclusive=True) as port:
            port.write(b"\r\x03\x03")
            got = read_for(port, 1.0)
            port.write(b"\r\x01")
            got += read_for(port, 1.0)
            port.write(b"print(open('data/config.a').read())\r\n\x04\x02\r\n\x05")
            got += read_for(port, 1.0)
        assert b"no REPL: this wallet is provisioned" in got, got
        assert_no_secret(got, cfg)

        rc, out = mpremote(board.pty, "exec", "print(open('data/config.a').read())")
        assert rc != 0, out
        assert_no_secret(out, cfg)
        rc, out = mpremote(board.pty, "fs", "cat", ":data/config.a")
        assert rc != 0, out
        assert_no_secret(out, cfg)

        # Ctrl-C all through a power cycle (the boot window before main.py turns the interrupt off)
        stop = threading.Event()
        seen = []

        def flood():
            with serial.Serial(board.pty, timeout=0.01, exclusive=True) as port:
                while not stop.is_set():
                    port.write(b"\x03")
                    seen.append(port.read(4096))
                    time.sleep(0.002)

        t = threading.Thread(target=flood)
        t.start()
        try:
            time.sleep(0.3)
            boots = board.boots()
            board.power_cycle()
            wait_for(lambda: board.boots() > boots, 15, "the board to boot again")
            time.sleep(2.0)
        finally:
            stop.set()
            t.join()
        assert_no_secret(b"".join(seen), cfg)
        wait_for(lambda: board.screen() == ["Amiko wallet", "ready"], 15, "the wallet after the power cycle")

        url = net.request(shop, 450, "croissant")
        out = pay_through_relay(board.pty, url)
        assert out["result"] == "committed", out
        net.wait(lambda: shop.status()["balance"] == 450, 20, "shop paid")
    finally:
        board.stop()


def test_cancel_held_at_power_on_then_confirm_wipes_the_keys_and_then_mpremote_works(net, tmp_path):
    prov, shop, board = provisioned(net, tmp_path)
    try:
        data = Path(board.flash) / "data"
        # the flash files of a provisioned wallet are its owner's only (the emulator's umask 077)
        assert stat.S_IMODE(os.stat(data / "config.a").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(board.flash).st_mode) == 0o700
        assert "config.a" in os.listdir(data)

        # cancel held at power-on, then cancel again: nothing changes, the port stays locked
        board.press("cancel", at_boot=True)
        board.wait_for_screen("wipe keys?", timeout=15)
        board.press("cancel")
        board.wait_for_screen("ready", timeout=15)
        assert "config.a" in os.listdir(data)
        rc, out = mpremote(board.pty, "exec", "print(1 + 1)")
        assert rc != 0 and b"2\r\n" not in out, out

        # cancel held at power-on, then confirm: the keys are wiped and the REPL is open
        board.press("cancel", at_boot=True)
        assert board.wait_for_screen("wipe keys?", timeout=15) == ["UPDATE MODE", "wipe keys?", "OK=wipe", "cancel=keep"]
        assert [e for e in board.events() if "boot" in e][-1]["held"] == ["cancel"]
        board.press("confirm")
        board.wait_for_screen("keys wiped", timeout=15)
        assert os.listdir(data) == []  # key, state and history are gone
        rc, out = mpremote(board.pty, "exec", "import os; print(os.listdir('/data'))", timeout=30)
        assert rc == 0 and b"[]" in out, out

        # an unprovisioned wallet again (mpremote left it in the REPL: restart it), provisioned anew
        boots = board.boots()
        board.power_cycle()
        wait_for(lambda: board.boots() > boots and board.screen() == ["Amiko wallet", "ready"], 15, "the wallet")
        r = wallet_cli("provision", "--port", board.pty, "--provider", prov.home, "--auto", "1000", "--json")
        assert r.returncode == 0, r
        rc, out = mpremote(board.pty, "exec", "print(1 + 1)")
        assert rc != 0, out  # locked again
    finally:
        board.stop()


def test_amiko_flash_on_a_locked_wallet_points_to_update_mode_which_wipes_and_flashes(net, tmp_path):
    prov, shop, board = provisioned(net, tmp_path)
    try:
        r = run_amiko(["flash", "--board", "VIRTUAL", "--port", board.pty, "--json"], timeout=120)
        assert r.returncode == 2 and r.json["error"]["code"] == "locked", r
        assert "--update-mode" in r.json["error"]["message"]
        assert "config.a" in os.listdir(Path(board.flash) / "data")

        p = subprocess.Popen(amiko_argv() + ["flash", "--board", "VIRTUAL", "--port", board.pty, "--update-mode",
                                             "--wait", "60", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=amiko_env())
        try:
            line = p.stderr.readline()
            assert "amiko emulate press cancel --at-boot" in line, line
            r = run_amiko(["emulate", "press", "cancel", "--at-boot", "--home", board.home, "--json"])
            assert r.returncode == 0 and r.json == {"pressed": "cancel", "at_boot": True}, r
            board.wait_for_screen("wipe keys?", timeout=15)
            assert run_amiko(["emulate", "press", "confirm", "--home", board.home]).returncode == 0
            out, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        assert p.returncode == 0, (out, err)
        assert '"update_mode": true' in out
        assert os.listdir(Path(board.flash) / "data") == []
        board.wait_for_screen("ready", timeout=15)  # flashed and restarted, unprovisioned
        r = wallet_cli("provision", "--port", board.pty, "--provider", prov.home, "--json")
        assert r.returncode == 0, r
    finally:
        board.stop()
