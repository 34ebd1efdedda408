"""A bleak backend on bumble's Bluetooth host stack: bleak code runs unchanged without BlueZ.

    from amiko.transports import bleak_bumble
    bleak_bumble.configure("tcp-client:127.0.0.1:PORT")   # or "usb:0", "serial:/dev/ttyUSB0", ...
    BleakScanner(service_uuids=[...], backend=bleak_bumble.BumbleScanner)
    BleakClient(device, backend=bleak_bumble.BumbleClient)

The HCI transport is any bumble transport name (bumble.transport.open_transport): the
virtual board's simulated controller (`tcp-client:127.0.0.1:PORT`, see
amiko.emulate.ble_radio), or a real controller: a USB Bluetooth dongle driven directly
through libusb (`usb:0`, `usb:0B05:17CB`), a UART controller (`serial:/dev/ttyAMA0,1000000`),
or a kernel HCI socket (`hci-socket:0`). It can also be given per object with the keyword
`bumble_hci=` (bleak passes unknown keywords on to the backend). Default: the environment
variable AMIKO_BUMBLE_HCI.

One bumble Device (our host stack) is opened per HCI transport and event loop and shared by
the scanner and the clients on that loop; it is powered off when the loop closes or with
`await bleak_bumble.close_all()`.

Scope (what the terminal needs): scanning with service UUID filter (adverts and scan responses
merged per address), connect (ATT MTU exchange up to 517), GATT discovery, read/write
characteristics and descriptors, notifications/indications, disconnect and its callback,
pairing through bumble's SMP: `pair()` (or `BleakClient(..., pair=True)`) asks for LE Secure
Connections with MITM protection and bonding, IO capability keyboard+display, so the wallet
picks numeric comparison (its display shows the number, the customer confirms on the wallet)
or passkey entry (the terminal types the passkey the wallet shows). The terminal's side of it
is a pairing handler (keyword `bumble_pairing=`): an object with `async compare(number) ->
bool` and `async passkey() -> int | None`; the default (TerminalPairing) logs the number and
accepts it (the wallet's button press is what authorises the pairing) and refuses passkey
entry. When bumble already holds a bond for the peer, `pair()` re-encrypts with it instead
(no new pairing); should the peer have lost it, the bond is dropped and a new pairing follows.
Bonds are kept in a JSON key store (bumble's JsonKeyStore) at `configure(keys=PATH)`, the
keyword `bumble_keys=`, or AMIKO_BUMBLE_KEYS; without one they last as long as the process.

Arrival (a wallet coming into range must cost no scan interval and no fixed wait):
  - connect: the LE Create Connection goes to the address as it was seen on air (a BLEDevice
    from the scanner, or one kept from an earlier connection), so the controller connects on
    that address's next advertisement; bumble would first scan again to resolve an address it
    holds an IRK for even when the address is the peer's identity address itself (one more
    advertising interval). With `timeout=None` the connection stays pending until the peer
    advertises (the terminal waits for a known wallet that way: it connects on the wallet's
    first advertisement in range); cancelling connect() cancels it (LE Create Connection Cancel).
  - connection parameters of a payment: connection interval 7.5-15 ms, no peripheral latency,
    supervision timeout 1 s (CONNECTION_PARAMETERS): every ATT round trip costs a connection
    event or two, bumble's default asks for 15-30 ms.
  - `services=` (bleak's keyword: only these service UUIDs are used) discovers only those
    services, their characteristics and descriptors, not the whole database; and GATT caching:
    the layout found is kept per peer with the server's Database Hash (0x2B2A), and a later
    connection that reads the same hash (one ATT request) uses the kept layout without any
    discovery (a server without a Database Hash is discovered every time).
  - the MTU exchange and the discovery run while the link is being encrypted (pair()).
"""

import asyncio
import logging
import os
import uuid as uuid_mod

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError

log = logging.getLogger("amiko.bleak_bumble")

_default_hci = None
_default_keys = None
_devices = {}  # (hci, loop) -> bumble Device (powered on)
_locks = {}

CENTRAL_ADDRESS = "F0:A1:B2:C3:D4:E5"  # random static address of our host
WANTED_MTU = 517
# (interval min ms, interval max ms, peripheral latency, supervision timeout ms): a payment's link
CONNECTION_PARAMETERS = (7.5, 15.0, 0, 1000)
DATABASE_HASH_UUID = 0x2B2A
_MIC_FAILURE = 0x3D  # HCI reason: the peers' keys differ (the peer lost or replaced the bond)

_PROPS = ((0x01, "broadcast"), (0x02, "read"), (0x04, "write-without-response"), (0x08, "write"),
          (0x10, "notify"), (0x20, "indicate"), (0x40, "authenticated-signed-writes"),
          (0x80, "extended-properties"))


def configure(hci, keys=None):
    """The bumble HCI transport used when no `bumble_hci=` is given; `keys`: the bond store's file."""
    global _default_hci, _default_keys
    _default_hci = hci
    if keys is not None:
        _default_keys = keys


class TerminalPairing:
    """The terminal's default side of a pairing: shows (logs) the number to compare, accepts it."""

    async def compare(self, number):
        log.warning("ble pairing: the wallet shows %06d; the customer confirms it on the wallet", number)
        return True

    async def passkey(self):
        log.warning("ble pairing: the wallet asks for its passkey to be typed; no pairing handler: refused")
        return None


def _pairing_config(handler):
    from bumble.pairing import PairingConfig, PairingDelegate

    class Delegate(PairingDelegate):
        async def compare_numbers(self, number, digits):
            return bool(await handler.compare(number))

        async def get_number(self):
            return await handler.passkey()

        async def confirm(self, auto=False):  # just works: never, the wallet needs MITM protection
            return False

    return PairingConfig(sc=True, mitm=True, bonding=True,
                         delegate=Delegate(io_capability=PairingDelegate.DISPLAY_OUTPUT_AND_KEYBOARD_INPUT))


def _hci(kwargs):
    hci = kwargs.get("bumble_hci") or _default_hci or os.environ.get("AMIKO_BUMBLE_HCI")
    if not hci:
        raise BleakError("bleak_bumble: no HCI transport: configure(), bumble_hci= or AMIKO_BUMBLE_HCI")
    return hci


def _device_class():
    from bumble import smp
    from bumble.device import Device

    class AsSeenResolver(smp.AddressResolver):
        def __init__(self, resolving_keys, device):
            super().__init__(resolving_keys)
            self.device = device

        def can_resolve_to(self, address):
            return address != self.device.connecting_as_seen and super().can_resolve_to(address)

    class TerminalDevice(Device):
        """bumble's Device; an address seen on air is connected to as it is (no resolution scan)."""

        connecting_as_seen = None

        async def refresh_resolving_list(self):
            await super().refresh_resolving_list()
            self.address_resolver = AsSeenResolver(self.address_resolver.resolving_keys, self)

    return TerminalDevice


async def device_for(hci, keys=None):
    """The powered-on bumble Device for `hci` on the running loop (opened on first use, its bonds in
    the key store file `keys`, configure(keys=) or AMIKO_BUMBLE_KEYS)."""
    loop = asyncio.get_running_loop()
    key = (hci, loop)
    lock = _locks.setdefault(key, asyncio.Lock())
    path = keys or _default_keys or os.environ.get("AMIKO_BUMBLE_KEYS")
    async with lock:
        dev = _devices.get(key)
        if dev is not None:
            if path and getattr(dev, "_amiko_keys", None) != path:  # opened by a scanner without it
                _use_keys(dev, path)
            return dev
        from bumble.hci import Address
        from bumble.transport import open_transport

        transport = await open_transport(hci)
        dev = _device_class().with_hci("amiko-terminal", Address(CENTRAL_ADDRESS), transport.source, transport.sink)
        dev._amiko_transport = transport
        dev._amiko_gatt = {}  # peer identity -> (Database Hash, the layout of the services used)
        if path:
            _use_keys(dev, path)
        await dev.power_on()
        _devices[key] = dev
        return dev


def _use_keys(dev, path):
    from bumble.keys import JsonKeyStore

    dev.keystore = JsonKeyStore(None, path)
    dev._amiko_keys = path


async def close_all():
    """Power off and close every bumble Device opened on the running loop."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _devices if k[1] is loop]:
        dev = _devices.pop(key)
        _locks.pop(key, None)
        try:
            await dev.power_off()
        except Exception:
            pass
        await dev._amiko_transport.close()


def _parse_ad(data):
    """(type, value) pairs of advertising data; a truncated structure ends the list."""
    out = []
    i = 0
    while i < len(data):
        n = data[i]
        if n == 0 or i + 1 + n > len(data):
            break
        out.append((data[i + 1], bytes(data[i + 2:i + 1 + n])))
        i += 1 + n
    return out


def _uuids(ad_type, value):
    if ad_type in (0x02, 0x03):
        return ["0000%04x-0000-1000-8000-00805f9b34fb" % int.from_bytes(value[i:i + 2], "little")
                for i in range(0, len(value) - 1, 2)]
    if ad_type in (0x04, 0x05):
        return ["%08x-0000-1000-8000-00805f9b34fb" % int.from_bytes(value[i:i + 4], "little")
                for i in range(0, len(value) - 3, 4)]
    if ad_type in (0x06, 0x07):
        return [str(uuid_mod.UUID(bytes=value[i:i + 16][::-1])) for i in range(0, len(value) - 15, 16)]
    return []


class BumbleScanner(BaseBleakScanner):
    def __init__(self, detection_callback, service_uuids, scanning_mode="active", **kwargs):
        super().__init__(detection_callback, service_uuids)
        self.hci = _hci(kwargs)
        self.active = scanning_mode != "passive"
        self.device = None
        self._seen = {}  # address -> {"name", "uuids", "mfr", "sdata", "tx"}

    async def start(self):
        self.seen_devices = {}
        self._seen = {}
        self.device = await device_for(self.hci)
        self.device.on("advertisement", self._on_advertisement)
        await self.device.start_scanning(active=self.active, filter_duplicates=False)

    async def stop(self):
        if self.device is not None:
            self.device.remove_listener("advertisement", self._on_advertisement)
            if self.device.scanning:
                await self.device.stop_scanning()

    def _on_advertisement(self, adv):
        address = str(adv.address).split("/")[0]
        info = self._seen.setdefault(address, {"name": None, "uuids": [], "mfr": {}, "sdata": {}, "tx": None})
        for t, v in _parse_ad(adv.data_bytes):
            if t in (0x08, 0x09):
                info["name"] = v.decode("utf-8", "replace")
            elif t == 0xFF and len(v) >= 2:
                info["mfr"][int.from_bytes(v[:2], "little")] = v[2:]
            elif t == 0x16 and len(v) >= 2:
                info["sdata"][_uuids(0x03, v[:2])[0]] = v[2:]
            elif t == 0x0A and v:
                info["tx"] = int.from_bytes(v[:1], "little", signed=True)
            else:
                for u in _uuids(t, v):
                    if u not in info["uuids"]:
                        info["uuids"].append(u)
        if not self.is_allowed_uuid(info["uuids"]):
            return
        data = AdvertisementData(local_name=info["name"], manufacturer_data=dict(info["mfr"]),
                                 service_data=dict(info["sdata"]), service_uuids=list(info["uuids"]),
                                 tx_power=info["tx"], rssi=adv.rssi, platform_data=(adv,))
        device = self.create_or_update_device(address, address, info["name"], adv.address, data)
        self.call_detection_callbacks(device, data)


class BumbleClient(BaseBleakClient):
    def __init__(self, address_or_ble_device, services=None, **kwargs):
        super().__init__(address_or_ble_device, disconnected_callback=kwargs.pop("disconnected_callback", None),
                         timeout=kwargs.pop("timeout", 10.0))
        self.hci = _hci(kwargs)
        self.keys = kwargs.get("bumble_keys")
        self.pairing = kwargs.get("bumble_pairing") or TerminalPairing()
        self.security = None  # "bond" (re-encrypted with a stored bond) | "paired" (a new pairing)
        self.peer_address = (address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice)
                             else None)
        self.service_uuids = [str(u).lower() for u in services] if services else None
        self.gatt_cached = None  # with services=: True when the kept layout was used, False when discovered
        self.disconnect_reason = None
        self.connection = None
        self.peer = None
        self._notify = {}  # handle -> (proxy, subscriber)

    @property
    def name(self):
        return self.address

    @property
    def mtu_size(self):
        return self.connection.att_mtu if self.connection is not None else 23

    def is_connected(self):
        return self.connection is not None

    async def connect(self, pair, **kwargs):
        from bumble.core import BT_LE_TRANSPORT
        from bumble.device import ConnectionParametersPreferences, Peer
        from bumble.hci import HCI_LE_1M_PHY, Address

        device = await device_for(self.hci, self.keys)
        target = self.peer_address or Address(self.address, Address.RANDOM_DEVICE_ADDRESS)
        interval_min, interval_max, latency, supervision = CONNECTION_PARAMETERS
        preferences = {HCI_LE_1M_PHY: ConnectionParametersPreferences(
            connection_interval_min=interval_min, connection_interval_max=interval_max, max_latency=latency,
            supervision_timeout=supervision)}
        device.connecting_as_seen = self.peer_address
        try:
            connection = await device.connect(target, transport=BT_LE_TRANSPORT, timeout=self._timeout,
                                              connection_parameters_preferences=preferences)
        except asyncio.CancelledError:
            await self._cancel_connection(device, target)
            raise
        except Exception as e:  # noqa: BLE001 (a time-out, HCI errors)
            raise BleakError("bleak_bumble: no connection to %s within %s s: %s"
                             % (self.address, self._timeout, type(e).__name__)) from None
        finally:
            device.connecting_as_seen = None
        self.connection = connection
        connection.on("disconnection", self._on_disconnection)
        security = None
        try:
            self.peer = Peer(connection)
            if pair:
                security = asyncio.ensure_future(self.pair())
            try:
                await self._prepare(device)
            except (Exception, asyncio.CancelledError) as e:  # noqa: BLE001
                if isinstance(e, asyncio.CancelledError) and asyncio.current_task().cancelling():
                    raise  # connect() itself was cancelled
                if self.connection is None and security is not None:  # the peer dropped the link: the
                    await asyncio.gather(security, return_exceptions=True)  # pairing's verdict says why
                    if security.exception() is not None:
                        raise security.exception() from None
                if isinstance(e, asyncio.CancelledError):  # bumble cancels the requests of a lost link
                    raise BleakError("bleak_bumble: %s dropped the link during discovery" % self.address) from None
                raise
            self.services = self._collection()
            if security is not None:
                await security
        except BaseException:
            if security is not None and not security.done():
                security.cancel()
            if security is not None:
                await asyncio.gather(security, return_exceptions=True)
            await self.disconnect()
            raise

    async def _prepare(self, device):
        """The MTU exchange and the discovery (while the link is being encrypted)."""
        try:
            await self.peer.request_mtu(WANTED_MTU)
        except Exception as e:  # noqa: BLE001 (the peripheral keeps 23)
            log.info("bleak_bumble: MTU exchange failed: %s", e)
        await self._discover(device)

    async def _cancel_connection(self, device, target):
        """Call off a pending LE connection; one that completed before the cancel is disconnected."""
        from bumble import hci
        from bumble.core import BT_LE_TRANSPORT

        loop = asyncio.get_running_loop()
        outcome = loop.create_future()

        def on_connection(connection):
            if bytes(connection.peer_address) == bytes(target) and not outcome.done():
                outcome.set_result(connection)

        def on_failure(_error):
            if not outcome.done():
                outcome.set_result(None)

        device.on(device.EVENT_CONNECTION, on_connection)
        device.on(device.EVENT_CONNECTION_FAILURE, on_failure)
        try:
            answer = await device.send_command(hci.HCI_LE_Create_Connection_Cancel_Command())
            if getattr(answer.return_parameters, "status", None) == hci.HCI_ErrorCode.SUCCESS:
                late = await asyncio.wait_for(outcome, 2.0)  # the pending connection's end
            else:  # nothing was pending: the connection completed before the cancel
                late = device.find_connection_by_bd_addr(target, transport=BT_LE_TRANSPORT)
            if late is not None:
                await late.disconnect()
        except Exception as e:  # noqa: BLE001 (nothing pending any more, the link went meanwhile)
            log.debug("bleak_bumble: connection cancel: %s", e)
        finally:
            device.remove_listener(device.EVENT_CONNECTION, on_connection)
            device.remove_listener(device.EVENT_CONNECTION_FAILURE, on_failure)

    async def _database_hash(self):
        """The server's Database Hash (one Read By Type request), None when it has none."""
        from bumble import att
        from bumble.core import UUID

        response = await self.peer.gatt_client.send_request(att.ATT_Read_By_Type_Request(
            starting_handle=0x0001, ending_handle=0xFFFF, attribute_type=UUID.from_16_bits(DATABASE_HASH_UUID)))
        if response is None or response.op_code != att.Opcode.ATT_READ_BY_TYPE_RESPONSE or not response.attributes:
            return None
        return bytes(response.attributes[0][1])

    async def _discover(self, device):
        if self.service_uuids is None:
            await self.peer.discover_all()
            return
        from bumble.core import UUID

        client = self.peer.gatt_client
        peer = str(self.connection.peer_address)
        db_hash = await self._database_hash()
        kept = device._amiko_gatt.get(peer)
        if db_hash is not None and kept is not None and kept[0] == db_hash:
            _restore(client, kept[1])
            self.gatt_cached = True
            return
        for uuid in self.service_uuids:
            for service in await client.discover_service(UUID(uuid)):
                for characteristic in await client.discover_characteristics((), service):
                    await client.discover_descriptors(characteristic)
                    characteristic.descriptors_discovered = True  # bumble's subscribe would look again
        self.gatt_cached = False
        if db_hash is not None:
            device._amiko_gatt[peer] = (db_hash, _layout(client))

    def _on_disconnection(self, reason):
        self.disconnect_reason = reason
        self.connection = None
        self.peer = None
        self._notify.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _collection(self):
        coll = BleakGATTServiceCollection()
        for s in self.peer.services:
            service = BleakGATTService(s, s.handle, _uuid_str(s.uuid))
            coll.add_service(service)
            for c in s.characteristics:
                props = [name for bit, name in _PROPS if int(c.properties) & bit]
                ch = BleakGATTCharacteristic(c, c.handle, _uuid_str(c.uuid), props,
                                             lambda: self.mtu_size - 3, service)
                coll.add_characteristic(ch)
                for d in c.descriptors:
                    coll.add_descriptor(BleakGATTDescriptor(d, d.handle, _uuid_str(d.type), ch))
        return coll

    def _require(self):
        if self.connection is None:
            raise BleakError("bleak_bumble: not connected to %s" % self.address)

    async def disconnect(self):
        conn = self.connection
        if conn is not None:
            try:
                await conn.disconnect()
            except Exception as e:
                log.info("bleak_bumble: disconnect: %s", e)
        self.connection = None

    async def pair(self, *args, **kwargs):
        """Encrypt with the stored bond, else pair (numeric comparison / passkey, MITM, bonding)."""
        self._require()
        connection = self.connection
        device = connection.device
        name = str(connection.peer_address)
        keys = await device.keystore.get(name) if device.keystore is not None else None
        if keys is not None:
            try:
                await connection.encrypt()
                self.security = "bond"
                return True
            except Exception as e:  # noqa: BLE001 (HCI, SMP, link errors)
                if self.connection is None and self.disconnect_reason != _MIC_FAILURE:
                    # the link went for another reason (out of range): the bond may be fine
                    raise BleakError("bleak_bumble: the link to %s went while encrypting (%s)" % (name, e)) from None
                log.warning("bleak_bumble: the bond with %s no longer works (%s): pairing again", name, e)
                await device.keystore.delete(name)
                if self.connection is None:
                    raise BleakError("bleak_bumble: %s dropped the link after a failed re-encryption" % name)
        device.pairing_config_factory = lambda _c: _pairing_config(self.pairing)
        try:
            await connection.pair()
        except Exception as e:  # noqa: BLE001 (HCI, SMP, link errors)
            raise BleakError("bleak_bumble: pairing with %s failed: %s" % (name, e)) from None
        self.security = "paired"
        return True

    async def unpair(self):
        await self.disconnect()

    async def read_gatt_char(self, characteristic, **kwargs):
        self._require()
        return bytearray(await self.peer.read_value(characteristic.handle))

    async def read_gatt_descriptor(self, descriptor, **kwargs):
        self._require()
        return bytearray(await self.peer.read_value(descriptor.handle))

    async def write_gatt_char(self, characteristic, data, response):
        self._require()
        data = bytes(data)
        if not response and len(data) > characteristic.max_write_without_response_size:
            raise BleakError("bleak_bumble: write without response of %d bytes is more than %d (ATT MTU %d - 3)"
                             % (len(data), characteristic.max_write_without_response_size, self.mtu_size))
        from bumble.att import ATT_Error

        try:
            await self.peer.write_value(characteristic.handle, data, with_response=response)
        except ATT_Error as e:  # e.g. INSUFFICIENT_AUTHENTICATION on a link that is not paired
            raise BleakError("bleak_bumble: write to %s refused: %s" % (self.address, e.error_name)) from None

    async def write_gatt_descriptor(self, descriptor, data):
        self._require()
        await self.peer.write_value(descriptor.handle, bytes(data), with_response=True)

    async def start_notify(self, characteristic, callback, **kwargs):
        self._require()
        proxy = characteristic.obj

        def subscriber(value):
            callback(bytearray(value))

        await self.peer.subscribe(proxy, subscriber)
        self._notify[characteristic.handle] = (proxy, subscriber)

    async def stop_notify(self, characteristic):
        self._require()
        entry = self._notify.pop(characteristic.handle, None)
        if entry is not None:
            await self.peer.unsubscribe(*entry)


def _layout(client):
    """The discovered services as plain data: [(handle, end, uuid, [(handle, end, uuid, properties,
    [(handle, type)])])]."""
    return [(sv.handle, sv.end_group_handle, sv.uuid,
             [(c.handle, c.end_group_handle, c.uuid, int(c.properties), [(d.handle, d.type) for d in c.descriptors])
              for c in sv.characteristics])
            for sv in client.services]


def _restore(client, layout):
    """The GATT client's services from a kept layout, as if just discovered."""
    from bumble.gatt_client import CharacteristicProxy, DescriptorProxy, ServiceProxy

    for handle, end, uuid, characteristics in layout:
        service = ServiceProxy(client, handle, end, uuid)
        for c_handle, c_end, c_uuid, properties, descriptors in characteristics:
            characteristic = CharacteristicProxy(client, c_handle, c_end, c_uuid, properties)
            characteristic.descriptors = [DescriptorProxy(client, d_handle, d_type) for d_handle, d_type in descriptors]
            characteristic.descriptors_discovered = True
            service.characteristics.append(characteristic)
        client.on_service_discovered(service)


def _uuid_str(u):
    b = bytes(u.uuid_bytes)[::-1]
    if len(b) == 2:
        return "0000%s-0000-1000-8000-00805f9b34fb" % b.hex()
    if len(b) == 4:
        return "%s-0000-1000-8000-00805f9b34fb" % b.hex()
    return str(uuid_mod.UUID(bytes=b))
