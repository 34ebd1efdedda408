"""`amiko flash` against the virtual board over its pty with real mpremote, and its error cases."""

import json
import os
import pty as ptymod

import serial
from amiko_testing.boards import amiko, mpremote, wait_for
from amiko_testing.paths import ROOT

from amiko.flash import boards as boards_mod


def flash(*args):
    r = amiko("flash", "--json", *args)
    out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None
    return r, out


def test_flash_virtual_board_then_nothing_to_copy_then_firmware_runs(vboard):
    b = vboard()
    r, out = flash("--board", "VIRTUAL", "--port", b.pty)
    assert r.returncode == 0, r.stderr
    assert out["board"] == "VIRTUAL" and out["config_written"] and out["unchanged"] == 0
    copied = set(out["copied"])
    assert {"/main.py", "/board/__init__.mpy", "/board/usb_serial.mpy", "/board/virtual.mpy",
            "/amiko_core/frame.mpy"} <= copied
    assert not any(p.startswith("/board/") and p.split("/")[-1] in ("ssd1306.mpy", "buttons.mpy", "led.mpy")
                   for p in copied)  # hardware modules the virtual board does not have
    for path in copied:
        if path.endswith(".mpy"):
            with open(os.path.join(b.flash, path.lstrip("/")), "rb") as f:
                assert f.read(2) == b"M\x06"  # .mpy v6
    cfg = json.loads(open(os.path.join(b.flash, "config.json")).read())
    assert cfg["board"]["id"] == "VIRTUAL" and cfg["settings"] == {}
    wait_for(lambda: b.boots() >= 2, what="restart after flashing")
    b.wait_for_screen(lambda lines: lines != [], timeout=10)  # the wallet firmware drew its screen

    boots = b.boots()
    r, out = flash("--board", "VIRTUAL", "--port", b.pty, "--set", "daily_limit=5000", "--set", "name=alice")
    assert r.returncode == 0, r.stderr
    assert out["copied"] == [] and out["removed"] == [] and out["bytes_copied"] == 0
    assert out["config_written"] and out["settings"] == {"daily_limit": 5000, "name": "alice"}
    r, out = flash("--board", "VIRTUAL", "--port", b.pty)
    assert r.returncode == 0 and out["copied"] == [] and not out["config_written"]
    assert out["settings"] == {"daily_limit": 5000, "name": "alice"}  # kept
    wait_for(lambda: b.boots() >= boots + 2, what="restarts")
    b.wait_for_screen(lambda lines: lines != [], timeout=10)

    # a file changed or lost on the board is copied again; a stale one is removed
    os.remove(os.path.join(b.flash, "amiko_core", "url.mpy"))
    manifest_path = os.path.join(b.flash, ".amiko_manifest.json")
    manifest = json.load(open(manifest_path))
    manifest["/old_module.mpy"] = "00"
    open(manifest_path, "w").write(json.dumps(manifest))
    open(os.path.join(b.flash, "old_module.mpy"), "wb").write(b"x")
    r, out = flash("--board", "VIRTUAL", "--port", b.pty)
    assert r.returncode == 0, r.stderr
    assert out["copied"] == ["/amiko_core/url.mpy"] and out["removed"] == ["/old_module.mpy"]
    assert not os.path.exists(os.path.join(b.flash, "old_module.mpy"))
    r = mpremote(b.pty, "exec", "import amiko_core.url; print('url ok')")
    assert "url ok" in r.stdout, r.stderr


def test_no_such_port():
    r, out = flash("--board", "VIRTUAL", "--port", "/dev/does-not-exist")
    assert r.returncode == 2 and out["error"]["code"] == "port"
    assert "no such port /dev/does-not-exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_port_option():
    r, out = flash("--board", "ESP32_GENERIC")
    assert r.returncode == 2 and out["error"]["code"] == "port" and "--port" in out["error"]["message"]


def test_port_that_does_not_answer():
    master, slave = ptymod.openpty()
    try:
        r, out = flash("--board", "VIRTUAL", "--port", os.ttyname(slave), "--timeout", "1")
        assert r.returncode == 2 and out["error"]["code"] == "no_answer", r.stderr
        assert "does not answer" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    finally:
        os.close(master)
        os.close(slave)


def test_busy_port(vboard):
    b = vboard(main="")
    holder = serial.Serial(b.pty, exclusive=True)
    try:
        r, out = flash("--board", "VIRTUAL", "--port", b.pty)
        assert r.returncode == 2 and out["error"]["code"] == "busy" and "is busy" in r.stderr
    finally:
        holder.close()


def test_micropython_version_too_old(vboard, tmp_path):
    data = json.loads((ROOT / "boards.json").read_text())
    for entry in data["boards"]:
        if entry["id"] == "VIRTUAL":
            entry["min_micropython"] = "99.0.0"
    path = tmp_path / "boards.json"
    path.write_text(json.dumps(data))
    b = vboard(main="")
    r, out = flash("--board", "VIRTUAL", "--port", b.pty, "--boards", str(path))
    assert r.returncode == 2 and out["error"]["code"] == "version", r.stderr
    assert "needs at least 99.0.0" in r.stderr
    assert not os.path.exists(os.path.join(b.flash, "config.json"))


def test_wrong_board_for_the_port(vboard):
    b = vboard(main="")
    r, out = flash("--board", "RPI_PICO_W", "--port", b.pty)
    assert r.returncode == 2 and out["error"]["code"] == "version"
    assert "not RPI_PICO_W" in r.stderr


def test_unknown_board():
    r, out = flash("--board", "NOPE", "--port", "/dev/null")
    assert r.returncode == 2 and "no board 'NOPE'" in r.stderr and "ESP32_GENERIC" in r.stderr


def test_images_uf2_instructions_and_missing_esp32_image(tmp_path):
    r, out = flash("--board", "RPI_PICO_W", "--port", "/dev/ttyACM0", "--micropython", "pico.uf2")
    assert r.returncode == 2 and out["error"]["code"] == "uf2"
    assert "BOOTSEL" in r.stderr and "RPI-RP2" in r.stderr
    r, out = flash("--board", "ESP32_GENERIC", "--port", "/dev/ttyUSB0", "--micropython", str(tmp_path / "no.bin"))
    assert r.returncode == 2 and out["error"]["code"] == "image" and "no MicroPython image" in r.stderr


def test_build_compiles_for_each_board_arch(tmp_path):
    from amiko.flash import build

    for board_id in ("ESP32_GENERIC", "RPI_PICO_W", "SEEED_XIAO_NRF52"):
        entry = boards_mod.find(board_id)
        files = build(entry, tmp_path / board_id)
        names = {p for p, _ in files}
        assert "/main.py" in names and "/board/led.mpy" in names and "/board/virtual.mpy" not in names
        assert all(p == "/main.py" or p.endswith(".mpy") for p in names)


def test_esptool_writes_the_image_at_the_board_offset(tmp_path, monkeypatch):
    import subprocess

    import amiko.flash as fl
    from amiko.cli import Output

    image = tmp_path / "fw.bin"
    image.write_bytes(b"\xe9" + b"\0" * 100)
    calls = []

    class Done:
        returncode = 0
        stderr = ""

    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    monkeypatch.setattr(fl.time, "sleep", lambda s: None)
    master, slave = ptymod.openpty()
    try:
        for board_id, chip, offset in (("ESP32_GENERIC", "esp32", "0x1000"), ("ESP32_GENERIC_S3", "esp32s3", "0x0")):
            fl.write_image(boards_mod.find(board_id), os.ttyname(slave), str(image), Output(True))
            cmd = calls[-1]
            assert cmd[1:3] == ["-m", "esptool"] and cmd[cmd.index("--chip") + 1] == chip
            assert cmd[-3:] == ["write-flash", offset, str(image)]
    finally:
        os.close(master)
        os.close(slave)
