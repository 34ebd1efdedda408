"""Run the wallet app on MicroPython with a fake board whose serial port is stdin/stdout.

    micropython wallet_stdio_driver.py ROOT CRASH_AT

Steps are counted: the storage steps of wallet.storage's step hook, and "sent" after each frame
the wallet wrote to its serial port (it has left: a power cut then cannot take it back). Every
step is reported on stderr as "STEP <n> <name>"; at step number CRASH_AT (1-based; -1 = never)
the driver writes "CRASH <n> <name>" instead and hangs, so that the test kills it there: a power
cut at exactly that point. Used by tests/wallet/test_wallet_powercut.py.
"""

import select
import sys
import time

from wallet.app import App
from wallet.storage import Storage

FAST = {"receipt": 2, "confirm": 5, "routing": 3, "locking": 2}


class StdioSerial:
    def __init__(self, step):
        self.step = step
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self.poll = select.poll()
        self.poll.register(sys.stdin, select.POLLIN)
        self.one = bytearray(1)

    def read_into(self, buf):
        n = 0
        while n < len(buf) and self.poll.poll(0):
            if self.inp.readinto(self.one) != 1:
                break
            buf[n] = self.one[0]
            n += 1
        return n

    def write(self, data):
        self.out.write(data)
        if hasattr(self.out, "flush"):
            self.out.flush()
        self.step("sent")


class Board:
    def __init__(self, root, step):
        self.serial = StdioSerial(step)
        self.transports = [self.serial]
        self.display = None
        self.buttons = None
        self.led = None
        self.storage_root = root
        self.info = {"id": "stdio", "transports": ["stdio"]}

    def ticks_ms(self):
        return time.ticks_ms()

    def sleep_ms(self, ms):
        time.sleep_ms(ms)


def main():
    root = sys.argv[1]
    crash_at = int(sys.argv[2])
    count = [0]

    def step(name):
        count[0] += 1
        if count[0] == crash_at:
            sys.stderr.write("CRASH %d %s\n" % (count[0], name))
            while True:
                time.sleep_ms(1000)
        sys.stderr.write("STEP %d %s\n" % (count[0], name))

    board = Board(root, step)
    app = App(board, Storage(root, step), FAST)
    sys.stderr.write("READY\n")
    while True:
        if not app.step():
            time.sleep_ms(2)


main()
