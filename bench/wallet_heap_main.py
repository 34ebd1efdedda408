# Test-only stand-in for firmware/main.py (bench/wallet.py puts it on a virtual board as /main.py,
# next to the unchanged flashed .mpy set): the same start-up as main.py, and the same loop as
# wallet.app.App.run(), plus heap sampling after every step that received bytes:
#   live  = gc.mem_alloc() after gc.collect() (what the firmware holds)
#   step  = gc.mem_alloc() before that collect: live at the previous step's end plus everything
#           allocated in this step (garbage included; no collection runs in between with a big heap)
# High-water marks go to the virtual board's event file as {"heap": {...}} lines; rom is
# _vboard.rom_alloc, the emulator ROM's own share, to subtract.
import gc
import json

import _vboard
import board
from wallet import app as wallet_app


def _config():
    try:
        with open("config.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


a = wallet_app.App(board.select(_config()))
gc.collect()
high = {"rom": _vboard.rom_alloc, "boot": gc.mem_alloc(), "live": 0, "step": 0, "steps": 0}


def _report():
    _vboard.events.write((json.dumps({"heap": high}) + "\n").encode())


_report()
try:
    while True:
        if a.step():
            step = gc.mem_alloc()
            gc.collect()
            live = gc.mem_alloc()
            high["steps"] += 1
            if step > high["step"] or live > high["live"]:
                high["step"] = max(high["step"], step)
                high["live"] = max(high["live"], live)
                _report()
        else:
            a.board.sleep_ms(5)
except wallet_app.ReplRequested:
    raise KeyboardInterrupt()
