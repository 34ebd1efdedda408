"""One wallet payment over the serial transport, in-process, for heap measurements on ports without
sockets or ptys (the WebAssembly port) and in small heaps (the 32-bit unix port).

    micropython wallet_heap_scenario.py record ROOT SCRIPT   the firmware's App pays the scripted payee
        and provider of wallet_world.py (provision, Tap, payment committed, history entry read back);
        SCRIPT gets, one line per App.step(), the bytes the wallet received before that step (hex, "-"
        for none), and last the sha256 of everything the wallet sent
    micropython wallet_heap_scenario.py replay ROOT SCRIPT   the same App, with nothing else in the heap:
        the recorded bytes are fed step by step; the wallet must send exactly what it sent while recording
        (same sha256) and end with the payment in its history. Prints one JSON line:
        {"ok": true, "boot": live bytes after start-up, "live": peak live after gc.collect() at a step
         boundary, "step": peak gc.mem_alloc() before that collect (live + the step's garbage), "heap": total}

The wallet is deterministic (it has no randomness of its own, its clock is the board's ticks, 5 ms a
step), so a replay is the recorded payment; the world's PayeeSession, provider and their garbage stay
out of the measured heap. Exit status 1 and a JSON line with "error" when the replay fails (MemoryError
in a heap too small, or the wallet diverged). Start-up is the firmware's (main.py: App(board) first).
"""

import gc
import sys

gc.collect()

from wallet.app import App  # noqa: E402 (first, as main.py imports it before app.main() selects the board)
import board  # noqa: E402
from board import NoButtons, NoLed  # noqa: E402
from board import usb_serial  # noqa: E402,F401 (loaded as board.select() loads it; its I/O is Serial below)

gc.collect()

STEP_MS = 5


class Serial:
    def __init__(self):
        self.inbox = b""
        self.pos = 0
        self.out = []

    def read_into(self, buf):
        n = min(len(buf), len(self.inbox) - self.pos)
        if n:
            buf[:n] = self.inbox[self.pos:self.pos + n]
            self.pos += n
            if self.pos == len(self.inbox):
                self.inbox = b""
                self.pos = 0
        return n

    def give(self, data):
        self.inbox = self.inbox[self.pos:] + data
        self.pos = 0

    def write(self, data):
        self.out.append(bytes(data))


class Board(board.Board):
    """The firmware's Board without a display (the smallest of boards.json), frames through Serial."""

    def __init__(self, root):
        board.Board.__init__(self, {"id": "heap-scenario", "port": "any", "transports": ["usb_serial"]}, Serial(),
                             None, NoButtons(), NoLed(), root)
        self.ms = 1000

    def ticks_ms(self):
        return self.ms

    def sleep_ms(self, ms):
        self.ms += ms

    def random(self, n):
        raise AssertionError("the wallet asked for randomness: a replay would diverge")


def _mkdir(path):
    import os

    try:
        os.mkdir(path)
    except OSError:
        pass


def record(root, script):
    from amiko_core import messages as m
    from amiko_core import walletlink as wl
    from amiko_core.hashing import sha256
    from wallet_world import World, provision_msg

    _mkdir(root)
    board = Board(root)
    app = App(board)
    world = World(amount=500)
    lines = []
    sent = []
    pending = [m.to_frame(provision_msg(auto=1000))]  # paid without a button
    stage = ["provision"]
    for _ in range(2000):
        data = b"".join(pending)
        pending = []
        lines.append(data.hex() if data else "-")
        if data:
            board.serial.give(data)
        app.step()
        board.sleep_ms(STEP_MS)
        out = board.serial.out
        board.serial.out = []
        sent.extend(out)
        for chunk in out:
            world.from_wallet(chunk)
        pending.extend(world.take())
        st = app.wallet.state
        if stage[0] == "provision" and app.wallet.provisioned():
            stage[0] = "pay"
            pending.append(m.to_frame(m.Message(wl.TAP, url="amikopay://127.0.0.1:4001/pay-1")))
        elif stage[0] == "pay" and st["pay"] is None and st["hist"] == 1:
            if not world.done or world.done[-1].state != wl.COMMITTED:
                raise AssertionError("payment not committed: %r" % (world.done,))
            stage[0] = "history"
            pending.append(m.to_frame(m.Message(wl.GET_HISTORY, index=0)))
        elif stage[0] == "history" and out:  # the HistoryEntry
            stage[0] = "done"
            break
    if stage[0] != "done":
        raise AssertionError("scenario stuck at " + stage[0])
    with open(script, "w") as f:
        for line in lines:
            f.write(line + "\n")
        f.write(sha256(b"".join(sent)).hex() + "\n")
    print('{"ok": true, "steps": %d}' % len(lines))


class Replay:
    """The replay one App.step() at a time: step() until it returns False, then finish().

    live is read at the start of each step(), after the previous step's gc.collect(): on the WebAssembly
    port a collection only runs once control is back in JavaScript (it cannot scan the wasm stack), so
    its runner calls step() once per runPython() and the collection happens in between."""

    def __init__(self, root, script):
        import hashlib

        _mkdir(root)
        self.board = Board(root)
        self.app = App(self.board)
        self.digest = hashlib.sha256()
        self.f = open(script)
        self.line = self.f.readline().strip()
        self.boot = None
        self.live = 0
        self.step_peak = 0
        gc.collect()

    def _sample_live(self):
        live = gc.mem_alloc()
        if self.boot is None:
            self.boot = live
        if live > self.live:
            self.live = live

    def step(self):
        from binascii import unhexlify

        self._sample_live()
        nxt = self.f.readline().strip()
        if not nxt:  # self.line is the digest
            return False
        if self.line != "-":
            self.board.serial.give(unhexlify(self.line))
        self.line = None
        self.app.step()
        self.board.sleep_ms(STEP_MS)
        for chunk in self.board.serial.out:
            self.digest.update(chunk)
        self.board.serial.out = []
        self.line = nxt
        step = gc.mem_alloc()
        if step > self.step_peak:
            self.step_peak = step
        gc.collect()
        return True

    def finish(self):
        self.f.close()
        if self.digest.digest().hex() != self.line:
            raise AssertionError("the wallet sent other bytes than while recording")
        st = self.app.wallet.state
        if st["pay"] is not None or st["hist"] != 1:
            raise AssertionError("the payment is not in the history")
        return '{"ok": true, "boot": %d, "live": %d, "step": %d, "heap": %d}' % (
            self.boot, self.live, self.step_peak, gc.mem_alloc() + gc.mem_free())


def replay(root, script):
    r = Replay(root, script)
    while r.step():
        pass
    print(r.finish())


def error_line(e):
    return '{"ok": false, "error": "%s: %s"}' % (type(e).__name__, str(e).replace('"', "'"))


def main(argv):
    mode, root, script = argv[0], argv[1], argv[2]
    try:
        (record if mode == "record" else replay)(root, script)
    except Exception as e:  # MemoryError included: a heap too small
        print(error_line(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
