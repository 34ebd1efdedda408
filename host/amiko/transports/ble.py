"""Bluetooth LE transport to a wallet: bleak as the GATT central.

    ble:NAME                      the wallet advertising the Amiko service with this name
    ble:AA:BB:CC:DD:EE:FF         ... or with this address
    options (query string):
      hci=BUMBLE_TRANSPORT        use bumble's host stack (amiko.transports.bleak_bumble) on that
                                  HCI transport instead of the OS's (BlueZ): the virtual board's
                                  `tcp-client:127.0.0.1:PORT`, or a USB dongle `usb:0`
      timeout=SECONDS             scan + connect time-out (default 10)
      pair=1|0                    pair before using the link (default 1: the wallet answers only a
                                  bonded, authenticated link): LE Secure Connections with MITM
                                  protection and bonding, re-encrypting with the bond when there
                                  is one; the first time the wallet shows a 6-digit number, the
                                  terminal logs the same number and the customer presses confirm
                                  on the wallet (numeric comparison)
      keys=PATH                   with hci=: the file that keeps the terminal's bonds (bumble's
                                  JSON key store; default AMIKO_BUMBLE_KEYS, else in memory)
    e.g. ble:Amiko-shop1?hci=usb:0

The GATT contract is firmware/board/ble.py's (service, RX write characteristic, TX notify
characteristic; no chunk header: pieces of the frame byte stream, the frame layer finds the
boundaries). Writes go out as write-without-response in pieces of the RX characteristic's
`max_write_without_response_size` (ATT MTU - 3), in order, one at a time; notifications are
queued for read().

Life cycle (the relay's and the bridge's transport API): `await read()` connects on first use
(scan by service UUID, connect, MTU exchange, subscribe), scanning until a wallet is in range
(cancel the read to stop); returns b"" once when the link drops, which ends the relay session
(contact lost: the bridge reports the wallet left); the next read() connects again
(reconnect after a drop: the wallet finishes an interrupted payment at that next contact).
`write(data)` queues (sent once connected, dropped with a log line if the link drops first);
`close()` disconnects. `await connect()` connects explicitly.

Arrival: the first contact with a wallet scans for it and connects to the address it advertises
from (one advertising interval after it was seen: the controller connects on an advertisement).
That address is kept (per HCI transport and target, for this process: the next transport for
the same wallet finds it too), and every later contact connects to it directly: with bumble the
connection request stays pending until the wallet advertises, so the terminal connects on the
wallet's first advertisement in range, with no scan in between; meanwhile a scan looks for the
wallet at another address (a wallet whose address changed), and connects there instead. Only
the Amiko service is discovered (bleak's `services=`; the bumble backend keeps a wallet's GATT
layout with its Database Hash and does no discovery at all while the hash is unchanged).
"""

import asyncio
import logging
import re
from urllib.parse import parse_qs

from amiko_core.walletlink import RX_UUID as AMIKO_RX_UUID  # write: terminal -> wallet
from amiko_core.walletlink import SERVICE_UUID as AMIKO_SERVICE_UUID
from amiko_core.walletlink import TX_UUID as AMIKO_TX_UUID  # notify: wallet -> terminal

log = logging.getLogger("amiko.transports.ble")

RESCAN = 0.2  # seconds between scans while no wallet is in range
_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_last_seen = {}  # (hci, target) -> the BLEDevice the wallet was last connected at


class BleTransport:
    def __init__(self, target, hci=None, timeout=10.0, pair=True, keys=None, pairing=None):
        if not target:
            raise ValueError("ble: give the wallet's name or address: ble:NAME or ble:AA:BB:CC:DD:EE:FF")
        self.target = target
        self.by_address = bool(_ADDRESS.match(target))
        self.hci = hci
        self.timeout = timeout
        self.pair = pair
        self.keys = keys
        self.pairing = pairing  # the terminal's pairing handler (bleak_bumble.TerminalPairing by default)
        self.client = None
        self.rx_char = None
        self.inbox = asyncio.Queue()
        self.outbox = []
        self._out_ready = None
        self._writer = None
        self._connecting = None
        self._closed = False
        self._background = []  # scans being stopped
        self.bytes_out = 0
        self.bytes_in = 0
        self.connects = 0

    @classmethod
    def from_spec(cls, spec):
        rest = spec[len("ble:"):]
        target, _, query = rest.partition("?")
        hci, timeout, pair, keys = None, 10.0, True, None
        for key, values in parse_qs(query, keep_blank_values=True).items():
            if key == "hci" and values[0]:
                hci = values[0]
            elif key == "pair" and values[0] in ("0", "1"):
                pair = values[0] == "1"
            elif key == "keys" and values[0]:
                keys = values[0]
            elif key == "timeout":
                try:
                    timeout = float(values[0])
                except ValueError:
                    raise ValueError("ble: timeout must be a number of seconds in %r" % spec) from None
            else:
                raise ValueError("unknown ble option %r in %r" % (key, spec))
        return cls(target, hci=hci, timeout=timeout, pair=pair, keys=keys)

    def _backend(self):
        if self.hci is None:
            return {}
        from amiko.transports import bleak_bumble

        return {"backend": bleak_bumble.BumbleClient, "bumble_hci": self.hci, "bumble_keys": self.keys,
                "bumble_pairing": self.pairing}

    def _scanner_backend(self):
        if self.hci is None:
            return {}
        from amiko.transports import bleak_bumble

        return {"backend": bleak_bumble.BumbleScanner, "bumble_hci": self.hci}

    async def _find(self, elsewhere_than=None, timeout=True):
        """The wallet's BLEDevice from a scan (with elsewhere_than: at another address than that);
        OSError after self.timeout (timeout=None: scan until found)."""
        from bleak import BleakScanner

        loop = asyncio.get_running_loop()
        found = loop.create_future()

        def seen(device, adv):
            hit = (device.address.upper() == self.target.upper() if self.by_address
                   else adv.local_name == self.target)
            if hit and elsewhere_than is not None and device.address.upper() == elsewhere_than.upper():
                hit = False
            if hit and not found.done():
                found.set_result(device)

        scanner = BleakScanner(seen, service_uuids=[AMIKO_SERVICE_UUID], **self._scanner_backend())
        await scanner.start()
        try:
            return await asyncio.wait_for(found, self.timeout if timeout else None)
        except asyncio.TimeoutError:
            raise OSError("ble: no wallet %r advertising the Amiko service within %s s"
                          % (self.target, self.timeout)) from None
        finally:
            await scanner.stop()

    async def connect(self):
        """Scan, connect, subscribe; OSError when the wallet is not found or the link fails."""
        if self.client is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self):
        key = (self.hci, self.target.upper() if self.by_address else self.target)
        known = _last_seen.get(key)
        if known is not None:
            client, device = await self._connect_known(known)
        else:
            device = await self._find()
            client = await self._open(device)
        _last_seen[key] = device
        self.client = client
        self.connects += 1
        log.info("ble: connected to %s (ATT MTU %d)", self.target, client.mtu_size)
        if self._writer is None or self._writer.done():
            self._out_ready = asyncio.Event()
            self._writer = asyncio.ensure_future(self._write_loop())
        if self.outbox:
            self._out_ready.set()

    async def _connect_known(self, known):
        """(client, device): connected at the known address when the wallet advertises there, or at the
        address a scan finds it advertising from instead."""
        attempt = asyncio.ensure_future(self._open(known, wait=self.hci is not None))
        tasks = [attempt]
        if not self.by_address:
            tasks.append(asyncio.ensure_future(self._find(elsewhere_than=known.address, timeout=None)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        moved = tasks[1] if len(tasks) > 1 else None
        if attempt.done():
            if moved is not None:  # the scan stops while the wallet is already talking (aclose waits for it)
                moved.cancel()
                self._background = [t for t in self._background if not t.done()] + [moved]
            return attempt.result(), known  # or the attempt's OSError
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        device = moved.result()  # or the scan's error
        log.info("ble: %s now advertises at %s (was %s)", self.target, device.address, known.address)
        return await self._open(device), device

    async def _open(self, device, wait=False):
        """A client connected to `device`, paired, subscribed; wait: keep the connection request
        pending until the wallet advertises (else self.timeout)."""
        from bleak import BleakClient
        from bleak.exc import BleakError

        client = BleakClient(device, services=[AMIKO_SERVICE_UUID], disconnected_callback=self._dropped,
                             timeout=None if wait else self.timeout, pair=self.pair, **self._backend())
        try:
            await client.connect()
            self.rx_char = client.services.get_characteristic(AMIKO_RX_UUID)
            tx = client.services.get_characteristic(AMIKO_TX_UUID)
            if self.rx_char is None or tx is None:
                raise OSError("ble: %s has no Amiko RX/TX characteristics" % self.target)
            await client.start_notify(tx, self._notified)
            if self._closed:  # closed while connecting: do not hold the wallet's link
                raise BleakError("transport closed while connecting")
        except BaseException as e:
            failed = isinstance(e, (BleakError, asyncio.TimeoutError))
            client.amiko_abandoned = not failed  # called off (a cancel): its link is no session's
            try:
                await client.disconnect()
            except Exception:
                pass
            if failed:
                raise OSError("ble: cannot connect to %s: %s" % (self.target, e)) from None
            raise
        return client

    @property
    def present(self):
        """A wallet is connected (the bridge offers a sale to a present wallet first)."""
        return self.client is not None

    def _notified(self, _char, data):
        self.bytes_in += len(data)
        self.inbox.put_nowait(bytes(data))

    def _dropped(self, client):
        if getattr(client, "amiko_abandoned", False):
            return
        if self.client is not None:
            log.info("ble: link to %s dropped", self.target)
        self.client = None
        self.outbox.clear()  # frames for the lost session must not reach the wallet at the next contact
        self.inbox.put_nowait(b"")

    async def read(self):
        logged = False
        while self.client is None and self.inbox.empty() and not self._closed:
            try:
                await self.connect()
            except OSError as e:  # no wallet in range yet: keep scanning (the caller's time-out rules)
                if not logged:
                    log.info("%s; still scanning", e)
                    logged = True
                await asyncio.sleep(RESCAN)
        if self._closed and self.inbox.empty():
            return b""
        return await self.inbox.get()

    def write(self, data):
        if self._closed:
            return
        self.outbox.append(bytes(data))
        if self._out_ready is not None:
            self._out_ready.set()

    async def _write_loop(self):
        while not self._closed:
            await self._out_ready.wait()
            self._out_ready.clear()
            while self.outbox:
                client, char = self.client, self.rx_char
                if client is None:
                    break  # sent after the next connect
                data = self.outbox.pop(0)
                size = char.max_write_without_response_size
                try:
                    for i in range(0, len(data), size):
                        await client.write_gatt_char(char, data[i:i + size], response=False)
                        self.bytes_out += len(data[i:i + size])
                except Exception as e:  # the link dropped mid-write: the frame is incomplete, the CRC drops it
                    log.info("ble: write to %s failed: %s", self.target, e)
                    self.outbox.clear()

    def close(self):
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        client, self.client = self.client, None
        if self._out_ready is not None:
            self._out_ready.set()
        if client is not None:
            try:
                asyncio.get_running_loop().create_task(client.disconnect())
            except RuntimeError:
                pass

    async def aclose(self):
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        client, self.client = self.client, None
        if self._out_ready is not None:
            self._out_ready.set()
        if client is not None:
            await client.disconnect()
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
