"""The wallet's main loop: frames in from every transport, through the wallet, frames out.

main() is what main.py runs at boot: the board, then the update mode if the cancel button is
held at power-on (wallet/maintenance.py: wipe the keys), then run(board).
run(board) never returns on a board, except on a wallet without keys when the host asks for
the REPL (the bytes \\x03\\x03 or \\x03\\x01 arriving while no frame is in progress and
before any frame magic in the same read), so that `amiko flash` and mpremote work before
provisioning. A provisioned wallet is locked (App.locked, from the boot on or from the
Provision frame on): its ports carry wallet frames only, Ctrl-C and Ctrl-A are bytes like any
other (board/usb_serial.py lock()), and main.py resets the board instead of ever falling
through to the REPL. One FrameDecoder per
transport, preallocated; MAX_FRAME bounds every frame (a larger one is refused by its
header, before its body is buffered). Answers go out on the transport the request came in
on (the last one that sent a frame).
"""

import gc
import os

# Start-up as on a device: the modules one at a time with a collection after each, so that a module's
# loading garbage is freed before the next one loads and the live objects pack into the low heap
# instead of leaving holes between them (from .mpy files that saved about 5 KiB of a 32-bit heap,
# enough for the 2 KiB frame buffers to find room; bench/RESULTS.md, issue 13).
for _name in ("amiko_core.errors", "amiko_core.cbor", "amiko_core.hashing", "amiko_core.frame", "amiko_core.ids",
              "amiko_core.token", "amiko_core.messages", "amiko_core.walletlink", "amiko_core.paylink",
              "wallet.storage", "wallet.core"):
    __import__(_name)
    gc.collect()
del _name

from amiko_core import frame  # noqa: E402
from amiko_core.walletlink import HELLO  # noqa: E402,F401 (registers the wallet-link messages)

from wallet.core import ERR_REFUSED, Wallet  # noqa: E402
from wallet.storage import Storage  # noqa: E402

MAX_FRAME = 2048
_READ = 256
_REPL_KEYS = (b"\x03\x03", b"\x03\x01")
NO_REPL = "no REPL: this wallet is provisioned; for its update mode hold cancel at power-on"


class ReplRequested(Exception):
    pass


def _repl_requested(chunk):
    """An escape before the first frame magic of a chunk that starts outside any frame."""
    magic = chunk.find(frame.MAGIC)
    for k in _REPL_KEYS:
        i = chunk.find(k)
        if i >= 0 and (magic < 0 or i < magic):
            return True
    return False


def _enable_ctrl_c():
    try:
        import micropython

        micropython.kbd_intr(3)
    except (ImportError, AttributeError):
        pass


class App:
    def __init__(self, board, storage=None, timeouts=None):
        self.board = board
        self.storage = storage or Storage(board.storage_root)
        self.wallet = Wallet(board, self.storage, timeouts)
        transports = getattr(board, "transports", None) or [board.serial]
        self.ports = [(t, frame.FrameDecoder(MAX_FRAME)) for t in transports]
        self.buf = bytearray(_READ)
        self.mv = memoryview(self.buf)
        self.reply_to = self.ports[0][0]
        self.locked = False
        self._lock_if_provisioned()
        if not self.locked:  # a key whose provisioning never finished must not meet an open REPL
            try:
                os.remove(self.storage.root + "/config.tmp")
            except OSError:
                pass

    def _lock_if_provisioned(self):
        if self.locked or not self.wallet.provisioned():
            return
        self.locked = True
        for port, _ in self.ports:
            lock = getattr(port, "lock", None)
            if lock is not None:
                lock()

    def step(self):
        """One round: read what is there, handle it, write answers; True if bytes came in."""
        got = False
        w = self.wallet
        w.poll(self.board.ticks_ms())
        for port, dec in self.ports:
            n = port.read_into(self.buf)
            if not n:
                continue
            got = True
            chunk = self.mv[:n]
            if not self.locked and dec.pending() == 0 and _repl_requested(bytes(chunk)):
                self._flush()
                _enable_ctrl_c()
                raise ReplRequested()
            bad = dec.bad_frames
            frames = dec.feed(chunk)
            self.reply_to = port
            if getattr(port, "repl_knocks", 0):  # a host asking for the REPL of a locked wallet: say no
                port.repl_knocks = 0
                w.error(ERR_REFUSED, NO_REPL)
            if dec.bad_frames != bad:
                w.on_bad_frame(dec.last_error)
            for fr in frames:
                w.on_frame(fr)
            self._lock_if_provisioned()
        self._flush()
        return got

    def _flush(self):
        for data in self.wallet.take_output():
            self.reply_to.write(data)

    def run(self):
        while True:
            if not self.step():
                self.board.sleep_ms(5)


def run(board, banner=None):
    """The wallet loop; returns only when a wallet without keys hands its port to the REPL.
    banner: lines for the display instead of the wallet's own (after the update mode)."""
    app = App(board)
    if banner and board.display is not None:
        board.display.show(banner)
    try:
        app.run()
    except ReplRequested:
        return


def _config():
    import json

    try:
        with open("config.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main():
    import board as boards

    b = boards.select(_config())
    banner = None
    if b.buttons.held("cancel"):
        b.sleep_ms(50)  # held, not a bounce
        if b.buttons.held("cancel"):
            from wallet import maintenance

            if maintenance.run(b, b.storage_root):
                banner = maintenance.WIPED
    run(b, banner)
