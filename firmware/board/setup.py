"""select(cfg) of the board layer (see board/__init__.py): the Board for this board's cfg.

Only board.select() imports this module, once at boot, and drops it afterwards.
"""

import os

from board import DEFAULT_STORAGE_ROOT, Board, NoButtons, NoLed


def _ensure_dir(path):
    try:
        os.stat(path)
    except OSError:
        os.mkdir(path)


def _hardware(ui):
    """display, buttons, led of a real board (modules that need `machine`)."""
    display = None
    spec = ui.get("display")
    if spec and spec.get("type") == "ssd1306":
        try:
            from board import ssd1306
        except ImportError:  # a MicroPython build without framebuf/SoftI2C: no display
            ssd1306 = None
        try:
            display = ssd1306.Display(spec) if ssd1306 else None
        except OSError:  # no display answers on the bus: run without one
            display = None
    spec = ui.get("buttons")
    if spec and spec.get("type") == "gpio":
        from board import buttons as buttons_module

        buttons = buttons_module.Buttons(spec)
    else:
        buttons = NoButtons()
    spec = ui.get("led")
    if spec and spec.get("type") in ("gpio", "neopixel"):
        from board import led as led_module

        led = led_module.Led(spec)
    else:
        led = NoLed()
    return display, buttons, led


def _simulated(ui):
    from board import virtual

    display = virtual.Display(ui["display"]) if ui.get("display") else None
    buttons = virtual.Buttons() if ui.get("buttons") else NoButtons()
    led = virtual.Led() if ui.get("led") else NoLed()
    return display, buttons, led


def select(cfg):
    entry = cfg["board"]
    settings = cfg.get("settings") or {}
    ui = entry.get("ui") or {}
    from board.usb_serial import USBSerial

    serial = USBSerial()
    if entry["port"] == "unix":
        display, buttons, led = _simulated(ui)
    else:
        display, buttons, led = _hardware(ui)
    storage_root = settings.get("storage_root") or DEFAULT_STORAGE_ROOT
    _ensure_dir(storage_root)
    info = {"id": entry["id"], "port": entry["port"], "transports": [serial.name]}
    board = Board(info, serial, display, buttons, led, storage_root)
    ble = _ble(entry, settings, board)
    if ble is not None:
        board.transports.append(ble)
        info["transports"].append(ble.name)
    nfc = _nfc(entry, settings)
    if nfc is not None:
        board.transports.append(nfc)
        info["transports"].append(nfc.name)
    return board


def _nfc(entry, settings):
    """The ISO-DEP card (board/nfc_card.py) behind the entry's PN532 (settings["nfc"] overrides the
    entry, False disables it); on the virtual board the simulated PN532's UART, `_vboard.pn532`."""
    spec = settings.get("nfc")
    if spec is False:
        return None
    if entry["port"] == "unix":  # the virtual board: the emulator's simulated PN532, if it has one
        try:
            import _vboard
        except ImportError:
            return None
        if getattr(_vboard, "pn532", None) is None:
            return None
        spec = {"chip": "PN532", "bus": "uart", "file": _vboard.pn532}
    spec = spec or (entry.get("transports") or {}).get("nfc")
    if not spec or str(spec.get("chip", "")).upper() != "PN532":
        return None
    from board.nfc_card import open_card

    try:
        return open_card(spec)
    except (OSError, ValueError, ImportError):  # no chip / bus on this build: run without NFC
        return None


def _ble(entry, settings, board):
    """The BLE peripheral when the entry lists "ble" and the firmware has `bluetooth` (else None);
    it pairs through the board's display and buttons and keeps its bonds in the wallet's storage."""
    if not (entry.get("transports") or {}).get("ble") or settings.get("ble") is False:
        return None
    try:
        import bluetooth  # noqa: F401  (a port without it, or a virtual board without a radio)
    except ImportError:
        return None
    from board.ble import PAIR_TIMEOUT_MS, BLETransport
    from wallet.storage import Storage

    log = None
    if entry["port"] == "unix":
        from board import virtual

        log = virtual.log
    buttons = None if isinstance(board.buttons, NoButtons) else board.buttons
    return BLETransport(settings.get("ble_name") or "Amiko-%s" % entry["id"][:10], display=board.display,
                        buttons=buttons, storage=Storage(board.storage_root),
                        pair_timeout_ms=settings.get("ble_pair_timeout_ms") or PAIR_TIMEOUT_MS, log=log)
