"""The virtual board's hardware (MicroPython unix port under `amiko emulate`).

The emulator's ROM provides module `_vboard` (the virtual board's `machine`, so to speak):
    _vboard.buttons  file opened for reading at its end; the host appends "confirm\\n"/"cancel\\n"
    _vboard.events   file opened for appending; each write here is one JSON line the host reads
    _vboard.held     names of the buttons held down at this boot (`amiko emulate press cancel --at-boot`)
Display and LED behave like the real ones as far as the wallet can tell: show() keeps at most
4 lines clipped to width // 8 characters (what the SSD1306 would draw), set() refuses
unknown states.
"""

import json

import _vboard

from board import LED_STATES


def _emit(obj):
    _vboard.events.write((json.dumps(obj) + "\n").encode())


def log(text):
    """A line for the host's log of the board (HOME/hw/events: {"log": text})."""
    _emit({"log": str(text)})


class Display:
    def __init__(self, spec):
        self.columns = spec.get("width", 128) // 8

    def show(self, lines):
        shown = [str(line)[:self.columns] for line in lines[:4]]
        _emit({"display": shown})


class Buttons:
    def __init__(self):
        self._pending = b""

    def poll(self):
        data = _vboard.buttons.read(64)
        if data:
            self._pending += data
        i = self._pending.find(b"\n")
        if i < 0:
            return None
        name = self._pending[:i].decode().strip()
        self._pending = self._pending[i + 1:]
        return name if name in ("confirm", "cancel") else None

    def held(self, name):
        return name in getattr(_vboard, "held", ())


class Led:
    def __init__(self):
        self.state = None

    def set(self, state):
        if state not in LED_STATES:
            raise ValueError("led: unknown state %r" % (state,))
        if state != self.state:
            self.state = state
            _emit({"led": state})
