"""Board layer: select(cfg) builds the Board for the board this firmware runs on.

The building is board/setup.py, imported by select() and dropped from sys.modules once it has run
(boot-only code: with the firmware as .mpy files its bytecode would otherwise stay in the heap).

cfg is /config.json as `amiko flash` writes it:
    {"board": <the board's entry from boards.json>, "settings": {...}, "flashed": {...}}

The Board (duck-typed; the wallet only uses these names):
    serial        USB serial transport: read_into(buf) -> n (non-blocking, 0 if nothing), write(data)
    transports    [serial] (+ ble: board/ble.py when the entry lists "ble" and `bluetooth` exists;
                  + nfc: board/nfc_card.py when the entry (or settings["nfc"]) has a PN532;
                  same read_into/write API)
    display       None or show(lines): up to 4 short str (longer lines are clipped to the width)
    buttons       poll() -> "confirm" | "cancel" | None (non-blocking, one event per press);
                  held(name) -> True while that button is down (at boot: the update mode);
                  a board without buttons has one whose poll() is always None
    led           set(state), state in LED_STATES (a board without LED ignores it)
    storage_root  directory for wallet state files (created if missing)
    info          {"id": board id, "port": MicroPython port, "transports": [names]}
    ticks_ms(), sleep_ms(ms), random(n) -> n bytes from os.urandom

One module per kind of hardware, chosen by the entry's "ui" and "transports":
usb_serial (every board), ssd1306 / buttons / led (real boards: need `machine`),
virtual (port "unix": the emulator's simulated hardware, module `_vboard`),
pn532 + nfc_card (an ISO-DEP card through a PN532: the entry's transports.nfc, or the
virtual board's simulated chip `_vboard.pn532`), ble.
"""

import os
import time

LED_STATES = ("idle", "busy", "ok", "error")
DEFAULT_STORAGE_ROOT = "/data"


class NoButtons:
    def poll(self):
        return None

    def held(self, name):
        return False


class NoLed:
    def set(self, state):
        if state not in LED_STATES:
            raise ValueError("led: unknown state %r" % (state,))


class Board:
    def __init__(self, info, serial, display, buttons, led, storage_root):
        self.info = info
        self.serial = serial
        self.transports = [serial]
        self.display = display
        self.buttons = buttons
        self.led = led
        self.storage_root = storage_root

    def ticks_ms(self):
        return time.ticks_ms()

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def random(self, n):
        return os.urandom(n)


def select(cfg):
    import sys

    from board import setup

    try:
        return setup.select(cfg)
    finally:
        del sys.modules["board.setup"]
        globals().pop("setup", None)  # the package's attribute, set by the import
