"""Virtual boards: the wallet firmware on the MicroPython unix port (see emulator.py for HOME's layout).

Python API for tests and tools:

    board = VirtualBoard(home, heapsize=None).start()   # returns once the pty exists
    board.pty                  # "/dev/pts/N": the board's USB serial port
    board.flash                # HOME/flash, the board's filesystem
    board.press("confirm")     # or "cancel"
    board.screen()             # the lines the display shows now ([] before the first show())
    board.led()                # the LED state ("idle", "busy", "ok", "error") or None
    board.wait_for_screen(text_or_predicate, timeout=10) -> lines
    board.power_cycle()        # kill micropython and boot again (a power cut)
    board.boots()              # boots so far: power-on, reset, soft reset (mpremote soft-resets on connect)
    board.stop()

press/screen/led also work on a board started by another process (`amiko emulate`): they
only use the files in HOME.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from amiko.emulate.emulator import EmulatorError, layout, prepare_home

BUTTONS = ("confirm", "cancel")


def press(home, button):
    if button not in BUTTONS:
        raise EmulatorError("no button %r on the virtual board: use one of %s" % (button, ", ".join(BUTTONS)))
    paths = prepare_home(home)
    # one write of one short line: appends of at most PIPE_BUF bytes are never interleaved
    fd = os.open(paths["buttons"], os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (button + "\n").encode())
    finally:
        os.close(fd)


def events(home):
    """Every hardware event the board has reported, oldest first (dicts)."""
    path = layout(home)["events"]
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    found = []
    for line in data.split(b"\n"):
        if line.strip():
            try:
                found.append(json.loads(line))
            except ValueError:
                pass  # a line being written right now
    return found


def _last(home, key, default):
    for ev in reversed(events(home)):
        if key in ev:
            return ev[key]
    return default


def screen(home):
    return _last(home, "display", [])


def led(home):
    return _last(home, "led", None)


def running(home):
    """The running emulator's emulator.json (dict), or None."""
    try:
        with open(layout(home)["state"]) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    try:
        os.kill(info["pid"], 0)
    except (OSError, KeyError, TypeError):
        return None
    return info


class VirtualBoard:
    def __init__(self, home, heapsize=None, ble=False):
        self.home = str(Path(home).resolve())
        self.heapsize = heapsize
        self.ble = ble  # a simulated BLE radio (emulate/ble_radio.py); self.info["ble"]["hci"] reaches it
        self.proc = None
        self.info = None
        prepare_home(self.home)

    @property
    def flash(self):
        return layout(self.home)["flash"]

    @property
    def pty(self):
        return self.info["pty"] if self.info else None

    def start(self, timeout=10):
        if running(self.home):
            raise EmulatorError("a virtual board already runs in %s" % self.home)
        cmd = [sys.executable, "-m", "amiko.emulate", self.home, str(self.heapsize or "")] + (["ble"] if self.ble else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise EmulatorError("the emulator did not start (see %s)" % layout(self.home)["log"])
        self.info = json.loads(line)
        return self

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()

    def press(self, button):
        press(self.home, button)

    def screen(self):
        return screen(self.home)

    def led(self):
        return led(self.home)

    def events(self):
        return events(self.home)

    def boots(self):
        return sum(1 for ev in events(self.home) if "boot" in ev)

    def wait_for_screen(self, want, timeout=10):
        """Wait until the display shows `want` (a substring of one line, or a predicate on the lines)."""
        check = want if callable(want) else (lambda lines: any(want in line for line in lines))
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if check(lines):
                return lines
            if time.monotonic() > deadline:
                raise EmulatorError("virtual board display never showed %r within %s s; it shows %r"
                                    % (want, timeout, lines))
            time.sleep(0.02)

    def power_cycle(self):
        if self.proc is None:
            raise EmulatorError("the virtual board in %s is not running" % self.home)
        os.kill(self.proc.pid, signal.SIGUSR1)
