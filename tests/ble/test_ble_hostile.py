"""Garbage and oversized GATT writes to the wallet over BLE (virtual board, bumble on both ends,
bleak on the terminal's side): each gets a clear error, and the frames after them still get
through (nothing already received is lost, the link stays up). A power cut drops the link; the
rebooted wallet is found and answers again."""

import asyncio
import time

import pytest
from bleak.exc import BleakError

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko.transports import bleak_bumble

from test_ble_payment import ButtonPairing, open_paired, start_ble_wallet

ERR_BAD_FRAME = 13  # firmware/wallet/core.py


class Inbox:
    def __init__(self, transport):
        self.t = transport
        self.dec = frame.FrameDecoder(4096)
        self.msgs = []
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self):
        while True:
            data = await self.t.read()
            if not data:
                return
            self.msgs += [m.from_frame(f) for f in self.dec.feed(data)]

    async def wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [x for x in self.msgs if predicate(x)]
            if found:
                return found
            await asyncio.sleep(0.02)
        raise AssertionError("no %s from the wallet within %s s; got %r" % (what, timeout, self.msgs))


def refused_tap(msg):
    return msg.type == wl.REFUSED_MSG and msg.ref_type == wl.TAP and "not provisioned" in msg.reason


def test_garbage_and_oversized_writes(tmp_path):
    board = start_ble_wallet(tmp_path)
    pairing = ButtonPairing(board)
    keys = str(tmp_path / "terminal-bonds.json")

    async def go():
        t = open_paired(board, pairing, keys=keys)
        try:
            await t.connect()
            inbox = Inbox(t)
            tap = m.to_frame(m.Message(wl.TAP, url=None))

            # garbage, then a frame cut in half (its rest lost), then a whole frame
            t.write(b"\x00\xffnot a frame\x13\x37" * 20 + tap[:len(tap) // 2] + b"\xee" * 50 + tap)
            bad = await inbox.wait(lambda x: x.type == wl.REFUSED_MSG and x.code == ERR_BAD_FRAME, 10, "bad-frame error")
            assert bad[0].reason  # says what was wrong
            await inbox.wait(refused_tap, 10, "answer to the Tap after the garbage")

            # a write without response longer than ATT MTU - 3 is refused on the terminal, with the sizes
            with pytest.raises(BleakError, match="write without response of 245 bytes is more than 244"):
                await t.client.write_gatt_char(t.rx_char, b"\xaa" * 245, response=False)

            # a flood larger than the wallet's receive ring: excess writes are refused whole,
            # the wallet keeps answering and the link stays up
            inbox.msgs.clear()
            t.write(b"\x55" * 20000)
            t.write(tap)
            await inbox.wait(refused_tap, 20, "answer to the Tap after the flood")
            assert t.client is not None
        finally:
            await t.aclose()
            await bleak_bumble.close_all()

    async def after_power_cut():
        """The board lost power: the link drops; after the reboot the wallet advertises again
        with the same GATT layout and answers over a new connection, encrypted with the bond made
        before the reboot (kept on the wallet's flash): no new pairing."""
        t = open_paired(board, pairing, keys=keys)
        try:
            await t.connect()
            inbox = Inbox(t)
            boots = board.boots()
            board.power_cycle()
            await inbox.task  # read() returned b"": the link dropped
            assert t.client is None
            deadline = time.monotonic() + 20
            while board.boots() <= boots and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            inbox = Inbox(t)  # the next read() scans and connects again
            t.write(m.to_frame(m.Message(wl.TAP, url=None)))
            await inbox.wait(refused_tap, 20, "answer to a Tap after the reboot")
            assert t.connects == 2
            assert t.client._backend.security == "bond" and len(pairing.compared) == 1  # paired once
        finally:
            await t.aclose()
            await bleak_bumble.close_all()

    try:
        asyncio.run(go())
        asyncio.run(after_power_cut())
    finally:
        board.stop()
