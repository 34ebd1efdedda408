"""Payments over Bluetooth LE, end to end with real protocol stacks and no radio:

    virtual board (the wallet firmware on MicroPython; firmware/board/ble.py on the simulated
    `bluetooth` module) -> bumble virtual controller --LocalLink-- bumble controller <- HCI over
    TCP <- bumble host stack in this process <- bleak (BleakScanner/BleakClient with the
    amiko.transports.bleak_bumble backend) <- amiko.transports.ble <- the relay -> real provider
    and payee nodes.

A payment is committed; a BLE link dropped right after the wallet authorised the lock ends the
contact, and the payment finishes at the next BLE contact (reconnect). Every link is paired
first (LE Secure Connections, numeric comparison confirmed by the wallet's button: ButtonPairing)
or re-encrypted with its bond."""

import asyncio
import json
from pathlib import Path

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko.emulate import VirtualBoard
from amiko.relay.core import Relay
from amiko.transports import bleak_bumble, open_transport

from amiko_testing.wallets import WALLET_HEAP_KIB, flash_firmware, provider_and_shop, provision, wallet_cli

BLE_NAME = "Amiko-T1"  # fits whole in the advertising data
BLE_HEAP_KIB = 32
# the wallet tests' heap (benchmark + margin, amiko_testing.wallets) plus what the BLE
# transport holds (4.5 KB receive ring, the IRQ path, the bond store and its storage record
# writes): at WALLET_HEAP alone the wallet's 4 KB
# storage reads fail with MemoryError after a BLE payment (heap fragmentation)
HEAP = "%dk" % (WALLET_HEAP_KIB + BLE_HEAP_KIB)


class ButtonPairing:
    """The terminal's pairing handler in the tests: the customer confirms (or refuses) the number
    on the wallet; the terminal accepts when the wallet showed the same number."""

    def __init__(self, board, accept=True):
        self.board = board
        self.accept = accept
        self.compared = []

    async def compare(self, number):
        shown = await asyncio.to_thread(self.board.confirm_ble_pairing, self.accept)
        self.compared.append((number, shown))
        return shown == number

    async def passkey(self):
        return None


def ble_spec(board, pair=True, keys=None):
    return "ble:%s?hci=%s&timeout=15&pair=%d%s" % (BLE_NAME, board.info["ble"]["hci"], 1 if pair else 0,
                                                    "&keys=%s" % keys if keys else "")


def open_paired(board, pairing=None, pair=True, keys=None):
    t = open_transport(ble_spec(board, pair, keys))
    t.pairing = pairing or ButtonPairing(board)
    return t


def start_ble_wallet(tmp_path, settings=None, buttons=True):
    board = VirtualBoard(Path(tmp_path) / "vb", heapsize=HEAP, ble=True)
    flash_firmware(board.flash)
    cfg_path = Path(board.flash) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["board"]["transports"]["ble"] = {"module": "bluetooth"}  # as the ESP32 entries have it
    cfg["settings"]["ble_name"] = BLE_NAME
    cfg["settings"].update(settings or {})
    if not buttons:
        cfg["board"]["ui"].pop("buttons", None)
    cfg_path.write_text(json.dumps(cfg))
    return board.start()


class DropAfterLock:
    """Passes the wallet's Auth{lock} on, then drops the BLE link (the customer walks away)."""

    def __init__(self, transport):
        self.t = transport
        self.dec = frame.FrameDecoder(4096)
        self.dropped = False

    async def read(self):
        if self.dropped and self.t.client is not None:
            await self.t.client.disconnect()  # the relay has passed the Auth on by now
        data = await self.t.read()
        for fr in self.dec.feed(data):
            if fr.type == wl.AUTH and m.from_frame(fr).action == wl.LOCK:
                self.dropped = True
        return data

    def write(self, data):
        self.t.write(data)

    def close(self):
        self.t.close()


def ble_relay(board, url=None, drop_after_lock=False, keys=None, pairing=None, timeout=60):
    async def go():
        t = open_paired(board, pairing, keys=keys)
        try:
            await t.connect()
            assert t.client.mtu_size == 247  # the firmware asks for 247; bumble's server honours it
            encrypted = t.client._backend.connection.is_encrypted
            security = t.client._backend.security
            session = DropAfterLock(t) if drop_after_lock else t
            out = await Relay(session).run(url, timeout=timeout)
            out["ble"] = {"bytes_out": t.bytes_out, "bytes_in": t.bytes_in, "connects": t.connects,
                          "encrypted": encrypted, "security": security}
            return out
        finally:
            await t.aclose()
            await bleak_bumble.close_all()

    return asyncio.run(go())


def test_ble_payment_and_disconnect_mid_payment(net, tmp_path):
    prov, shop = provider_and_shop(net)
    board = start_ble_wallet(tmp_path)
    try:
        wallet = provision(board, prov, "--limit", "2000", "--daily", "5000")["wallet"]

        # a payment over BLE, on a link paired first (numeric comparison, confirmed on the wallet)
        keys = str(Path(tmp_path) / "terminal-bonds.json")
        url = net.request(shop, 300, "espresso")
        pairing = ButtonPairing(board)
        out = ble_relay(board, url, keys=keys, pairing=pairing)
        assert out["result"] == "committed", out
        assert out["ble"]["encrypted"] is True and out["ble"]["security"] == "paired", out
        assert len(pairing.compared) == 1 and pairing.compared[0][0] == pairing.compared[0][1], pairing.compared
        assert out["hello"]["wallet"] == wallet
        assert out["dropped"] == 0 and out["ble"]["bytes_out"] > 0 and out["ble"]["bytes_in"] > 0, out
        net.wait(lambda: shop.status()["balance"] == 300, 20, "shop paid")

        # the BLE link drops right after the wallet authorised the lock: no outcome in this contact
        url = net.request(shop, 200, "dropped")
        out = ble_relay(board, url, drop_after_lock=True, keys=keys, pairing=pairing)
        assert out["result"] == "unknown", out
        assert out["ble"]["security"] == "bond" and len(pairing.compared) == 1, out  # no new pairing
        net.wait(lambda: shop.status()["balance"] == 500, 30, "the network commits without the wallet")
        # the next BLE contact (a new scan and connection) finishes the payment on the wallet
        for _ in range(3):
            out = ble_relay(board, keys=keys, pairing=pairing)
            h = wallet_cli("history", "--port", board.pty, "--json").json["history"]
            if h[0]["amount"] == 200 and h[0]["state"] == "committed":
                break
        assert out["hello"]["wallet"] == wallet
        assert h[0]["state"] == "committed" and h[0]["proof_ok"] and h[0]["receipt"] == "dropped", h[0]
        assert len(h) > 1 and h[1]["state"] == "committed" and h[1]["receipt"] == "espresso", h
        info = wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json
        assert info["balance"] == 2500 and info["available"] == 2500, info
    finally:
        board.stop()
