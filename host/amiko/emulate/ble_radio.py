"""The virtual board's Bluetooth LE radio: a bumble virtual controller on a bumble LocalLink.

    firmware (board/ble.py) --`bluetooth` API--> sim_bluetooth (in MicroPython)
        --unix socket HW_DIR/ble.sock--> BleRadio (this module, in the emulator process)
        --> bumble Device "wallet" (peripheral: GATT server, advertising) on controller A
        ~~ bumble LocalLink (the simulated air) ~~
        controller B, whose HCI is served on tcp-server:127.0.0.1:PORT
        <-- any bumble host in another process: `tcp-client:127.0.0.1:PORT`
            (the terminal's bleak code through amiko.transports.bleak_bumble)

So both ends run bumble's full host stack (HCI, L2CAP, ATT/GATT, SMP) over a link layer
simulation; only the radio waves are missing. The central side's controller is reset by each
new HCI client (one client at a time, like one USB dongle).

The radio outlives MicroPython resets: when the firmware process dies (power cut, soft
reset), its socket closes, advertising stops and a connected central is disconnected, like a
board losing power; the next boot registers its services again (same layout: same handles).
Wire format on the socket: see sim_bluetooth.py.

Range: while the file HW_DIR/ble_away exists the wallet is out of the terminal's range (the
customer walked away): advertising stops, a connected central is disconnected, new connections
are refused; when the file is removed the last advertising the firmware asked for resumes
(`away(hw_dir, True|False)` from any process; checked every AWAY_POLL seconds).
"""

import asyncio
import hashlib
import json
import logging
import os
import socket
import struct
import threading

log = logging.getLogger("amiko.emulate.ble")

AWAY_POLL = 0.02


def away(hw_dir, gone):
    """Move the virtual board's BLE wallet out of (gone=True) or back into the terminal's range."""
    path = os.path.join(hw_dir, "ble_away")
    if gone:
        open(path, "a").close()
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _address(seed):
    b = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    b[0] |= 0xC0  # random static address: two top bits set
    return ":".join("%02X" % x for x in b)


class BleRadio:
    def __init__(self, hw_dir):
        self.hw = hw_dir
        self.sock_path = os.path.join(hw_dir, "ble.sock")
        self.address = _address(hw_dir)
        self.loop = None
        self.hci_port = None
        self.ready = threading.Event()
        self.error = None
        self.device = None
        self.chars = {}  # firmware handle -> bumble Characteristic
        self.layout = None
        self.board = None  # (reader, writer) of the MicroPython process
        self.connections = {}  # handle -> bumble Connection
        self.pairing = {}  # the firmware's ble.config() pairing keys
        self.away_path = os.path.join(hw_dir, "ble_away")
        self.away = False
        self.rx_bytes = 0  # GATT write values from centrals, in total
        self.tx_bytes = 0  # notification values to centrals, in total
        self.advertising = None  # the firmware's last gap_advertise request (resumed back in range)

    def start(self, timeout=10):
        threading.Thread(target=self._thread, daemon=True, name="ble-radio").start()
        if not self.ready.wait(timeout) or self.error:
            raise RuntimeError("the BLE radio did not start: %s" % (self.error or "time-out"))
        return {"hci": "tcp-client:127.0.0.1:%d" % self.hci_port, "address": self.address}

    def _thread(self):
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._setup())
        except Exception as e:  # reported by start()
            self.error = "%s: %s" % (type(e).__name__, e)
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    async def _setup(self):
        from bumble.controller import Controller
        from bumble.device import Device
        from bumble.host import Host
        from bumble.link import LocalLink
        from bumble.transport.common import AsyncPipeSink
        from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

        link = LocalLink()
        wallet_ctrl = Controller("wallet", link=link)
        host = Host(wallet_ctrl, AsyncPipeSink(wallet_ctrl))
        self.device = Device(name="amiko-vboard", address=self.address, host=host)
        self.device.on("connection", self._on_connection)
        await self.device.power_on()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        self.hci_port = s.getsockname()[1]
        self.hci_transport = await open_tcp_server_transport_with_socket(s)
        self.central_ctrl = Controller("terminal", host_source=self.hci_transport.source,
                                       host_sink=self.hci_transport.sink, link=link)
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        self.server = await asyncio.start_unix_server(self._board_session, self.sock_path)
        asyncio.ensure_future(self._watch_range())

    async def _watch_range(self):
        while True:
            gone = os.path.exists(self.away_path)
            if gone != self.away:
                self.away = gone
                try:
                    if gone:
                        if self.device.is_advertising:
                            await self.device.stop_advertising()
                        for conn in list(self.connections.values()):
                            try:
                                await conn.disconnect()
                            except Exception:
                                pass
                    elif self.board is not None and self.advertising is not None:
                        await self._advertise(self.advertising)
                except Exception as e:
                    log.warning("ble radio: range change failed: %s", e)
            await asyncio.sleep(AWAY_POLL)

    async def _advertise(self, msg):
        if self.device.is_advertising:
            await self.device.stop_advertising()
        if msg.get("interval_us") is not None and not self.away:
            ms = max(20.0, msg["interval_us"] / 1000.0)
            await self.device.start_advertising(
                advertising_data=bytes.fromhex(msg["adv"]), scan_response_data=bytes.fromhex(msg["resp"]),
                advertising_interval_min=ms, advertising_interval_max=ms)

    # -- bumble -> board

    def _send(self, op, payload):
        if self.board is not None:
            self.board[1].write(op + struct.pack(">H", len(payload)) + payload)

    def _on_connection(self, connection):
        if self.board is None or self.away:  # the board is off or out of range: nobody answers
            asyncio.ensure_future(connection.disconnect())
            return
        self.connections[connection.handle] = connection
        self._mark_links()
        addr = bytes(connection.peer_address)[::-1]
        self._send(b"c", struct.pack(">HB", connection.handle, int(connection.peer_address.address_type) & 0xFF) + addr)

        def on_disconnection(reason):
            self.connections.pop(connection.handle, None)
            self._mark_links()
            self._send(b"d", struct.pack(">H", connection.handle))

        def on_mtu():
            self._send(b"m", struct.pack(">HH", connection.handle, connection.att_mtu))

        def on_encryption():
            self._send(b"e", struct.pack(">HBB", connection.handle, 1 if connection.encryption else 0,
                                         1 if connection.authenticated else 0))

        connection.on("disconnection", on_disconnection)
        connection.on("connection_att_mtu_update", on_mtu)
        connection.on("connection_encryption_change", on_encryption)

    def _mark_links(self):
        """HW_DIR/ble_links: {"links": centrals connected now, "rx_bytes"/"tx_bytes": GATT write and notification
        values so far} (for tools: VirtualBoard.ble_links(), ble_stats())."""
        try:
            with open(os.path.join(self.hw, "ble_links.tmp"), "w") as f:
                f.write(json.dumps({"links": len(self.connections), "rx_bytes": self.rx_bytes,
                                    "tx_bytes": self.tx_bytes}) + "\n")
            os.replace(os.path.join(self.hw, "ble_links.tmp"), os.path.join(self.hw, "ble_links"))
        except OSError:
            pass

    def _on_write(self, handle):
        def write(connection, value):
            self.rx_bytes += len(value)
            self._send(b"w", struct.pack(">HH", connection.handle, handle) + bytes(value))

        return write

    # -- board -> bumble

    async def _board_session(self, reader, writer):
        if self.board is not None:
            writer.close()
            return
        self.board = (reader, writer)
        try:
            while True:
                head = await reader.readexactly(3)
                n = struct.unpack(">H", head[1:3])[0]
                payload = await reader.readexactly(n) if n else b""
                try:
                    await self._board_op(head[0:1], payload)
                except Exception as e:  # a bad request from the firmware must not kill the radio
                    log.warning("ble radio: %s from the board failed: %s", head[0:1], e)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.board = None
            writer.close()
            await self._power_off()

    async def _power_off(self):
        self.advertising = None  # the next boot advertises again itself
        if self.device.is_advertising:
            await self.device.stop_advertising()
        for conn in list(self.connections.values()):
            try:
                await conn.disconnect()
            except Exception:
                pass
        self.connections.clear()
        self._mark_links()

    async def _board_op(self, op, p):
        if op == b"R":
            self._register(json.loads(p))
        elif op == b"A":
            msg = json.loads(p)
            self.advertising = msg
            await self._advertise(msg)
        elif op == b"N":
            conn, handle = struct.unpack(">HH", p[:4])
            connection = self.connections.get(conn)
            if connection is not None and handle in self.chars:
                await self.device.notify_subscriber(connection, self.chars[handle], p[4:])
                self.tx_bytes += len(p) - 4
        elif op == b"D":
            connection = self.connections.get(struct.unpack(">H", p[:2])[0])
            if connection is not None:
                await connection.disconnect()
        elif op == b"C":
            cfg = json.loads(p)
            if "gap_name" in cfg:
                self.device.name = cfg["gap_name"]
            if any(k in cfg for k in ("bond", "le_secure", "mitm", "io")):
                self._pairing(cfg)
            if isinstance(cfg.get("mtu"), int) and cfg["mtu"] >= 23:
                self.device.gatt_server.max_mtu = cfg["mtu"]  # what the port's stack would offer

    def _pairing(self, cfg):
        """The SMP side of the port's stack, as the firmware configured it (ble.config(bond=..,
        le_secure=.., mitm=.., io=..): io uses the SMP IO capability values)."""
        from bumble.pairing import PairingConfig, PairingDelegate

        self.pairing.update({k: cfg[k] for k in ("bond", "le_secure", "mitm", "io") if k in cfg})
        p = self.pairing
        delegate = PairingDelegate(io_capability=PairingDelegate.IoCapability(p.get("io", 3)))
        config = PairingConfig(sc=bool(p.get("le_secure", False)), mitm=bool(p.get("mitm", False)),
                               bonding=bool(p.get("bond", True)), delegate=delegate)
        self.device.pairing_config_factory = lambda connection: config

    def _register(self, spec):
        from bumble.core import UUID
        from bumble.gatt import Characteristic, CharacteristicValue, Service

        if self.layout is not None:
            if spec != self.layout:
                raise ValueError("the firmware registered other services than before a reset")
            return  # same layout after a reset: same handles, same bumble attributes
        services = []
        for uuid, chars in spec:
            cs = []
            for cuuid, flags, handle in chars:
                props = Characteristic.Properties(flags & 0x3E)
                perms = Characteristic.Permissions.READABLE | Characteristic.Permissions.WRITEABLE
                c = Characteristic(UUID(cuuid), props, perms, CharacteristicValue(write=self._on_write(handle)))
                self.chars[handle] = c
                cs.append(c)
            services.append(Service(UUID(uuid), cs))
        self.device.add_services(services)
        self.layout = spec
