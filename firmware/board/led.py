"""Status LED: a plain GPIO LED or one addressable RGB LED (WS2812, "neopixel").

Led(spec) with spec from boards.json ui.led:
    {"type": "gpio", "pin": N or "LED", "active": "high" | "low"}
    {"type": "neopixel", "pin": N}
set(state), state in board.LED_STATES:
    gpio:      idle off, busy blinking (PWM 8 Hz), ok on, error short flashes (PWM 8 Hz, 12 %)
    neopixel:  idle off, busy blue, ok green, error red
Needs `machine`: real boards only.
"""

from machine import Pin

_COLOURS = {"idle": (0, 0, 0), "busy": (0, 0, 32), "ok": (0, 32, 0), "error": (32, 0, 0)}


class Led:
    def __init__(self, spec):
        self.kind = spec["type"]
        self.pin = Pin(spec["pin"], Pin.OUT)
        self.on_value = 0 if spec.get("active", "high") == "low" else 1
        self.pwm = None
        self.np = None
        if self.kind == "neopixel":
            from neopixel import NeoPixel

            self.np = NeoPixel(self.pin, 1)
        self.state = None
        self.set("idle")

    def _stop_pwm(self):
        if self.pwm is not None:
            self.pwm.deinit()
            self.pwm = None
            self.pin.init(Pin.OUT)

    def _blink(self, duty_percent):
        try:
            from machine import PWM

            self.pwm = PWM(self.pin, freq=8)
            duty = duty_percent if self.on_value else 100 - duty_percent
            self.pwm.duty_u16(duty * 65535 // 100)
        except (ImportError, ValueError, OSError):  # no PWM this slow on this port: steady on
            self.pwm = None
            self.pin.value(self.on_value)

    def set(self, state):
        if state not in _COLOURS:
            raise ValueError("led: unknown state %r" % (state,))
        if state == self.state:
            return
        self.state = state
        if self.np is not None:
            self.np[0] = _COLOURS[state]
            self.np.write()
            return
        self._stop_pwm()
        if state == "idle":
            self.pin.value(1 - self.on_value)
        elif state == "ok":
            self.pin.value(self.on_value)
        else:
            self._blink(50 if state == "busy" else 12)
