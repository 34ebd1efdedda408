"""The wallet's main loop: frames in from every transport, through the wallet, frames out.

run(board) never returns on a board (until the host asks for the REPL: the bytes
\\x03\\x03 or \\x03\\x01 arriving while no frame is in progress and before any frame
magic in the same read). One FrameDecoder per
transport, preallocated; MAX_FRAME bounds every frame (a larger one is refused by its
header, before its body is buffered). Answers go out on the transport the request came in
on (the last one that sent a frame).
"""

from amiko_core import frame
from amiko_core.walletlink import HELLO  # noqa: F401 (registers the wallet-link messages)

from wallet.core import Wallet
from wallet.storage import Storage

MAX_FRAME = 2048
_READ = 256
_REPL_KEYS = (b"\x03\x03", b"\x03\x01")


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
            if dec.pending() == 0 and _repl_requested(bytes(chunk)):
                self._flush()
                _enable_ctrl_c()
                raise ReplRequested()
            bad = dec.bad_frames
            frames = dec.feed(chunk)
            self.reply_to = port
            if dec.bad_frames != bad:
                w.on_bad_frame(dec.last_error)
            for fr in frames:
                w.on_frame(fr)
        self._flush()
        return got

    def _flush(self):
        for data in self.wallet.take_output():
            self.reply_to.write(data)

    def run(self):
        while True:
            if not self.step():
                self.board.sleep_ms(5)


def run(board):
    app = App(board)
    try:
        app.run()
    except ReplRequested:
        raise KeyboardInterrupt()
