"""The virtual board: boots, REPL and raw REPL over its pty with real mpremote, resets, power cuts, several at once."""

import json
import os
import subprocess
import time

from amiko_testing.boards import BIN, amiko, mpremote, open_port, read_until, wait_for

from amiko.emulate import events, screen

SHOW = 'import _vboard\n_vboard.events.write(b\'{"display": ["%s"]}\\n\')\n'
BUSY_MAIN = SHOW % "busy main" + "import time\nwhile True:\n    time.sleep_ms(5)\n"


def test_boots_main_and_shows_interfaces(vboard):
    b = vboard(main=SHOW % "hello")
    assert b.wait_for_screen("hello") == ["hello"]
    assert os.path.exists(b.pty) and b.pty.startswith("/dev/pts/")
    assert b.info["flash"] == b.flash and os.path.isdir(b.flash)
    assert b.boots() == 1


def test_mpremote_ls_cp_exec_while_main_runs(vboard, tmp_path):
    b = vboard(main=BUSY_MAIN)
    b.wait_for_screen("busy main")
    src = tmp_path / "hello.py"
    src.write_text("VALUE = 42\n")
    r = mpremote(b.pty, "cp", str(src), ":hello.py", "+", "ls", "+", "exec", "import hello; print(hello.VALUE * 2)")
    assert r.returncode == 0, r.stderr
    assert "hello.py" in r.stdout and "main.py" in r.stdout
    assert "84" in r.stdout
    assert (tmp_path / "board" / "flash" / "hello.py").read_text() == "VALUE = 42\n"
    # the flash is the board's "/": absolute paths stay inside it
    r = mpremote(b.pty, "exec", "import os; print(sorted(os.listdir('/'))); print(open('/hello.py').read())")
    assert r.returncode == 0, r.stderr
    assert "['hello.py', 'main.py']" in r.stdout and "VALUE = 42" in r.stdout
    r = mpremote(b.pty, "exec", "open('/etc/passwd')")
    assert r.returncode != 0 and "ENOENT" in r.stderr + r.stdout


def test_raw_repl_errors_come_back(vboard):
    b = vboard(main="")
    r = mpremote(b.pty, "exec", "raise ValueError('boom')")
    assert r.returncode != 0
    assert "ValueError: boom" in r.stdout + r.stderr
    assert "rom.py" not in r.stdout + r.stderr


def test_soft_reset_restarts_main_on_the_same_pty(vboard):
    b = vboard(main=BUSY_MAIN)
    b.wait_for_screen("busy main")
    pty = b.pty
    with open_port(pty) as port:
        port.write(b"\r\x03")  # Ctrl-C: main.py is interrupted (its interrupt char is enabled)
        read_until(port, b">>> ")
        port.write(b"6*7\r")
        assert b"42" in read_until(port, b"42")
        before = b.boots()
        port.write(b"\x04")  # Ctrl-D at the friendly REPL: soft reboot, main.py runs again
        read_until(port, b"MPY: soft reboot\r\n")
        wait_for(lambda: b.boots() == before + 1, what="a new boot")
    assert b.pty == pty
    assert [e["boot"] for e in b.events() if "boot" in e][-1] == "soft"
    b.wait_for_screen("busy main")
    r = mpremote(pty, "exec", "print('back')")
    assert r.returncode == 0 and "back" in r.stdout, r.stderr


def test_raw_repl_soft_reset_stays_raw_and_skips_main(vboard):
    b = vboard(main=BUSY_MAIN)
    b.wait_for_screen("busy main")
    with open_port(b.pty) as port:
        port.write(b"\r\x03\r\x01")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        shown = len(b.events())
        port.write(b"\x04")
        read_until(port, b"soft reboot\r\n")
        read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"print(1+1)\x04")
        assert read_until(port, b"\x04>").startswith(b"OK2\n\x04\x04")
        assert not any("display" in e for e in b.events()[shown:])  # main.py did not run
        port.write(b"\r\x02")
        read_until(port, b">>> ")


def test_power_cycle_boots_again(vboard):
    b = vboard(main=SHOW % "up")
    b.wait_for_screen("up")
    b.power_cycle()
    wait_for(lambda: b.boots() == 2, what="second boot")
    assert [e["boot"] for e in b.events() if "boot" in e] == ["power-on", "power-on"]
    r = mpremote(b.pty, "exec", "print('alive')")
    assert "alive" in r.stdout, r.stderr
    r = mpremote(b.pty, "reset")  # machine.reset(): a hard reset, main.py runs again
    assert r.returncode == 0, r.stderr
    boots = lambda: [e["boot"] for e in b.events() if "boot" in e]  # noqa: E731
    wait_for(lambda: boots()[-1] == "reset", what="boot after machine.reset()")
    # mpremote soft-resets in the raw REPL when it connects (boot "soft", main.py skipped)
    assert boots() == ["power-on", "power-on", "soft", "soft", "reset"]
    b.wait_for_screen("up")
    r = mpremote(b.pty, "exec", "import machine; print(hasattr(machine, 'Pin'), machine.mem8 is not None)")
    assert "False True" in r.stdout, r.stderr


def test_two_boards_at_once(vboard):
    one = vboard("one", main=SHOW % "I am one")
    two = vboard("two", main=SHOW % "I am two")
    one.wait_for_screen("I am one")
    two.wait_for_screen("I am two")
    assert one.pty != two.pty
    r1 = mpremote(one.pty, "exec", "open('/mark', 'w').write('1')")
    r2 = mpremote(two.pty, "exec", "import os; print(os.listdir('/'))")
    assert r1.returncode == 0 and r2.returncode == 0
    assert "mark" not in r2.stdout
    assert os.path.exists(os.path.join(one.flash, "mark")) and not os.path.exists(os.path.join(two.flash, "mark"))


def test_cli_runs_reports_json_press_screen_status_reset(tmp_path):
    home = tmp_path / "cli"
    (home / "flash").mkdir(parents=True)
    (home / "flash" / "main.py").write_text(
        "import _vboard, time\n"
        "while True:\n"
        "    line = _vboard.buttons.readline()\n"
        "    if line:\n"
        "        _vboard.events.write(b'{\"display\": [\"got %s\"]}\\n' % line.strip())\n"
        "    time.sleep_ms(5)\n")
    proc = subprocess.Popen([str(BIN / "amiko"), "emulate", "--home", str(home), "--json"], stdout=subprocess.PIPE,
                            text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["pty"].startswith("/dev/pts/") and info["flash"] == str(home / "flash")
        r = amiko("emulate", "status", "--home", str(home), "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["pty"] == info["pty"]
        wait_for(lambda: events(home), what="boot")
        time.sleep(0.2)
        r = amiko("emulate", "press", "confirm", "--home", str(home))
        assert r.returncode == 0, r.stderr
        wait_for(lambda: screen(home) == ["got confirm"], what="the press on the screen")
        r = amiko("emulate", "screen", "--home", str(home), "--json")
        assert json.loads(r.stdout) == {"display": ["got confirm"], "led": None}
        r = amiko("emulate", "screen", "--home", str(home))
        assert "|got confirm" in r.stdout
        r = amiko("emulate", "reset", "--home", str(home))
        assert r.returncode == 0
        wait_for(lambda: sum("boot" in e for e in events(home)) == 2, what="reboot")
        r = amiko("emulate", "--home", str(home))
        assert r.returncode == 2 and "already runs" in r.stderr
    finally:
        proc.terminate()
        proc.wait(5)
    assert not (home / "emulator.json").exists()
    r = amiko("emulate", "status", "--home", str(home))
    assert r.returncode == 2 and "no virtual board runs" in r.stderr
    r = amiko("emulate", "press", "sideways", "--home", str(home))
    assert r.returncode == 2


def test_board_layer_buttons_display_led_on_the_virtual_board(vboard):
    """firmware/board (select, virtual.Buttons/Display/Led, usb_serial) running under the emulator, scripted."""
    import shutil

    from amiko_testing.paths import ROOT

    b = vboard(start=False)
    shutil.copytree(ROOT / "firmware" / "board", os.path.join(b.flash, "board"))
    shutil.copytree(ROOT / "shared" / "amiko_core", os.path.join(b.flash, "amiko_core"))
    entry = [e for e in json.loads((ROOT / "boards.json").read_text())["boards"] if e["id"] == "VIRTUAL"][0]
    with open(os.path.join(b.flash, "config.json"), "w") as f:
        json.dump({"board": entry, "settings": {}}, f)
    with open(os.path.join(b.flash, "main.py"), "w") as f:
        f.write(
            "import json, board\n"
            "b = board.select(json.load(open('/config.json')))\n"
            "b.display.show(['ready ' + b.info['id'], 'a line much longer than sixteen'])\n"
            "buf = bytearray(64)\n"
            "while True:\n"
            "    n = b.serial.read_into(buf)\n"
            "    if n:\n"
            "        b.serial.write(bytes(buf[:n]).upper())\n"
            "    ev = b.buttons.poll()\n"
            "    if ev:\n"
            "        b.display.show(['pressed', ev])\n"
            "        b.led.set('ok' if ev == 'confirm' else 'error')\n"
            "    b.sleep_ms(2)\n")
    b.start()
    assert b.wait_for_screen("ready VIRTUAL") == ["ready VIRTUAL", "a line much long"]
    assert os.path.isdir(os.path.join(b.flash, "data"))  # storage_root created
    b.press("confirm")
    b.wait_for_screen("confirm")
    assert b.led() == "ok"
    b.press("cancel")
    b.press("confirm")  # two presses queued: two events, in order
    wait_for(lambda: b.screen() == ["pressed", "confirm"] and
             [e.get("led") for e in b.events() if "led" in e] == ["ok", "error", "ok"], what="both presses")
    with open_port(b.pty) as port:
        port.write(b"echo me")
        assert read_until(port, b"ECHO ME") .endswith(b"ECHO ME")
    # mpremote still gets the REPL: usb_serial turns the out-of-frame Ctrl-C into KeyboardInterrupt
    r = mpremote(b.pty, "exec", "print('repl ok')")
    assert "repl ok" in r.stdout, r.stderr
