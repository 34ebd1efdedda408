# The virtual board's "ROM": a MicroPython script (run by the unix port, never by CPython)
# that gives the unix port what a real board's C runtime (shared/runtime/pyexec.c) gives
# a board on its USB serial port:
#
#   * the flash filesystem at "/" (HOME/flash mounted as VfsPosix; the host's files are
#     out of reach), cwd "/", sys.path ["", ".frozen", "/lib"]
#   * boot: run /boot.py, then /main.py (friendly mode only), then the REPL
#   * the friendly REPL (">>> ", echo, Ctrl-A raw REPL, Ctrl-B banner, Ctrl-C clear line,
#     Ctrl-D soft reset, Ctrl-E paste mode)
#   * the raw REPL ("raw REPL; CTRL-B to exit\r\n>", Ctrl-D executes and answers
#     "OK" output \x04 error \x04; raw-paste mode "\x05A\x01" with flow control;
#     Ctrl-D on an empty buffer soft-resets and stays in raw mode), so mpremote works
#   * Ctrl-C: kbd_intr(3) while user code runs, kbd_intr(-1) while reading input (as
#     pyexec does); the emulator turns a 0x03 byte into SIGINT only while the process
#     catches SIGINT, i.e. exactly when MicroPython's interrupt char is enabled
#   * soft reset: print "MPY: soft reboot", exit with EXIT_SOFT_FRIENDLY / EXIT_SOFT_RAW;
#     the emulator starts the next process on the same serial port in that mode
#   * os.rename with two absolute paths works (the unix port's VfsPosix mounted at "/" fails it;
#     see install_os)
#   * SystemExit from main.py soft-resets, as on a board; machine.reset() (mpremote reset) exits with
#     EXIT_HARD_RESET: the emulator boots a new process as after power-on
#   * the simulated hardware below the firmware: module `_vboard` (sys.modules) with `rom_alloc`
#     (heap bytes the ROM itself holds when main.py starts: subtract it from heap measurements),
#     `buttons` (file opened for reading, button names one a line appended by the host)
#     and `events` (file opened for appending, one JSON object a line read by the host),
#     `held` (names of the buttons held down at this boot: HW_DIR/held, written by the host before a
#     power cycle and removed here, i.e. released once the board has booted);
#     `pn532` (the simulated PN532's UART, opened read/write) when HW_DIR/pn532 exists
#
# argv: FLASH_DIR HW_DIR MODE(friendly|raw) REASON(power-on|soft)

import micropython

micropython.kbd_intr(-1)  # first: a board's C runtime cannot be interrupted while it boots (see emulator.py)

import sys  # noqa: E402
import os  # noqa: E402

try:
    import vfs
except ImportError:  # MicroPython < 1.23 keeps mount/VfsPosix in os
    vfs = os

EXIT_SOFT_FRIENDLY = 64
EXIT_SOFT_RAW = 65
EXIT_HARD_RESET = 66

_stdin = sys.stdin.buffer
_stdout = sys.stdout.buffer


def out(s):
    if isinstance(s, str):
        s = s.encode()
    _stdout.write(s)


def getc():
    b = _stdin.read(1)
    if not b:  # the emulator closed the serial pipe: power off
        sys.exit(0)
    return b[0]


class _VBoard:
    pass


def setup_hardware(flash, hw, reason):
    board = _VBoard()
    board.home = hw
    board.buttons = open(hw + "/buttons", "rb")
    board.buttons.seek(0, 2)  # presses made while the board was off are not seen
    board.events = open(hw + "/events", "ab")
    board.held = ()
    if "held" in os.listdir(hw):  # buttons held down at this power-on (amiko emulate press --at-boot); released after
        with open(hw + "/held") as f:
            board.held = tuple(n for n in f.read().split() if n in ("confirm", "cancel"))
        os.remove(hw + "/held")
    board.events.write(b'{"boot": "%s", "held": [%s]}\n' % (reason, ", ".join('"%s"' % n for n in board.held)))
    sys.modules["_vboard"] = board
    if "pn532" in os.listdir(hw):  # a simulated PN532 (amiko.emulate.pn532_sim): HW_DIR/pn532 -> its UART pty
        board.pn532 = open(hw + "/pn532", "r+b")
    if "ble.sock" in os.listdir(hw):  # the board has a radio: HW_DIR/bluetooth is its `bluetooth` module
        sys.path[:] = [hw]
        import bluetooth

        bluetooth._connect(hw)
    vfs.umount("/")
    vfs.mount(vfs.VfsPosix(flash), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]


def banner():
    v = sys.implementation.version
    return "MicroPython v%d.%d.%d on virtual board; Amiko VIRTUAL (unix port)\r\nType \"help()\" for more information.\r\n" % (v[0], v[1], v[2])


class SoftReset(Exception):
    pass


class HardReset(BaseException):
    pass


def install_machine():
    """`machine` as the unix port has it, plus reset() (what `mpremote reset` calls): a hard reset."""
    import machine as builtin

    class Machine:
        pass

    m = Machine()
    for name in dir(builtin):
        if not name.startswith("__"):
            setattr(m, name, getattr(builtin, name))

    def reset():
        raise HardReset()

    m.reset = reset
    sys.modules["machine"] = m


def install_os():
    """`os` as the unix port has it, with rename() fixed for the flash mounted at "/".

    The unix port's VfsPosix builds the host path of an absolute name in one buffer per mount,
    so rename("/a", "/b") hands the kernel the second path twice (ENOENT). A board's
    LittleFS/FAT has no such problem, and the wallet renames absolute paths (storage_root
    "/data"); so the new name is passed relative to the current directory, which VfsPosix
    resolves without that buffer."""
    import os as builtin

    class Os:
        pass

    o = Os()
    for name in dir(builtin):
        if not name.startswith("__"):
            setattr(o, name, getattr(builtin, name))

    def rename(old, new):
        if isinstance(old, str) and isinstance(new, str) and old[:1] == "/" and new[:1] == "/":
            cwd = builtin.getcwd().strip("/")
            up = "../" * (cwd.count("/") + 1) if cwd else ""
            new = (up + new.lstrip("/")) or "."
        return builtin.rename(old, new)

    o.rename = rename
    sys.modules["os"] = o


def print_exception(e):
    """Like sys.print_exception, without the ROM's own frame (a board's C runtime has none)."""
    import io

    buf = io.StringIO()
    sys.print_exception(e, buf)
    for line in buf.getvalue().split("\n"):
        if line and "rom.py" not in line:
            out(line + "\r\n")


def run(code, g, filename, mode):
    """Compile, then run with Ctrl-C enabled (as pyexec: the interrupt is on only while the code runs,
    so a Ctrl-C can only land in that code); SystemExit means soft reset."""
    try:
        code = compile(code, filename, mode)
    except BaseException as e:
        print_exception(e)
        return
    try:
        micropython.kbd_intr(3)
        exec(code, g)
    except SystemExit:
        raise SoftReset()
    except HardReset:
        raise
    except BaseException as e:  # KeyboardInterrupt included: report it like pyexec does
        micropython.kbd_intr(-1)
        print_exception(e)
    micropython.kbd_intr(-1)


def run_file(path, g):
    try:
        with open(path) as f:
            src = f.read()
    except OSError:
        return
    run(src, g, path.lstrip("/"), "exec")


def _continues(text):
    """True if the friendly REPL should ask for more lines (a compound statement or open brackets)."""
    lines = text.split("\n")
    if len(lines) > 1:
        return lines[-1].strip() != ""
    line = lines[0].rstrip()
    if line.endswith(":") or line.endswith("\\"):
        return True
    depth = 0
    quote = None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    return depth > 0


def read_line(prompt, indent=""):
    """One line with echo and backspace; returns str, or an int control char (1, 2, 4, 5)."""
    out(prompt + indent)
    buf = bytearray(indent.encode())
    while True:
        c = getc()
        if c in (1, 2, 5):
            return c
        if c == 3:
            out("\r\n")
            return 3
        if c == 4:
            if not buf:
                return 4
            continue
        if c == 13 or c == 10:
            out("\r\n")
            return buf.decode()
        if c in (8, 127):
            if buf:
                buf.pop()
                out("\x08 \x08")
            continue
        if c == 27:  # escape sequences (cursor keys): not supported, swallow "[X"
            getc()
            getc()
            continue
        if c >= 32:
            buf.append(c)
            _stdout.write(bytes((c,)))


def paste_mode(g):
    out("\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    buf = bytearray()
    while True:
        c = getc()
        if c == 3:
            out("\r\n")
            return
        if c == 4:
            out("\r\n")
            run(buf.decode(), g, "<stdin>", "exec")
            return
        if c == 13:
            c = 10
        buf.append(c)
        if c == 10:
            out("\r\n=== ")
        else:
            _stdout.write(bytes((c,)))


def friendly_repl(g):
    """Returns "raw" (Ctrl-A) or raises SoftReset (Ctrl-D)."""
    out(banner())
    while True:
        line = read_line(">>> ")
        if line == 1:
            out("\r\n")
            return "raw"
        if line == 2:
            out("\r\n" + banner())
            continue
        if line == 3:
            continue
        if line == 4:
            out("\r\n")
            raise SoftReset()
        if line == 5:
            paste_mode(g)
            continue
        if not line.strip():
            continue
        text = line
        while _continues(text):
            last = text.split("\n")[-1]
            indent = last[:len(last) - len(last.lstrip())]
            if last.rstrip().endswith(":"):
                indent += "    "
            more = read_line("... ", indent)
            if more == 3:
                text = None
                break
            if not isinstance(more, str):
                break
            text += "\n" + more
        if text:
            run(text + "\n", g, "<stdin>", "single")


def _raw_paste(g):
    window = 256
    out(b"R\x01" + bytes((window & 0xFF, window >> 8)) + b"\x01")
    buf = bytearray()
    received = 0
    while True:
        c = getc()
        if c == 4:
            out(b"\x04")
            break
        if c == 3:  # host aborts: acknowledge as pyexec does
            out(b"\x04")
            return
        buf.append(c)
        received += 1
        if received == window:
            received = 0
            out(b"\x01")
    _raw_exec_ok(buf, g)


def raw_repl(g):
    """Returns "friendly" (Ctrl-B) or raises SoftReset (Ctrl-D on an empty buffer)."""
    out("raw REPL; CTRL-B to exit\r\n")
    while True:
        out(">")
        buf = bytearray()
        while True:
            c = getc()
            if c == 1:
                if buf == b"\x05A":
                    _raw_paste(g)
                    break
                out("raw REPL; CTRL-B to exit\r\n")
                buf = bytearray()
                out(">")
                continue
            if c == 2:
                out("\r\n")
                return "friendly"
            if c == 3:
                buf = bytearray()
                continue
            if c == 4:
                out("OK")
                if not buf:
                    out("\r\n")
                    raise SoftReset()
                _raw_exec_ok(buf, g)
                break
            buf.append(c)


def _raw_exec_ok(buf, g):
    # normal raw mode: "OK" was sent; then output \x04 error \x04
    micropython.kbd_intr(3)
    try:
        exec(compile(buf.decode(), "<stdin>", "exec"), g)
        micropython.kbd_intr(-1)
        out(b"\x04\x04")
    except SystemExit:
        micropython.kbd_intr(-1)
        out(b"\x04\x04")
        raise SoftReset()
    except HardReset:
        raise
    except BaseException as e:
        micropython.kbd_intr(-1)
        out(b"\x04")
        print_exception(e)
        out(b"\x04")


def main():
    flash, hw, mode, reason = sys.argv[1:5]
    micropython.kbd_intr(-1)
    setup_hardware(flash, hw, reason)
    install_machine()
    install_os()
    g = {"__name__": "__main__"}
    import gc

    gc.collect()
    sys.modules["_vboard"].rom_alloc = gc.mem_alloc()  # the ROM's share of the heap (in flash on a board)
    try:
        run_file("/boot.py", g)
        if mode == "friendly":
            run_file("/main.py", g)
        while True:
            if mode == "raw":
                mode = raw_repl(g)
            else:
                mode = friendly_repl(g)
    except SoftReset:
        out("MPY: soft reboot\r\n")
        sys.exit(EXIT_SOFT_RAW if mode == "raw" else EXIT_SOFT_FRIENDLY)
    except HardReset:
        sys.exit(EXIT_HARD_RESET)


main()
