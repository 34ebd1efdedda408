"""The update mode: the one deliberate way from a provisioned wallet to a REPL (issue 12).

Entered by holding the cancel button at power-on (wallet.app.main asks board.buttons.held).
The display asks whether to wipe the wallet's keys:

    UPDATE MODE / wipe keys? / OK=wipe / cancel=keep

- confirm (OK): wipe(storage_root): every file of the wallet's storage is overwritten with
  zeros and removed, the key record (config.a / config.b / config.tmp, where wallet.core keeps
  the key it shares with its provider) last, so a power cut in the middle leaves either a wallet
  that still holds its key (and stays locked: wipe again) or one without. The wallet is then
  unprovisioned: its USB serial port hands over to the REPL on request as before provisioning
  (`amiko flash`, mpremote), and `amiko wallet provision` pairs it again. Read its history
  first (`amiko wallet history`): the proofs of payment go with the rest.
- cancel, or no answer within DECIDE_MS: nothing changes, the wallet starts as usual (locked).

Overwriting is best effort: a flash file system (LittleFS, FAT) may write the zeros to other
blocks and leave the old ones until they are reused; see hardware/key-protection.md.
A provider-signed update that keeps the keys is not implemented: the wipe is the only path.
"""

import os

DECIDE_MS = 60000
KEY_FILES = ("config.a", "config.b", "config.tmp")
_ZEROS = bytes(64)
WIPED = ["keys wiped", "REPL open", "provision again"]


def holds_keys(root):
    try:
        names = os.listdir(root)
    except OSError:
        return False
    for name in KEY_FILES:
        if name in names:
            return True
    return False


def _overwrite(path):
    try:
        size = os.stat(path)[6]
        with open(path, "wb") as f:
            while size > 0:
                f.write(_ZEROS[:size] if size < len(_ZEROS) else _ZEROS)
                size -= len(_ZEROS)
    except OSError:
        pass


def wipe(root):
    try:
        names = os.listdir(root)
    except OSError:
        return
    names = [n for n in names if n not in KEY_FILES] + [n for n in KEY_FILES if n in names]
    for name in names:
        path = root + "/" + name
        _overwrite(path)
        try:
            os.remove(path)
        except OSError:
            pass
        sync = getattr(os, "sync", None)
        if sync is not None:
            sync()


def _show(board, *lines):
    if board.display is not None:
        board.display.show(list(lines))


def run(board, root):
    """The update mode's dialogue; True if the keys were wiped."""
    if not holds_keys(root):
        _show(board, "UPDATE MODE", "no keys", "REPL open")
        return False
    _show(board, "UPDATE MODE", "wipe keys?", "OK=wipe", "cancel=keep")
    board.led.set("busy")
    start = board.ticks_ms()
    while True:
        event = board.buttons.poll()
        if event == "confirm":
            wipe(root)
            _show(board, *WIPED)
            board.led.set("idle")
            return True
        if event == "cancel" or board.ticks_ms() - start > DECIDE_MS:
            board.led.set("idle")
            return False
        board.sleep_ms(20)
