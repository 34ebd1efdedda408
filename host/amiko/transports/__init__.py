"""Byte transports to a wallet, chosen by a URL-like string.

    serial:/dev/ttyACM0[?baud=115200]   a USB CDC / UART port (pyserial), or a pty
    ble:NAME | ble:ADDRESS[?hci=BUMBLE_TRANSPORT&timeout=S]   a wallet over Bluetooth LE (bleak; see ble.py)

    nfc:usb | nfc:usb:VID:PID | nfc:tty:USB0:pn532 | nfc:udp:HOST:PORT   nfcpy reader (see nfc.py)

open_transport(spec) -> a transport with `async read() -> bytes` (b"" when closed),
`write(data)`, `close()`; and the blocking `read_blocking(timeout)` for synchronous tools.
"""


def open_transport(spec):
    if spec.startswith("serial:"):
        from amiko.transports.serial import SerialTransport

        return SerialTransport.from_spec(spec)
    if spec.startswith("ble:"):
        from amiko.transports.ble import BleTransport

        return BleTransport.from_spec(spec)
    if spec.startswith("nfc:"):
        from amiko.transports.nfc import NfcTransport

        return NfcTransport.from_spec(spec)
    if spec.startswith("/dev/"):
        from amiko.transports.serial import SerialTransport

        return SerialTransport.from_spec("serial:" + spec)
    raise ValueError("unknown transport %r: use serial:/dev/PORT" % spec)
