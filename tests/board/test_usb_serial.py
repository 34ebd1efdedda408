"""board/usb_serial.py on the MicroPython unix port: non-blocking reads, frame tracking, the REPL escape."""

from amiko_testing.micropython import run_mp

from amiko_core import frame

READER = r"""
import sys
from board.usb_serial import USBSerial
s = USBSerial()
buf = bytearray(%d)
got = bytearray()
try:
    idle = 0
    while idle < 200:
        n = s.read_into(buf)
        got += buf[:n]
        idle = 0 if n else idle + 1
    print("END", got.hex())
except KeyboardInterrupt:
    print("REPL", got.hex())
    print("LEFT", sys.stdin.buffer.read().hex())
"""


def run(data, bufsize=64):
    r = run_mp(READER % bufsize, stdin=data)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().split("\n")
    return lines[0].split(" ")[0], bytes.fromhex(lines[0].split(" ")[1]), \
        bytes.fromhex(lines[1].split(" ")[1]) if len(lines) > 1 and lines[1].startswith("LEFT") else None


def test_bytes_pass_through_and_read_never_blocks():
    data = b"hello\r\n" + frame.encode(1, b"\x03\x03\x01" * 50) + b"tail"
    kind, got, _ = run(data)
    assert kind == "END" and got == data  # the 0x03s inside the frame body are data


def test_escape_in_a_large_read_drops_that_read_but_not_what_follows():
    kind, got, left = run(b"abc\x03\x01", bufsize=4096)
    assert kind == "REPL" and left == b"\x01"


def test_out_of_frame_ctrl_c_exits_and_leaves_the_rest_for_the_repl():
    fr = frame.encode(7, b"\x03" * 10)
    kind, got, left = run(b"\r" + fr + b"\r\x03\r\x01more", bufsize=1)
    assert kind == "REPL"
    assert got == b"\r" + fr + b"\r"
    assert left == b"\r\x01more"  # nothing after the Ctrl-C was consumed


def test_ctrl_c_after_a_header_with_bad_crc_still_escapes():
    bad = bytearray(frame.encode(1, b"abc")[:7])
    bad[6] ^= 0xFF
    kind, got, left = run(bytes(bad) + b"\x03\x01", bufsize=1)
    assert kind == "REPL" and got == bytes(bad) and left == b"\x01"


def test_oversized_length_is_not_a_frame():
    hdr = bytearray(b"\xA5\x4B\x01\x01\xFF\xF0\x00")
    hdr[6] = frame.crc8(hdr, 0, 6)
    kind, got, left = run(bytes(hdr) + b"\x03", bufsize=1)
    assert kind == "REPL" and got == bytes(hdr) and left == b""


def test_write_goes_to_stdout_and_kbd_intr_is_restored_on_close():
    r = run_mp("from board.usb_serial import USBSerial\ns = USBSerial()\nprint(s.write(b'abc'))\ns.close()\n"
               "import micropython\nmicropython.kbd_intr(3)\nprint('ok')")
    assert r.returncode == 0 and r.stdout == b"abc3\nok\n"


def test_a_frame_abandoned_mid_way_does_not_swallow_a_later_ctrl_c():
    import subprocess
    import time

    from amiko_testing.micropython import ROOT, micropython_binary

    env = {"MICROPYPATH": "%s:%s" % (ROOT / "firmware", ROOT / "shared"), "PATH": "/usr/bin:/bin"}
    p = subprocess.Popen([micropython_binary(), "-c", READER.replace("idle < 200", "idle < 3000").replace("idle + 1", "idle + 1\n        if not n: time.sleep_ms(1)").replace("import sys", "import sys, time") % 1],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    half = frame.encode(1, b"x" * 100)[:40]
    p.stdin.write(half)
    p.stdin.flush()
    time.sleep(0.8)  # longer than FRAME_GAP_MS: the frame is abandoned
    p.stdin.write(b"\r\x03\r\x01")
    p.stdin.close()
    out = p.stdout.read().decode().split("\n")
    p.wait(10)
    assert out[0] == "REPL " + (half + b"\r").hex()
    assert out[1] == "LEFT " + b"\r\x01".hex()


def test_locked_port_passes_ctrl_c_and_ctrl_a_as_data_and_counts_the_knocks():
    """A provisioned wallet's port (lock()): no escape to the REPL, whatever the host sends."""
    code = READER.replace("s = USBSerial()", "s = USBSerial()\ns.lock()").replace(
        'print("END", got.hex())', 'print("END", got.hex())\n    print("KNOCKS", s.repl_knocks)') % 1
    fr = frame.encode(7, b"\x03\x01" * 4)
    data = b"\r\x03\x03\r\x01" + fr + b"\x03\x04\x02\x05"
    r = run_mp(code, stdin=data)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().split("\n")
    assert lines[0] == "END " + data.hex()  # every byte reached the wallet, nothing went to a REPL
    assert lines[1] == "KNOCKS 4"  # the out-of-frame Ctrl-C x3 and Ctrl-A x1; the ones inside the frame are data


def test_lock_keeps_the_keyboard_interrupt_off_even_after_close():
    r = run_mp("from board.usb_serial import USBSerial\nimport micropython\ns = USBSerial()\ns.lock()\n"
               "s.exit_to_repl()\ns.close()\nprint('still here')")
    assert r.returncode == 0 and r.stdout == b"still here\n", r
