"""Coming into BLE range costs no scan interval and no discovery, through the real stack (the firmware
on MicroPython behind the simulated radio, bumble virtual controllers on a LocalLink, bleak with the
bumble backend): after a first contact (scan, pairing), a wallet that walks away and comes back is
connected on its first advertisement, with the payment's connection parameters, and the terminal
makes three ATT requests before its Tap (MTU exchange, Database Hash read, subscription): no service
discovery. Counted by the wallet's radio (HW_DIR/ble_links "arrival"), never timed."""

import asyncio
import time

from amiko.transports import bleak_bumble

from test_ble_hostile import Inbox, refused_tap
from test_ble_pairing import TAP
from test_ble_payment import ButtonPairing, open_paired, start_ble_wallet


async def _tap(t):
    inbox = Inbox(t)
    t.write(TAP)
    await inbox.wait(refused_tap, 15, "the wallet's answer to a Tap")


def test_known_wallet_connected_on_first_advertisement_without_discovery(tmp_path):
    board = start_ble_wallet(tmp_path)
    keys = str(tmp_path / "terminal-bonds.json")
    pairing = ButtonPairing(board)

    async def go():
        first = open_paired(board, pairing, keys=keys)  # first contact: scan, connect, pair, discover
        try:
            await first.connect()
            await _tap(first)
        finally:
            await first.aclose()
        arrivals = []
        for _ in range(2):
            board.ble_away(True)
            while board.ble_links():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the radio notices (AWAY_POLL) and stops the advertising restarted meanwhile
            t = open_paired(board, pairing, keys=keys)  # a new transport, as the bridge opens after a drop
            try:
                waiting = asyncio.ensure_future(t.connect())
                await asyncio.sleep(0.3)  # the terminal waits for the wallet before it is in range
                board.ble_away(False)
                await asyncio.wait_for(waiting, 20)
                await _tap(t)
                backend = t.client._backend
                arrivals.append((board.ble_stats()["arrival"], backend.connection.parameters, backend.security,
                                 getattr(backend, "gatt_cached", None)))
            finally:
                await t.aclose()
        await bleak_bumble.close_all()
        return arrivals

    try:
        arrivals = asyncio.run(go())
        assert len(pairing.compared) == 1  # one pairing; the arrivals re-encrypt with the bond
        for arrival, parameters, security, cached in arrivals:
            assert arrival["adverts"] == 1, arrival  # connected on the wallet's first advertisement
            assert arrival["att_requests"] == 3, arrival  # MTU, Database Hash, CCCD: no discovery
            assert parameters.connection_interval == 7.5, parameters  # the payment's interval (ms)
            assert parameters.peripheral_latency == 0
            assert security == "bond" and cached is True
            assert arrival["connected"] <= arrival["subscribed"] <= arrival["first_write"] <= time.monotonic()
    finally:
        board.stop()
