"""`amiko bridge` as a user runs it: one-line errors that say what to do, exit 2."""

import json
import socket

from amiko_testing.network import run_amiko


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


def test_pair_and_devices_commands(tmp_path):
    config = tmp_path / "bridge.toml"
    config.write_text('node = "%s"\n' % (tmp_path / "shop"))
    r = run_amiko(["bridge", "pair", "--config", config], timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("pairing code for the cashier page: "), r
    code = r.stdout.split(": ")[1].split(" (")[0]
    assert len(code) == 9 and code[4] == " " and code.replace(" ", "").isdigit()
    assert "valid until" in r.stdout and code.replace(" ", "") not in r.stderr
    state = tmp_path / "bridge-state"  # next to the config by default, private
    assert oct((state / "devices.json").stat().st_mode & 0o777) == "0o600"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert code.replace(" ", "") not in (state / "devices.json").read_text()  # only its hash
    r = run_amiko(["bridge", "pair", "--config", config, "--json"], timeout=30)
    assert r.returncode == 0 and len(r.json["code"]) == 8 and r.json["state_dir"] == str(state)
    r = run_amiko(["bridge", "devices", "--config", config], timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "no paired devices"
    r = run_amiko(["bridge", "devices", "--config", config, "--revoke", "abcd1234", "--json"], timeout=30)
    assert r.returncode == 2 and "no paired device 'abcd1234'" in r.json["error"]["message"]
    config.write_text('node = "%s"\ncashier_token = "short"\n' % (tmp_path / "shop"))
    r = run_amiko(["bridge", "pair", "--config", config, "--json"], timeout=30)
    assert r.returncode == 2 and "cashier_token must be a secret of 32..200" in r.json["error"]["message"]


def test_unwritable_state_dir_is_a_clear_start_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "bridge.toml"
    config.write_text('node = "%s"\nstate_dir = "%s"\n' % (tmp_path / "shop", blocker / "state"))
    r = run_amiko(["bridge", "--config", config, "--json"], timeout=30)
    assert r.returncode == 2, r
    assert "cannot keep the cashier devices in %s" % (blocker / "state") in r.json["error"]["message"]


def test_without_a_console_the_start_prints_how_to_pair_not_a_code(tmp_path):
    """Under systemd stdout is the journal (a log): no pairing code there."""
    import signal
    import subprocess

    from amiko_testing.network import amiko_argv, amiko_env, free_port

    config = tmp_path / "bridge.toml"
    config.write_text('node = "%s"\nlisten = "127.0.0.1:%d"\n' % (tmp_path / "shop", free_port()))
    p = subprocess.Popen(amiko_argv() + ["bridge", "--config", str(config)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=amiko_env())
    try:
        first, second = p.stdout.readline(), p.stdout.readline()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(15)
    assert first.startswith("cashier page: http://127.0.0.1:"), first
    assert second.strip() == ("pair a cashier device with a code from `amiko bridge pair --config %s` "
                              "(run as this bridge's user)" % config), second
