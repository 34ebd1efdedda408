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
new HCI client (one client at a time, like one USB dongle). It answers LE Create Connection
Cancel as a real controller does (the pending connection ends with an LE Connection Complete
of status Unknown Connection Identifier), which bumble's virtual controller leaves out: a
terminal that waits for its wallet with a pending connection can call it off.

The radio outlives MicroPython resets: when the firmware process dies (power cut, soft
reset), its socket closes, advertising stops and a connected central is disconnected, like a
board losing power; the next boot registers its services again (same layout: same handles).
Wire format on the socket: see sim_bluetooth.py.

Pairing is bumble's SMP on the wallet's side, configured by the firmware's ble.config(bond=,
le_secure=, mitm=, io=) (PairingConfig + a PairingDelegate that asks the firmware): a numeric
comparison or a passkey to display becomes _IRQ_PASSKEY_ACTION and waits for the firmware's
gap_passkey(); a "just works" pairing is refused when the firmware asked for MITM protection
(as the ports' stacks do in that configuration). The wallet's bumble key store is the firmware's
own (FirmwareKeyStore: every get/update/delete is an _IRQ_GET_SECRET / _IRQ_SET_SECRET round
trip), so bonds live in the board's flash and survive its reboots. The firmware hears of a link's
security after a pairing (or its failure) and after a re-encryption with a stored bond, with
authenticated taken from the key itself (bumble marks every encrypted LE link authenticated).

Range: while the file HW_DIR/ble_away exists the wallet is out of the terminal's range (the
customer walked away): advertising stops, a connected central is disconnected, new connections
are refused; when the file is removed the last advertising the firmware asked for resumes
(`away(hw_dir, True|False)` from any process; checked every AWAY_POLL seconds).

What the last arrival cost, from the wallet's side (HW_DIR/ble_links "arrival", for tests and the
benchmark): "adverts", the advertising PDUs the wallet sent from the start of advertising (boot,
back in range, after a link) until a central connected (1: the central connected on the first
one); "att_requests", the ATT requests that central made until its first write to the wallet
(MTU exchange, discovery, subscription); and CLOCK_MONOTONIC times of the phases: "in_range"
(the radio noticed the wallet back in range, or advertising started), "connected", "mtu",
"encrypted" (the firmware told of the link's security), "subscribed" (a CCCD written),
"first_write".
"""

import asyncio
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time

log = logging.getLogger("amiko.emulate.ble")

SECRET_TIMEOUT = 5.0  # seconds the firmware has to answer a key store request
PASSKEY_TIMEOUT = 60.0  # seconds the customer has to confirm a pairing on the wallet
SEC_TYPE_PEER_KEYS = 2  # the sec_type of the bonds we store (NimBLE's "peer sec" object)

AWAY_POLL = 0.005


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


class FirmwareKeyStore:
    """bumble's KeyStore API on the firmware's _IRQ_GET_SECRET / _IRQ_SET_SECRET handlers."""

    def __init__(self, radio):
        self.radio = radio
        self.looked_up = {}  # name -> the keys its link's LTK request just looked up (for the security report)

    async def _request(self, op, body):
        return await self.radio.board_request(op, body, SECRET_TIMEOUT)

    async def get(self, name):
        from bumble.keys import PairingKeys

        key = name.encode()
        answer = await self._request(b"g", struct.pack(">BBB", SEC_TYPE_PEER_KEYS, 0, 1) + key)
        keys = PairingKeys.from_dict(json.loads(answer[1:])) if answer and answer[0] else None
        self.looked_up[name] = keys
        return keys

    async def get_all(self):
        from bumble.keys import PairingKeys

        out = []
        for index in range(64):
            answer = await self._request(b"g", struct.pack(">BBB", SEC_TYPE_PEER_KEYS, index, 0))
            if not answer or not answer[0]:
                break
            entry = json.loads(answer[1:])
            out.append((entry["name"], PairingKeys.from_dict(entry)))
        return out

    async def _set(self, name, value):
        self.looked_up.pop(name, None)
        key = name.encode()
        body = struct.pack(">BB", SEC_TYPE_PEER_KEYS, len(key)) + key
        body += b"\x01" + value if value is not None else b"\x00"
        answer = await self._request(b"s", body)
        if not answer or not answer[0]:
            raise OSError("the firmware did not store the BLE bond of %s" % name)

    async def update(self, name, keys):
        d = keys.to_dict()
        d["name"] = name
        await self._set(name, json.dumps(d).encode())

    async def delete(self, name):
        await self._set(name, None)

    async def delete_all(self):
        for name, _ in await self.get_all():
            await self.delete(name)

    async def get_resolving_keys(self):
        out = []
        for name, keys in await self.get_all():
            if keys.irk is not None:
                from bumble.hci import Address

                out.append((keys.irk.value, Address(name)))
        return out


def _wallet_delegate(radio, io, mitm):
    from bumble.pairing import PairingDelegate

    class WalletDelegate(PairingDelegate):
        """The firmware's side of a pairing: _IRQ_PASSKEY_ACTION, answered by gap_passkey()."""

        async def confirm(self, auto=False):  # just works: no MITM protection
            if mitm:
                log.info("ble radio: a just-works pairing refused (the wallet requires MITM protection)")
                return False
            return True

        async def compare_numbers(self, number, digits):
            return bool(await radio.passkey_action(self.connection, 4, number))

        async def generate_passkey(self):
            return (await radio.passkey_action(self.connection, 3, 0)) % 1000000

        async def get_number(self):
            return None  # the wallet has no keyboard

    return WalletDelegate(io_capability=PairingDelegate.IoCapability(io))


def _initiator_controller(name, **kwargs):
    """bumble's virtual controller, with LE Create Connection Cancel ending the pending connection."""
    from bumble import hci
    from bumble.controller import Controller

    class Initiator(Controller):
        def on_hci_le_create_connection_cancel_command(self, _command):
            pending, self.pending_le_connection = self.pending_le_connection, None
            if pending is None:
                return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
            # after the command's Command Complete (send_hci_packet queues in order)
            asyncio.get_running_loop().call_soon(self.send_hci_packet, hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, connection_handle=0,
                role=hci.Role.CENTRAL, peer_address_type=pending.peer_address.address_type,
                peer_address=pending.peer_address, connection_interval=0, peripheral_latency=0,
                supervision_timeout=0, central_clock_accuracy=0))
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    return Initiator(name, **kwargs)


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
        self.pending = {}  # request id -> future: the firmware's answers (secrets, passkeys)
        self.next_req = 0
        self.pairing_links = set()  # connection handles with an SMP pairing in progress
        # connection handle -> GATT writes held back until the firmware heard of the link's security (a
        # port's stack reports the encryption before the encrypted writes that follow it)
        self.held_writes = {}
        self.arrival = {}  # what the last arrival cost (see the module docstring)
        self.adverts = 0  # advertising PDUs since advertising (re)started

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
        from bumble import att, ll
        from bumble.controller import Controller
        from bumble.device import Device
        from bumble.host import Host
        from bumble.link import LocalLink
        from bumble.transport.common import AsyncPipeSink
        from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

        link = LocalLink()
        wallet_ctrl = Controller("wallet", link=link)
        sent_pdu = wallet_ctrl.send_advertising_pdu

        def send_advertising_pdu(packet):
            if not isinstance(packet, ll.ConnectInd):
                self.adverts += 1
            sent_pdu(packet)

        wallet_ctrl.send_advertising_pdu = send_advertising_pdu
        host = Host(wallet_ctrl, AsyncPipeSink(wallet_ctrl))
        self.device = Device(name="amiko-vboard", address=self.address, host=host)
        self.device.keystore = FirmwareKeyStore(self)
        self.device.on("connection", self._on_connection)
        await self.device.power_on()
        served = self.device.gatt_server.on_gatt_pdu

        def on_gatt_pdu(connection, pdu):
            if pdu.op_code in att.ATT_REQUESTS and self.arrival.get("connection") == connection.handle \
                    and "first_write" not in self.arrival:
                self.arrival["att_requests"] += 1
            served(connection, pdu)

        self.device.gatt_server.on_gatt_pdu = on_gatt_pdu
        self.device.on("characteristic_subscription", lambda bearer, *_: self._arrived("subscribed", bearer))
        # IPPROTO_TCP spelled out: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose
        # proto says TCP, and a plain socket() says 0; with Nagle every HCI packet that follows another
        # within a round trip (an ATT response after the Number Of Completed Packets event) waits for the
        # terminal's delayed ACK, ~40 ms
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        self.hci_port = s.getsockname()[1]
        self.hci_transport = await open_tcp_server_transport_with_socket(s)
        self.central_ctrl = _initiator_controller("terminal", host_source=self.hci_transport.source,
                                                  host_sink=self.hci_transport.sink, link=link)
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        self.server = await asyncio.start_unix_server(self._board_session, self.sock_path)
        self.advertising_lock = asyncio.Lock()
        asyncio.ensure_future(self._watch_range())

    async def _watch_range(self):
        while True:
            gone = os.path.exists(self.away_path)
            if gone != self.away:
                self.away = gone
                try:
                    if gone:
                        async with self.advertising_lock:
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
        async with self.advertising_lock:  # a range change waits: no advertising starts once out of range
            if self.device.is_advertising:
                await self.device.stop_advertising()
            if msg.get("interval_us") is not None and not self.away:
                ms = max(20.0, msg["interval_us"] / 1000.0)
                self.adverts = 0
                self.arrival = {"in_range": time.monotonic()}
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
        self.arrival.update(connection=connection.handle, connected=time.monotonic(), adverts=self.adverts,
                            att_requests=0)
        self._mark_links()
        addr = bytes(connection.peer_address)[::-1]
        self._send(b"c", struct.pack(">HB", connection.handle, int(connection.peer_address.address_type) & 0xFF) + addr)

        def on_disconnection(reason):
            self.connections.pop(connection.handle, None)
            self.held_writes.pop(connection.handle, None)
            self._mark_links()
            self._send(b"d", struct.pack(">H", connection.handle))

        def on_mtu():
            self._arrived("mtu", connection)
            self._send(b"m", struct.pack(">HH", connection.handle, connection.att_mtu))

        def on_encryption():
            if connection.handle not in self.pairing_links:  # a pairing reports when it ends
                self.held_writes.setdefault(connection.handle, [])
                asyncio.ensure_future(self._report_security(connection))

        def on_pairing_start():
            self.pairing_links.add(connection.handle)
            self.held_writes.setdefault(connection.handle, [])

        def on_pairing(keys):
            self.pairing_links.discard(connection.handle)
            authenticated = bool(keys.ltk is not None and keys.ltk.authenticated)
            self._send_security(connection, bool(connection.encryption), authenticated, True)

        def on_pairing_failure(reason):
            self.pairing_links.discard(connection.handle)
            log.info("ble radio: pairing with %s failed: %s", connection.peer_address, reason)
            self._send_security(connection, False, False, False)

        connection.on("disconnection", on_disconnection)
        connection.on("connection_att_mtu_update", on_mtu)
        connection.on("connection_encryption_change", on_encryption)
        connection.on("pairing_start", on_pairing_start)
        connection.on("pairing", on_pairing)
        connection.on("pairing_failure", on_pairing_failure)

    def _arrived(self, phase, connection):
        if self.arrival.get("connection") == connection.handle and phase not in self.arrival:
            self.arrival[phase] = time.monotonic()
            self._mark_links()

    def _send_security(self, connection, encrypted, authenticated, bonded):
        self._arrived("encrypted", connection)
        self._send(b"e", struct.pack(">HBBB", connection.handle, int(encrypted), int(authenticated), int(bonded)))
        for msg in self.held_writes.pop(connection.handle, ()):
            self._send(b"w", msg)

    async def _report_security(self, connection):
        """A link encrypted without a pairing (the central re-encrypted with a bond): what the bond says
        (the bond its LTK request just looked up, else a lookup)."""
        encrypted = bool(connection.encryption)
        keys = None
        name = str(connection.peer_address)
        store = self.device.keystore
        if encrypted and name in store.looked_up:
            keys = store.looked_up.pop(name)
        elif encrypted:
            try:
                keys = await store.get(name)
            except Exception as e:
                log.warning("ble radio: bond lookup failed: %s", e)
        authenticated = bool(keys is not None and keys.ltk is not None and keys.ltk.authenticated)
        self._send_security(connection, encrypted, authenticated, keys is not None)

    async def board_request(self, op, body, timeout):
        """Send a request to the firmware and wait for its answer (None: no board, or no answer)."""
        if self.board is None:
            return None
        self.next_req = (self.next_req + 1) & 0xFFFF
        req = self.next_req
        fut = asyncio.get_running_loop().create_future()
        self.pending[req] = fut
        self._send(op, struct.pack(">H", req) + body)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            log.warning("ble radio: the firmware did not answer %s within %s s", op, timeout)
            return None
        finally:
            self.pending.pop(req, None)

    async def passkey_action(self, connection, action, number):
        """_IRQ_PASSKEY_ACTION to the firmware; its gap_passkey() answer (0: refused or no answer)."""
        if self.board is None:
            return 0
        key = ("passkey", connection.handle)
        fut = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        self._send(b"p", struct.pack(">HBI", connection.handle, action, number))
        try:
            return await asyncio.wait_for(fut, PASSKEY_TIMEOUT)
        except asyncio.TimeoutError:
            return 0
        finally:
            self.pending.pop(key, None)

    def _answer(self, key, value):
        fut = self.pending.get(key)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _mark_links(self):
        """HW_DIR/ble_links: {"links": centrals connected now, "rx_bytes"/"tx_bytes": GATT write and notification
        values so far, "arrival": the last arrival (module docstring)} (for tools: VirtualBoard.ble_links(),
        ble_stats())."""
        try:
            with open(os.path.join(self.hw, "ble_links.tmp"), "w") as f:
                f.write(json.dumps({"links": len(self.connections), "rx_bytes": self.rx_bytes,
                                    "tx_bytes": self.tx_bytes, "arrival": self.arrival}) + "\n")
            os.replace(os.path.join(self.hw, "ble_links.tmp"), os.path.join(self.hw, "ble_links"))
        except OSError:
            pass

    def _on_write(self, handle):
        def write(connection, value):
            self.rx_bytes += len(value)
            self._arrived("first_write", connection)
            msg = struct.pack(">HH", connection.handle, handle) + bytes(value)
            held = self.held_writes.get(connection.handle)
            if held is not None:
                held.append(msg)
            else:
                self._send(b"w", msg)

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
        async with self.advertising_lock:
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
        elif op in (b"G", b"S"):
            self._answer(struct.unpack(">H", p[:2])[0], p[2:])
        elif op == b"P":
            conn, _action, passkey = struct.unpack(">HBI", p[:7])
            self._answer(("passkey", conn), passkey)
        elif op == b"Q":
            connection = self.connections.get(struct.unpack(">H", p[:2])[0])
            if connection is not None:
                self.device.request_pairing(connection)
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
        from bumble.pairing import PairingConfig

        self.pairing.update({k: cfg[k] for k in ("bond", "le_secure", "mitm", "io") if k in cfg})
        p = self.pairing
        mitm = bool(p.get("mitm", False))

        def config_for(connection):
            delegate = _wallet_delegate(self, p.get("io", 3), mitm)
            delegate.connection = connection
            return PairingConfig(sc=bool(p.get("le_secure", False)), mitm=mitm,
                                 bonding=bool(p.get("bond", True)), delegate=delegate)

        self.device.pairing_config_factory = config_for

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
                perms = Characteristic.Permissions.READABLE
                if flags & 0x2000:  # FLAG_WRITE_AUTHENTICATED
                    perms |= Characteristic.Permissions.WRITE_REQUIRES_AUTHENTICATION
                elif flags & 0x1000:  # FLAG_WRITE_ENCRYPTED
                    perms |= Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION
                else:
                    perms |= Characteristic.Permissions.WRITEABLE
                c = Characteristic(UUID(cuuid), props, perms, CharacteristicValue(write=self._on_write(handle)))
                self.chars[handle] = c
                cs.append(c)
            services.append(Service(UUID(uuid), cs))
        self.device.add_services(services)
        self.layout = spec
