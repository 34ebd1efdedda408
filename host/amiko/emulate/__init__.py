"""Virtual boards: the wallet firmware on the MicroPython unix port (see emulator.py for HOME's layout).

Python API for tests and tools:

    board = VirtualBoard(home, heapsize=None).start()   # returns once the pty exists
    VirtualBoard(home, hold=("cancel",))   # cancel held down at power-on (the wallet's update mode)
    VirtualBoard(home, ble=True)           # + a simulated BLE radio: board.info["ble"]["hci"]
    VirtualBoard(home, nfc="HOST:PORT")    # + a simulated PN532 (its own process, amiko.emulate.pn532_sim),
                                           # nfc=True: a free udp port; board.nfc_transport ("nfc:udp:H:P"),
                                           # board.nfc_leave() / nfc_enter() (the card leaves / enters the
                                           # reader's field; it starts in it), board.nfc_stats()
    board.ble_away(True|False)  # the BLE wallet walks out of / back into the terminal's range
    board.ble_links()           # centrals connected to the BLE wallet now
    board.pty                  # "/dev/pts/N": the board's USB serial port
    board.flash                # HOME/flash, the board's filesystem
    board.press("confirm")     # or "cancel"
    board.press("cancel", at_boot=True)  # hold cancel through a power cycle: the wallet's update mode
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


def _check_button(button):
    if button not in BUTTONS:
        raise EmulatorError("no button %r on the virtual board: use one of %s" % (button, ", ".join(BUTTONS)))


def hold_at_boot(home, button):
    """Hold `button` down at the board's next boot (released once it has booted: HOME/hw/held, read by the ROM)."""
    _check_button(button)
    paths = prepare_home(home)
    path = os.path.join(paths["hw"], "held")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (button + "\n").encode())
    finally:
        os.close(fd)


def press(home, button, at_boot=False):
    """Press a button; at_boot: hold it while the running board is power cycled (as a user holds
    cancel while plugging the wallet in: its update mode)."""
    _check_button(button)
    if at_boot:
        info = running(home)
        if info is None:
            raise EmulatorError("no virtual board runs in %s: start it with `amiko emulate --home %s --hold %s`"
                                % (home, home, button))
        hold_at_boot(home, button)
        os.kill(info["pid"], signal.SIGUSR1)
        return
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


def _free_udp_port():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VirtualBoard:
    preexec_fn = None  # run in the children (emulator, PN532 simulator) before exec

    def __init__(self, home, heapsize=None, ble=False, nfc=None, hold=()):
        self.home = str(Path(home).resolve())
        self.hold = tuple(hold)  # buttons held down at power-on (("cancel",): the wallet's update mode)
        self.heapsize = heapsize
        self.ble = ble  # a simulated BLE radio (emulate/ble_radio.py); self.info["ble"]["hci"] reaches it
        if nfc is True:
            nfc = "127.0.0.1:%d" % _free_udp_port()
        self.nfc = nfc  # "HOST:PORT": the simulated PN532's RF side on nfcpy's udp link
        self.nfc_transport = None
        self._sim = None
        self.proc = None
        self.info = None
        prepare_home(self.home)

    def _start_nfc(self):
        env = dict(os.environ)
        root = Path(__file__).resolve().parents[3]
        env["PYTHONPATH"] = os.pathsep.join([str(root / "host"), str(root / "shared"), env.get("PYTHONPATH", "")])
        self._sim = subprocess.Popen([sys.executable, "-m", "amiko.emulate.pn532_sim", "--udp", self.nfc],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=self.preexec_fn)
        line = self._sim.stdout.readline()
        if not line:
            self._stop_nfc()
            raise EmulatorError("the simulated PN532 did not start")
        info = json.loads(line)
        link = os.path.join(layout(self.home)["hw"], "pn532")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(info["uart"], link)
        self.nfc_transport = "nfc:udp:%s:%d" % tuple(info["udp"])

    def _nfc_cmd(self, word):
        if self._sim is None:
            raise EmulatorError("the virtual board in %s has no simulated PN532 (VirtualBoard(home, nfc=...))" % self.home)
        self._sim.stdin.write(word + "\n")
        self._sim.stdin.flush()
        return json.loads(self._sim.stdout.readline())

    def nfc_leave(self):
        return self._nfc_cmd("leave")

    def nfc_enter(self):
        return self._nfc_cmd("enter")

    def nfc_stats(self):
        """{"activations", "apdus", "released", "wtx", "in_field"}: the simulated chip's counters."""
        return self._nfc_cmd("stats")

    def ble_away(self, gone=True):
        from amiko.emulate.ble_radio import away

        away(layout(self.home)["hw"], gone)

    def ble_stats(self):
        """{"links": centrals connected now, "rx_bytes", "tx_bytes": GATT values written by them /
        notified to them so far (updated at every connect and disconnect)}."""
        try:
            with open(os.path.join(layout(self.home)["hw"], "ble_links")) as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return {"links": 0, "rx_bytes": 0, "tx_bytes": 0}

    def ble_links(self):
        """How many centrals (terminals) are connected to the BLE wallet now."""
        return self.ble_stats()["links"]

    def _stop_nfc(self):
        sim, self._sim = self._sim, None
        if sim is None:
            return
        try:
            sim.stdin.write("quit\n")
            sim.stdin.flush()
            sim.wait(5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            sim.kill()
            sim.wait()
        for f in (sim.stdin, sim.stdout):
            try:
                f.close()
            except OSError:
                pass
        link = os.path.join(layout(self.home)["hw"], "pn532")
        if os.path.islink(link):
            os.unlink(link)

    @property
    def flash(self):
        return layout(self.home)["flash"]

    @property
    def pty(self):
        return self.info["pty"] if self.info else None

    def start(self, timeout=10):
        if running(self.home):
            raise EmulatorError("a virtual board already runs in %s" % self.home)
        if self.nfc and self._sim is None:
            self._start_nfc()  # before the board boots: the ROM opens HW_DIR/pn532 then
        if self.ble:
            self.ble_away(False)
            try:
                os.unlink(os.path.join(layout(self.home)["hw"], "ble_links"))
            except FileNotFoundError:
                pass
        cmd = [sys.executable, "-m", "amiko.emulate", self.home, str(self.heapsize or ""), "ble" if self.ble else "-"]
        cmd += ["hold=%s" % b for b in self.hold]  # held at the first boot only
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                     preexec_fn=self.preexec_fn)
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
        self._stop_nfc()

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()

    def press(self, button, at_boot=False):
        if at_boot:
            hold_at_boot(self.home, button)
            self.power_cycle()
            return
        press(self.home, button)

    def screen(self):
        return screen(self.home)

    def led(self):
        return led(self.home)

    def events(self):
        return events(self.home)

    def boots(self):
        return sum(1 for ev in events(self.home) if "boot" in ev)

    def confirm_ble_pairing(self, accept=True, timeout=30):
        """The customer's part of a BLE pairing: wait for the wallet's pairing screen (numeric
        comparison), press confirm (accept) or cancel; the 6-digit number it showed (int)."""
        lines = self.wait_for_screen(lambda ls: len(ls) > 1 and ls[0] == "BLE pairing" and ls[1].isdigit(), timeout)
        self.press("confirm" if accept else "cancel")
        return int(lines[1])

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
