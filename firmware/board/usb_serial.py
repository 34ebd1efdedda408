"""Frames over the USB serial port (USB CDC, or the USB-UART bridge; the pty on the virtual board).

Bytes go through sys.stdin.buffer / sys.stdout.buffer, the port MicroPython's REPL uses.
While the app runs the keyboard interrupt is off (micropython.kbd_intr(-1)): a frame body
may contain 0x03. read_into() never blocks: it reads one byte at a time while select.poll
says one is there, so it never takes a byte that the REPL should see after an exit.

"Host wants the REPL": mpremote and other tools send "\\r\\x03" (Ctrl-C) then "\\r\\x01"
(Ctrl-A). A 0x03 byte that arrives while no frame is in progress re-enables the keyboard
interrupt and raises KeyboardInterrupt out of read_into(); main.py ends and the board drops
to the REPL, where the following Ctrl-A (still unread) enters the raw REPL. The wallet
must not catch KeyboardInterrupt (it is not an Exception). "No frame in progress" is
tracked here from the frame header (amiko_core.frame: magic A5 4B, version, type, length,
CRC-8): after a header whose CRC-8 checks, the next length+4 bytes are frame bytes. A frame
whose bytes stop coming for FRAME_GAP_MS is abandoned (a host that died mid-frame must not
leave the port deaf to Ctrl-C). It is
KeyboardInterrupt, not SystemExit: SystemExit in main.py soft-resets the board, which would
run main.py again instead of giving the host the REPL.

lock(): a provisioned wallet's port carries wallet frames only (issue 12). From then on every
byte is data, Ctrl-C and Ctrl-A included (they reach the frame decoder, which skips them;
an out-of-frame Ctrl-C or Ctrl-A is counted in repl_knocks, which the app answers with a Refused frame);
the keyboard interrupt stays off and nothing here hands the port to the REPL again, until the
next boot (where only a wallet without keys unlocks: wallet/app.py, main.py).
"""

import sys
import select
import time
import micropython

from amiko_core.frame import crc8, DEFAULT_MAX_FRAME, OVERHEAD, HEADER_SIZE

CTRL_A = 0x01
CTRL_C = 0x03
FRAME_GAP_MS = 500
_MAGIC0 = 0xA5
_MAGIC1 = 0x4B


class USBSerial:
    name = "usb_serial"

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)
        self._byte = bytearray(1)
        self._header = bytearray(HEADER_SIZE)
        self._header_len = 0
        self._remaining = 0  # frame bytes still to come after a valid header
        self._max_body = max_frame - OVERHEAD
        self._last = time.ticks_ms()
        self.locked = False
        self.repl_knocks = 0  # out-of-frame Ctrl-Cs seen while locked
        micropython.kbd_intr(-1)

    def lock(self):
        """Wallet frames only from now on: no Ctrl-C escape to the REPL (a provisioned wallet)."""
        self.locked = True
        micropython.kbd_intr(-1)

    def _ready(self):
        for _ in self._poll.ipoll(0):
            return True
        return False

    def read_into(self, buf):
        """Read the bytes that are already there (at most len(buf)); returns how many, 0 if none."""
        n = 0
        size = len(buf)
        one = self._byte
        if not self._ready():
            return 0
        now = time.ticks_ms()
        if (self._remaining or self._header_len) and time.ticks_diff(now, self._last) > FRAME_GAP_MS:
            self._remaining = 0
            self._header_len = 0
        self._last = now
        while n < size and self._ready():
            if self._in.readinto(one) != 1:
                break
            b = one[0]
            if self._track(b) and (b == CTRL_C or b == CTRL_A):
                if self.locked:
                    self.repl_knocks += 1  # the app answers that there is no REPL here
                elif b == CTRL_C:
                    self.exit_to_repl()
            buf[n] = b
            n += 1
        return n

    def _track(self, b):
        """Follow frame boundaries; True if b is outside any frame (not a frame's header or body)."""
        if self._remaining:
            self._remaining -= 1
            return False
        if self._header_len:
            h = self._header
            if self._header_len == 1 and b != _MAGIC1:
                self._header_len = 0
                return self._track(b)
            h[self._header_len] = b
            self._header_len += 1
            if self._header_len == HEADER_SIZE:
                self._header_len = 0
                length = (h[4] << 8) | h[5]
                if crc8(h, 0, 6) == h[6] and length <= self._max_body:
                    self._remaining = length + 4
            return False
        if b == _MAGIC0:
            self._header[0] = b
            self._header_len = 1
            return False
        return True

    def in_frame(self):
        return bool(self._remaining or self._header_len)

    def write(self, data):
        self._out.write(data)
        return len(data)

    def exit_to_repl(self):
        if self.locked:
            return
        micropython.kbd_intr(CTRL_C)
        raise KeyboardInterrupt

    def close(self):
        if not self.locked:
            micropython.kbd_intr(CTRL_C)
