"""`amiko bridge` with a BLE wallet port (`ble:NAME?hci=...`): the bridge's own transport and
relay code, over bleak with the bumble backend, pays a sale with the virtual board's BLE wallet,
and is re-armed for the next sale on the same link. The bridge pairs with the wallet first
(numeric comparison: the bridge logs the number, the customer confirms it on the wallet)."""

import threading
import time

from amiko_testing.bridges import BridgeProcess
from amiko_testing.waits import wait_for
from test_ble_payment import BLE_NAME, start_ble_wallet
from amiko_testing.wallets import provider_and_shop, provision, wallet_cli


def api(bridge, path, body=None):
    return bridge.api(path, body, timeout=5)


def wait_phase(bridge, phase, amount, timeout):
    deadline = time.monotonic() + timeout
    s = None
    while time.monotonic() < deadline:
        s = api(bridge, "api/state")
        if s["phase"] == phase and (s.get("sale") or {}).get("amount") == amount:
            return s
        time.sleep(0.1)
    raise AssertionError("the bridge never reached %r within %s s: %r\n%s"
                         % (phase, timeout, s and {k: s[k] for k in ("phase", "sale") if k in s}, bridge.stderr_tail()))


def test_bridge_sells_over_ble(net, tmp_path):
    prov, shop = provider_and_shop(net)
    board = start_ble_wallet(tmp_path)
    bridge = None
    try:
        provision(board, prov, "--limit", "5000", "--daily", "20000")
        transport = "ble:%s?hci=%s" % (BLE_NAME, board.info["ble"]["hci"])
        bridge = BridgeProcess(tmp_path / "bridge", shop.home, 'transports = ["%s"]\nproviders = ["127.0.0.1:%d"]\n'
                               % (transport, prov.port))
        confirmed = []  # the customer presses confirm when the wallet shows the pairing number
        presser = threading.Thread(target=lambda: confirmed.append(board.confirm_ble_pairing(True, timeout=60)),
                                   daemon=True)
        presser.start()
        for amount, receipt in ((400, "croissant"), (250, "tea")):
            api(bridge, "api/sale", {"amount": amount, "receipt": receipt})
            s = wait_phase(bridge, "paid", amount, 40)
            assert s["sale"]["transport"] == transport and s["sale"]["tap_to_paid_ms"] > 0, s["sale"]
        net.wait(lambda: shop.status()["balance"] == 650, 20, "the shop node has both sales")
        presser.join(1)
        assert len(confirmed) == 1 and "%06d" % confirmed[0] in bridge.stderr_tail(), bridge.stderr_tail()
        # the wallet may still be finishing the BLE session (Commit, storage) when the shop commits
        answers = []

        def history():
            answers.append(wallet_cli("history", "--port", board.pty, "--json").json)
            return answers[-1].get("history")

        h = wait_for(history, 60, "the wallet answers GetHistory on USB")
        assert [(e["amount"], e["state"]) for e in h[:2]] == [(250, "committed"), (400, "committed")], h
    finally:
        if bridge is not None:
            bridge.stop()
        board.stop()
