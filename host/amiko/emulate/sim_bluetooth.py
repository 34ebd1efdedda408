# The virtual board's radio: MicroPython's `bluetooth` module for the unix port (run by
# MicroPython, never by CPython). The emulator copies it to HW_DIR/bluetooth.py(.mpy) when the
# board has BLE, and the ROM imports it before main.py, so `import bluetooth` in the firmware
# finds it like the built-in module on an ESP32. Only the hardware is simulated: the firmware's
# own code (firmware/board/ble.py) drives it through the real API.
#
# Subset implemented (the low-level API that aioble is built on, peripheral role):
#   BLE(): active(), config(), irq(handler), gatts_register_services(), gatts_read(),
#   gatts_write(), gatts_set_buffer(), gatts_notify(), gap_advertise(), gap_disconnect(),
#   gap_pair(), gap_passkey()
#   UUID(str|int), FLAG_* constants (FLAG_WRITE_ENCRYPTED / _AUTHENTICATED become bumble's
#   attribute permissions)
# IRQs delivered: _IRQ_CENTRAL_CONNECT (1), _IRQ_CENTRAL_DISCONNECT (2), _IRQ_GATTS_WRITE (3),
# _IRQ_MTU_EXCHANGED (21), _IRQ_ENCRYPTION_UPDATE (28: conn, encrypted, authenticated, bonded,
# key_size; after a pairing or a re-encryption with a bond, and with encrypted False when a
# pairing failed), _IRQ_GET_SECRET (29) / _IRQ_SET_SECRET (30) (bumble's key store is the
# firmware's: the handler's return value is the answer), _IRQ_PASSKEY_ACTION (31: answered with
# gap_passkey()), through micropython.schedule like the ports do. config(bond=, le_secure=,
# mitm=, io=) sets the SMP behaviour of the bumble side (bumble's PairingConfig).
# Attribute buffers behave like the ports': 20 bytes unless gatts_set_buffer() says more, and a
# longer write is cut to the buffer size.
#
# The other end is the emulator's radio (host/amiko/emulate/ble_radio.py): a bumble Device on
# a bumble virtual controller. Wire format on the unix socket HW_DIR/ble.sock, both ways:
#   op (1 byte ASCII) | length (2 bytes big-endian) | payload
#   board -> host: R services JSON | C config JSON | A advertise JSON {interval_us, adv, resp: hex}
#                  N conn(2) handle(2) data | D conn(2)
#   host -> board: c conn(2) addr_type(1) addr(6) | d conn(2) | w conn(2) handle(2) data | m conn(2) mtu(2)
#                  e conn(2) encrypted(1) authenticated(1) bonded(1)
#                  g req(2) sec_type(1) index(1) has_key(1) key   (get secret)
#                  s req(2) sec_type(1) key_len(1) key has_value(1) value   (set / remove secret)
#                  p conn(2) action(1) passkey(4)   (passkey action)
#   board -> host (answers and requests): G req(2) found(1) value | S req(2) ok(1)
#                  P conn(2) action(1) passkey(4) (gap_passkey) | Q conn(2) (gap_pair)

import json
import socket
import struct
import _thread
import micropython
import binascii

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020
FLAG_WRITE_ENCRYPTED = 0x1000
FLAG_WRITE_AUTHENTICATED = 0x2000

class UUID:
    def __init__(self, value):
        if isinstance(value, int):
            self.s = "%04x" % value
        else:
            self.s = str(value).lower()

    def __eq__(self, other):
        return isinstance(other, UUID) and other.s == self.s

    def __str__(self):
        return self.s

    def __repr__(self):
        return "UUID('%s')" % self.s


class _Radio:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # the unix port's connect() takes a raw struct sockaddr_un (family, path, NUL)
        self.sock.connect(struct.pack("<H", socket.AF_UNIX) + path.encode() + b"\0")
        self.lock = _thread.allocate_lock()
        self.events = []
        self.scheduled = False
        self.ble = None

    def send(self, op, payload):
        msg = op + struct.pack(">H", len(payload)) + payload
        with self.lock:
            self.sock.write(msg)  # a blocking stream write: all of it

    def _recv_exact(self, n):
        out = b""
        while len(out) < n:
            d = self.sock.recv(n - len(out))
            if not d:
                return None
            out += d
        return out

    def reader(self):
        while True:
            head = self._recv_exact(3)
            if head is None:
                return
            n = struct.unpack(">H", head[1:3])[0]
            payload = self._recv_exact(n) if n else b""
            if payload is None:
                return
            with self.lock:
                self.events.append((head[0:1], payload))
                need = not self.scheduled
                self.scheduled = True
            if need:
                self._schedule()

    def _schedule(self):
        while True:
            try:
                micropython.schedule(self._drain, None)
                return
            except RuntimeError:  # the schedule queue is full: try again
                import time

                time.sleep_ms(1)

    def _drain(self, _):
        with self.lock:
            events = self.events
            self.events = []
            self.scheduled = False
        ble = self.ble
        for op, p in events:
            if ble is not None:
                ble._event(op, p)


_radio = None


def _connect(hw):
    global _radio
    _radio = _Radio(hw + "/ble.sock")
    _thread.start_new_thread(_radio.reader, ())


class BLE:
    _instance = None

    def __new__(cls, *args):
        if BLE._instance is None:
            BLE._instance = object.__new__(cls)
            BLE._instance._init()
        return BLE._instance

    def __init__(self, *args):
        pass

    def _init(self):
        self._active = False
        self._irq = None
        self._values = {}
        self._sizes = {}
        self._append = {}
        self._config = {"gap_name": "MPY BLE", "mtu": 23, "mac": (1, b"\xc0\x00\x00\x00\x00\x01")}
        _radio.ble = self

    def active(self, flag=None):
        if flag is not None:
            self._active = bool(flag)
            if not flag:
                self.gap_advertise(None)
        return self._active

    def config(self, *args, **kw):
        if args:
            if args[0] not in self._config:
                raise ValueError("unknown config param")
            return self._config[args[0]]
        for k in kw:
            if k not in ("gap_name", "mtu", "bond", "le_secure", "mitm", "io", "rxbuf", "addr_mode"):
                raise ValueError("unknown config param")
        self._config.update(kw)
        _radio.send(b"C", json.dumps({k: v for k, v in kw.items() if isinstance(v, (str, int, bool))}).encode())

    def irq(self, handler):
        self._irq = handler

    def _check_active(self):
        if not self._active:
            raise OSError(19)  # ENODEV, as the ports say when the radio is off

    def gatts_register_services(self, services):
        self._check_active()
        handles = []
        spec = []
        h = 0
        for uuid, chars in services:
            hs = []
            cs = []
            for c in chars:
                h += 1
                self._values[h] = b""
                self._sizes[h] = 20
                self._append[h] = False
                hs.append(h)
                cs.append([str(c[0]), c[1], h])
            handles.append(tuple(hs))
            spec.append([str(uuid), cs])
        _radio.send(b"R", json.dumps(spec).encode())
        return tuple(handles)

    def gatts_read(self, handle):
        v = self._values[handle]
        if self._append[handle]:
            self._values[handle] = b""
        return v

    def gatts_write(self, handle, data, send_update=False):
        self._values[handle] = bytes(data)[:self._sizes[handle]]

    def gatts_set_buffer(self, handle, size, append=False):
        self._sizes[handle] = size
        self._append[handle] = append

    def gatts_notify(self, conn, handle, data=None):
        self._check_active()
        if data is None:
            data = self._values[handle]
        _radio.send(b"N", struct.pack(">HH", conn, handle) + bytes(data))

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        if interval_us is None:
            _radio.send(b"A", b"{}")
            return
        self._check_active()
        msg = {"interval_us": interval_us,
               "adv": binascii.hexlify(bytes(adv_data or b"")).decode(),
               "resp": binascii.hexlify(bytes(resp_data or b"")).decode()}
        _radio.send(b"A", json.dumps(msg).encode())

    def gap_pair(self, conn):
        _radio.send(b"Q", struct.pack(">H", conn))

    def gap_passkey(self, conn, action, passkey):
        _radio.send(b"P", struct.pack(">HBI", conn, action, passkey & 0xFFFFFFFF))

    def gap_disconnect(self, conn):
        _radio.send(b"D", struct.pack(">H", conn))
        return True

    def _event(self, op, p):
        irq = self._irq
        if op == b"w":
            conn, handle = struct.unpack(">HH", p[:4])
            data = p[4:]
            if handle in self._values:
                size = self._sizes[handle]
                if self._append[handle]:
                    self._values[handle] = (self._values[handle] + data)[:size]
                else:
                    self._values[handle] = data[:size]
                if irq:
                    irq(3, (conn, handle))
        elif op == b"c":
            conn = struct.unpack(">H", p[:2])[0]
            if irq:
                irq(1, (conn, p[2], memoryview(p[3:9])))
        elif op == b"d":
            conn = struct.unpack(">H", p[:2])[0]
            if irq:
                irq(2, (conn, 0, memoryview(b"\x00" * 6)))
        elif op == b"e":
            conn, enc, auth, bonded = struct.unpack(">HBBB", p[:5])
            if irq:
                irq(28, (conn, bool(enc), bool(auth), bool(bonded), 16 if enc else 0))
        elif op == b"p":
            conn, action, passkey = struct.unpack(">HBI", p[:7])
            if irq:
                irq(31, (conn, action, passkey))
        elif op == b"g":
            req, sec_type, index, has_key = struct.unpack(">HBBB", p[:5])
            value = irq(29, (sec_type, index, memoryview(p[5:]) if has_key else None)) if irq else None
            if value is None:
                _radio.send(b"G", struct.pack(">HB", req, 0))
            else:
                _radio.send(b"G", struct.pack(">HB", req, 1) + bytes(value))
        elif op == b"s":
            req, sec_type, n = struct.unpack(">HBB", p[:4])
            key = memoryview(p[4:4 + n])
            value = memoryview(p[5 + n:]) if p[4 + n] else None
            ok = irq(30, (sec_type, key, value)) if irq else False
            _radio.send(b"S", struct.pack(">HB", req, 1 if ok else 0))
        elif op == b"m":
            conn, mtu = struct.unpack(">HH", p[:4])
            if irq:
                irq(21, (conn, mtu))
