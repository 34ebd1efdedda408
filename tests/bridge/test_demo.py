"""`amiko demo`: a real network, a virtual wallet board flashed and provisioned, the bridge on
USB serial, payments through the page (as a user runs it)."""

import json
import re
import os
import signal
import subprocess
import time
import urllib.request

from amiko_testing.network import amiko_argv, amiko_env

from amiko.emulate import VirtualBoard


def processes_using(directory):
    """pids of live processes whose command line or cwd is under directory (the demo's children)."""
    directory = str(directory)
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # a zombie is dead already
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if directory in cmdline or cwd.startswith(directory):
            found.append((int(pid), cmdline))
    return found


def wait_gone(directory, timeout=15):
    deadline = time.monotonic() + timeout
    while processes_using(directory):
        if time.monotonic() > deadline:
            raise AssertionError("the demo left processes behind: %s" % processes_using(directory))
        time.sleep(0.1)


def wallet_history(home):
    """Boot the demo's wallet board again from its flash and read its history (`amiko wallet history`)."""
    board = VirtualBoard(home).start()
    try:
        board.wait_for_screen(lambda lines: lines != [], timeout=10)
        p = subprocess.run(amiko_argv() + ["wallet", "history", "--port", board.pty, "--json"], capture_output=True,
                           text=True, timeout=60, env=amiko_env())
        assert p.returncode == 0, (p.stdout, p.stderr)
        return json.loads(p.stdout)["history"]
    finally:
        board.stop()


def test_demo_once_json_pays_over_nfc_ble_and_serial(tmp_path):
    """One virtual wallet board with the three transports: the demo pays once over each, each a
    fresh arrival (the card enters the field, the wallet comes into BLE range, the cable)."""
    directory = tmp_path / "d"
    t0 = time.monotonic()
    p = subprocess.run(amiko_argv() + ["demo", "--once", "--json", "--dir", str(directory)],
                       capture_output=True, text=True, timeout=90, env=amiko_env())
    took = time.monotonic() - t0
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert took < 30, "the demo took %.1f s" % took
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["payment"] for r in records] == [1, 2, 3]
    assert [r["transport"] for r in records] == ["nfc", "ble", "serial"]
    specs = [r["transport_spec"] for r in records]
    assert specs[0].startswith("nfc:udp:127.0.0.1:")  # nfcpy's reader on the simulated PN532's RF link
    assert specs[1].startswith("ble:Amiko-D1?hci=tcp-client:127.0.0.1:")  # bleak over bumble
    assert specs[2].startswith("serial:/dev/pts/")  # the virtual board's USB serial port
    bridge_config = (directory / "bridge.toml").read_text()
    # each payment a fresh arrival: the bridge runs with that payment's one reader (the last: serial)
    assert json.dumps([specs[2]]) in bridge_config
    for r in records:
        assert r["state"] == "committed" and r["reason"] is None and r["wallet_state"] == "committed"
        assert r["wallet_proof"] == {"state": "committed", "proof_ok": True, "signature_ok": True}
        assert r["wallet"].startswith("w-") and r["hops"] == 3
        assert 0 < r["hello_to_paid_ms"] < 10000
        assert r["tap_to_paid_ms"] == r["arrival_ms"] + r["hello_to_paid_ms"]
        # every payment is a fresh arrival over the air; the cable has none
        assert (r["arrival_ms"] > 0) if r["transport"] in ("nfc", "ble") else (r["arrival_ms"] == 0)
        t = r["timeline_ms"]
        assert t["contact"] == 0 <= t["receipt"] <= t["confirm"] <= t["token"] <= t["wallet_done"]
        assert t["confirm"] <= t["routing"] and t["provider_routed"] <= t["provider_locked"] <= t["provider_committed"]
        assert t["paid_on_page"] == r["hello_to_paid_ms"]
        assert r["url"].startswith("amikopay://127.0.0.1:") and len(r["txid"]) == 40
    assert len({r["txid"] for r in records}) == 3
    assert len({r["wallet"] for r in records}) == 1
    wait_gone(directory)  # nodes, bridge, virtual board: all stopped

    # the proofs are on the wallet's flash: the board boots again and `amiko wallet history` reads them
    history = {row["txid"]: row for row in wallet_history(directory / "wallet")}
    for r in records:
        row = history[r["txid"]]
        assert row["state"] == "committed" and row["proof_ok"] and row["signature_ok"]
        assert row["amount"] == r["amount"] == 1500 and row["receipt"] == r["receipt"]


def read_until_page(proc, timeout=60):
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "demo exited early: %s" % proc.stderr.read()
        lines.append(line)
        if line.startswith("cashier page: "):
            return "".join(lines), line.split()[2]
    raise AssertionError("no cashier page line within %s s: %s" % (timeout, "".join(lines)))


def test_demo_keeps_running_with_the_page_until_interrupted(tmp_path):
    directory = tmp_path / "d"
    proc = subprocess.Popen(amiko_argv() + ["demo", "--dir", str(directory)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=amiko_env())
    try:
        text, page = read_until_page(proc)
        assert "via serial:/dev/pts/" in text and "the cashier page shows PAID" in text and "tap to paid:" in text
        assert "the wallet stored the proof of payment" in text
        assert "sign in with pairing code " in text
        token = re.search(r'cashier_token = "([^"]+)"', (directory / "bridge.toml").read_text()).group(1)
        req = urllib.request.Request(page + "api/state", headers={"Authorization": "Bearer " + token})
        state = json.loads(urllib.request.urlopen(req, timeout=5).read())
        assert state["phase"] == "paid" and state["shop_name"] == "Amiko demo shop"
        assert state["sale"]["transport"].startswith("serial:/dev/pts/") and state["sale"]["wallet_state"] == "committed"
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        wait_gone(directory)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_demo_takes_its_children_along(tmp_path):
    directory = tmp_path / "d"
    proc = subprocess.Popen(amiko_argv() + ["demo", "--dir", str(directory)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=amiko_env())
    try:
        read_until_page(proc)
        assert processes_using(directory)
        proc.kill()  # no clean-up code runs: the kernel signals the children (PR_SET_PDEATHSIG)
        proc.wait()
        wait_gone(directory)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
