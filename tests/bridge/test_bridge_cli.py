"""`amiko bridge` as a user runs it: one-line errors that say what to do, exit 2."""

import json
import socket

from harness import run_amiko


def test_config_errors_are_one_line_and_exit_2(tmp_path):
    r = run_amiko(["bridge", "--config", tmp_path / "missing.toml", "--json"], timeout=30)
    assert r.returncode == 2 and "no bridge config at" in r.json["error"]["message"]
    bad = tmp_path / "bad.toml"
    bad.write_text('node = "%s"\nlisten = "nonsense"\n' % tmp_path)
    r = run_amiko(["bridge", "--config", bad], timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "listen must be \"HOST:PORT\"" in r.stderr
    r = run_amiko(["bridge", "--json"], timeout=30)
    assert r.returncode == 2 and "no shop node given" in r.json["error"]["message"]
    r = run_amiko(["bridge", "--home", tmp_path, "--transport", "usb:/dev/x", "--json"], timeout=30)
    assert r.returncode == 2 and "kind must be one of serial, nfc, ble" in r.json["error"]["message"]


def test_busy_page_port_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run_amiko(["bridge", "--home", tmp_path, "--listen", "127.0.0.1:%d" % port, "--json"], timeout=30)
    assert r.returncode == 2, r
    message = json.loads(r.stdout)["error"]["message"]
    assert "cannot serve the page on 127.0.0.1:%d" % port in message and "pick another `listen`" in message
