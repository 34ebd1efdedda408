"""BLE pairing and bonding, for real: the virtual board's firmware (board/ble.py) on the simulated
radio (bumble's SMP on the wallet's side, its bonds in the wallet's flash through _IRQ_GET_SECRET /
_IRQ_SET_SECRET), bleak over bumble on the terminal's side.

  - a central that connects without pairing and writes frames gets nothing and is dropped;
  - a central that tries "just works" pairing (no MITM protection) is refused, no bond;
  - numeric comparison refused on the wallet (cancel): no bond, no frames; confirmed: bonded, the
    wallet answers; the next connection re-encrypts with the bond, also after a wallet reboot;
  - a wallet without buttons shows a passkey: a wrong one leaves no bond, the right one pairs.
(The payment over a paired link: test_ble_payment.py.)"""

import asyncio
import os
import time
from pathlib import Path

import pytest
from bleak.exc import BleakError

from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko.transports import bleak_bumble

from test_ble_hostile import Inbox, refused_tap
from test_ble_payment import ButtonPairing, open_paired, start_ble_wallet

TAP = m.to_frame(m.Message(wl.TAP, url=None))


def bond_files(board):
    return sorted(p.name for p in (Path(board.flash) / "data").glob("ble_bonds*"))


def wallet_log(board):
    return [ev["log"] for ev in board.events() if "log" in ev]


async def wait_dropped(inbox, timeout):
    await asyncio.wait_for(asyncio.shield(inbox.task), timeout)


def test_unbonded_central_gets_nothing_and_is_dropped(tmp_path):
    board = start_ble_wallet(tmp_path, settings={"ble_pair_timeout_ms": 4000})

    async def go():
        t = open_paired(board, pair=False)
        try:
            await t.connect()
            inbox = Inbox(t)
            started = time.monotonic()
            t.write(TAP)  # write without response: the wallet's stack drops it
            with pytest.raises(BleakError):  # a write request is refused by the wallet's stack
                await t.client.write_gatt_char(t.rx_char, TAP[:40], response=True)
            await wait_dropped(inbox, 15)  # the wallet dropped the link
            assert inbox.msgs == [], inbox.msgs  # no answer to anything
            assert time.monotonic() - started < 12
        finally:
            await t.aclose()
            await bleak_bumble.close_all()

    try:
        asyncio.run(go())
        assert any("not paired within 4000 ms" in line for line in wallet_log(board)), wallet_log(board)
        assert bond_files(board) == []
    finally:
        board.stop()


def test_just_works_pairing_is_refused(tmp_path):
    board = start_ble_wallet(tmp_path)

    async def go():
        from bumble.pairing import PairingConfig, PairingDelegate

        t = open_paired(board, pair=False)
        try:
            await t.connect()
            inbox = Inbox(t)
            conn = t.client._backend.connection
            conn.device.pairing_config_factory = lambda _c: PairingConfig(
                sc=True, mitm=False, bonding=True,
                delegate=PairingDelegate(io_capability=PairingDelegate.NO_OUTPUT_NO_INPUT))
            with pytest.raises(Exception):
                await conn.pair()
            t.write(TAP)
            await wait_dropped(inbox, 15)  # pairing failed: the wallet drops the link
            assert inbox.msgs == []
        finally:
            await t.aclose()
            await bleak_bumble.close_all()

    try:
        asyncio.run(go())
        assert bond_files(board) == []
        assert any("pairing failed" in line for line in wallet_log(board)), wallet_log(board)
    finally:
        board.stop()


async def tap_paired(board, pairing, keys):
    """Pair (or use the bond) with pairing, send a Tap, wait for the wallet's answer: the link's
    security then ("paired": new pairing, "bond": the stored bond)."""
    t = open_paired(board, pairing, keys=keys)
    try:
        await t.connect()
        inbox = Inbox(t)
        t.write(TAP)
        await inbox.wait(refused_tap, 15, "answer to a Tap on the paired link")
        return t.client._backend.security
    finally:
        await t.aclose()
        await bleak_bumble.close_all()


def test_numeric_comparison_refused_then_confirmed_bond_survives_reboot(tmp_path):
    board = start_ble_wallet(tmp_path)
    keys = str(tmp_path / "terminal-bonds.json")

    def attempt(pairing):
        return asyncio.run(tap_paired(board, pairing, keys))

    try:
        # the customer presses cancel: no pairing, no bond on either side
        refused = ButtonPairing(board, accept=False)
        with pytest.raises(OSError, match="pairing"):
            attempt(refused)
        assert len(refused.compared) == 1
        assert bond_files(board) == []
        assert not os.path.exists(keys) or "ltk" not in open(keys).read()

        # confirmed: bonded; the wallet answers
        pairing = ButtonPairing(board)
        assert attempt(pairing) == "paired"
        n, shown = pairing.compared[0]
        assert n == shown  # both ends showed the same 6 digits
        assert bond_files(board)
        for name in bond_files(board):  # the bond's keys are the owner's only, like the wallet's key
            mode = os.stat(Path(board.flash) / "data" / name).st_mode & 0o777
            assert mode == 0o600, "%s is %o" % (name, mode)

        # reconnect: the bond, no new pairing
        assert attempt(pairing) == "bond"
        # the wallet reboots: its bond is on its flash
        boots = board.boots()
        board.power_cycle()
        deadline = time.monotonic() + 20
        while board.boots() <= boots and time.monotonic() < deadline:
            time.sleep(0.05)
        assert attempt(pairing) == "bond"
        assert len(pairing.compared) == 1
    finally:
        board.stop()


class PasskeyFromScreen:
    """The terminal's operator types the passkey the wallet shows (or a wrong one)."""

    def __init__(self, board, wrong=False):
        self.board = board
        self.wrong = wrong

    async def compare(self, number):
        return False

    async def passkey(self):
        lines = await asyncio.to_thread(
            self.board.wait_for_screen, lambda ls: len(ls) > 2 and ls[1] == "passkey" and ls[2].isdigit(), 20)
        n = int(lines[2])
        return (n + 1) % 1000000 if self.wrong else n


def test_passkey_display_wrong_passkey_leaves_no_bond(tmp_path):
    board = start_ble_wallet(tmp_path, buttons=False)  # a display but no buttons: passkey shown
    keys = str(tmp_path / "terminal-bonds.json")

    def attempt(pairing):
        return asyncio.run(tap_paired(board, pairing, keys))

    try:
        with pytest.raises(OSError, match="pairing"):
            attempt(PasskeyFromScreen(board, wrong=True))
        assert bond_files(board) == []
        assert attempt(PasskeyFromScreen(board)) == "paired"
        assert bond_files(board)
    finally:
        board.stop()
