"""Entry point on the board: the wallet, and never the REPL while the flash holds a wallet key.

The keyboard interrupt goes off in the first statement, before any jump or loop (where
MicroPython raises a pending Ctrl-C). wallet.app.main() runs the wallet (first the update
mode, if the cancel button is held at power-on); it returns only when a wallet without keys
sees the host ask for the REPL (`amiko flash`, mpremote). Whatever ends it, an exception or
a Ctrl-C that came in before the first statement, the board is reset if its storage holds a
wallet key (config.a / config.b / config.tmp in storage_root): a provisioned wallet never
falls through to the REPL. A wallet without keys falls through as MicroPython always does.
"""

import micropython

micropython.kbd_intr(-1)

_error = None
try:
    from wallet import app

    app.main()
except BaseException as e:  # noqa: B036 (KeyboardInterrupt and SystemExit included, on purpose)
    _error = e


def _holds_keys():
    import json
    import os

    root = "/data"
    try:
        with open("config.json") as f:
            root = (json.load(f).get("settings") or {}).get("storage_root") or root
    except (OSError, ValueError, AttributeError):
        pass
    try:
        names = os.listdir(root)
    except OSError:
        return False
    for name in ("config.a", "config.b", "config.tmp"):
        if name in names:
            return True
    return False


try:
    _locked = _holds_keys()
except BaseException:  # noqa: B036
    _locked = True
if _locked:
    import machine

    machine.reset()
if _error is not None:
    import sys

    sys.print_exception(_error)
micropython.kbd_intr(3)
