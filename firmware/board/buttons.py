"""Push buttons on GPIOs with debounce.

Buttons(spec) with spec from boards.json ui.buttons:
    {"type": "gpio", "active": "low", "pull": "up", "debounce_ms": 30,
     "pins": {"confirm": N, "cancel": N}}
poll() -> "confirm" | "cancel" | None, non-blocking: a press is reported once, when the
pin has read "pressed" for debounce_ms without change; releasing reports nothing.
held(name) -> True while that button is pressed now (read at boot: cancel held = update mode).
Needs `machine`: real boards only.
"""

import time
from machine import Pin


class _Button:
    def __init__(self, name, pin, pressed_value, pull):
        self.name = name
        self.pin = Pin(pin, Pin.IN, pull)
        self.pressed_value = pressed_value
        self.raw = self.pin.value() == pressed_value
        self.stable = self.raw  # a button held at boot is not a press
        self.changed = time.ticks_ms()


class Buttons:
    def __init__(self, spec):
        active_low = spec.get("active", "low") == "low"
        pull = {"up": Pin.PULL_UP, "down": Pin.PULL_DOWN, "none": None}[spec.get("pull", "up" if active_low else "down")]
        self.debounce_ms = spec.get("debounce_ms", 30)
        self.buttons = [_Button(name, pin, 0 if active_low else 1, pull) for name, pin in spec["pins"].items()]

    def poll(self):
        now = time.ticks_ms()
        event = None
        for b in self.buttons:
            raw = b.pin.value() == b.pressed_value
            if raw != b.raw:
                b.raw = raw
                b.changed = now
            elif raw != b.stable and time.ticks_diff(now, b.changed) >= self.debounce_ms:
                b.stable = raw
                if raw and event is None:
                    event = b.name
        return event

    def held(self, name):
        for b in self.buttons:
            if b.name == name:
                return b.pin.value() == b.pressed_value
        return False
