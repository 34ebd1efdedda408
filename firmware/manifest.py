# MicroPython FROZEN_MANIFEST of a wallet image: the firmware and shared/amiko_core frozen into the
# image (their bytecode stays in flash instead of being loaded into the heap). Runs in MicroPython's
# tools/manifestfile.py (CPython, at build time), not on the board. The board is named by the
# AMIKO_BOARD environment variable (a boards.json id); its modules are chosen as `amiko flash` chooses
# them (amiko.flash.sources: board modules the entry does not use are left out; tests/test_manifest.py
# checks the two agree). main.py is not frozen: the runtime runs /main.py from the filesystem.
#
#   AMIKO_BOARD=ESP32_GENERIC make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$PWD/firmware/manifest.py
# (see firmware/README.md)
import json
import os

_FIRMWARE = os.getcwd()  # manifestfile.py runs a manifest in its own directory
_ROOT = os.path.dirname(_FIRMWARE)
_REAL_ONLY = ("ssd1306.py", "buttons.py", "led.py")
_VIRTUAL_ONLY = ("virtual.py",)

_board_id = os.environ.get("AMIKO_BOARD")
if not _board_id:
    raise Exception("set AMIKO_BOARD to the board's id in boards.json (e.g. ESP32_GENERIC, VIRTUAL)")
with open(os.path.join(_ROOT, "boards.json")) as _f:
    _entry = [b for b in json.load(_f)["boards"] if b["id"] == _board_id]
if not _entry:
    raise Exception("AMIKO_BOARD=%s is not in boards.json" % _board_id)
_port = _entry[0]["port"]

if _port != "unix":
    # the port's own frozen modules (e.g. esp32: _boot.py, which mounts the filesystem)
    include("$(PORT_DIR)/boards/manifest.py")

_skip = _VIRTUAL_ONLY if _port != "unix" else _REAL_ONLY
package("wallet", base_path=_FIRMWARE)
package("board", base_path=_FIRMWARE,
        files=sorted(n for n in os.listdir(os.path.join(_FIRMWARE, "board")) if n.endswith(".py") and n not in _skip))
package("amiko_core", base_path=os.path.join(_ROOT, "shared"))
