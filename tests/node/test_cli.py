"""The `amiko` command's contract: commands, flags, outputs, exit codes, one-line errors."""

import json
import os
import signal
import stat
import tomllib

import pytest

from amiko.node.control import ControlError

from amiko_testing.network import amiko_env, free_port, run_amiko  # noqa: F401  (net is a fixture)


def one_line_error(r, *needles):
    """Exit 2, one line on stderr that contains every needle."""
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_init_writes_config_key_and_database(tmp_path):
    home = tmp_path / "alice"
    port = free_port()
    mp_x, mp_y = "mp-x@02" + "11" * 32, "mp-y@03" + "22" * 32  # meeting points of other nodes
    r = run_amiko(["init", "--home", home, "--listen", "127.0.0.1:%d" % port, "--name", "alice",
                   "--meeting-point", "mp-a", "--external-meeting-point", mp_x, "--external-meeting-point", mp_y,
                   "--json"])
    assert r.returncode == 0, r
    info = r.json
    assert info["name"] == "alice"
    assert info["listen"] == "127.0.0.1:%d" % port
    assert len(bytes.fromhex(info["key"])) == 33
    assert info["meeting_points"] == ["mp-a@" + info["key"]]  # named by this node's key
    assert info["external_meeting_points"] == [mp_x, mp_y]
    config = tomllib.loads((home / "node.toml").read_text())
    assert config["meeting_points"] == ["mp-a@" + info["key"]]
    assert config["route_timeout"] == 10
    assert config["lock_timeout"] == 10
    assert config["timeout_increment"] == 5
    assert config["listen"] == "127.0.0.1:%d" % port
    assert stat.S_IMODE(os.stat(home / "node.key").st_mode) == 0o600
    assert (home / "node.db").exists()


def test_init_timeouts_and_human_output(tmp_path):
    home = tmp_path / "b"
    r = run_amiko(["init", "--home", home, "--listen", "127.0.0.1:%d" % free_port(), "--route-timeout", "3",
                   "--lock-timeout", "4", "--timeout-increment", "2"])
    assert r.returncode == 0, r
    assert "amiko node --home %s" % home in r.stdout
    config = tomllib.loads((home / "node.toml").read_text())
    assert (config["route_timeout"], config["lock_timeout"], config["timeout_increment"]) == (3, 4, 2)
    assert config["name"] == "b"  # default: the directory's name


def test_init_refuses_existing_home_and_bad_listen(tmp_path):
    home = tmp_path / "c"
    assert run_amiko(["init", "--home", home, "--listen", "127.0.0.1:%d" % free_port()]).returncode == 0
    one_line_error(run_amiko(["init", "--home", home, "--listen", "127.0.0.1:1"]), "already a node home")
    for bad in ("nohostport", "127.0.0.1:0", "127.0.0.1:70000", "bad host:1", "[::1:5"):
        one_line_error(run_amiko(["init", "--home", tmp_path / "d", "--listen", bad]), "listen")
    assert not (tmp_path / "d" / "node.toml").exists()
    one_line_error(run_amiko(["init", "--home", tmp_path / "e", "--listen", "127.0.0.1:5", "--meeting-point", "a b"]),
                   "meeting point")
    for bad in ("mp-x", "mp-x@02" + "11" * 31, "mp-x@02" + "AB" * 32, "mp-x@04" + "11" * 32):
        one_line_error(run_amiko(["init", "--home", tmp_path / "f", "--listen", "127.0.0.1:5",
                                  "--external-meeting-point", bad]), "meeting point")
    assert not (tmp_path / "f" / "node.toml").exists()


def test_init_refuses_a_meeting_point_under_another_nodes_key(tmp_path):
    """Claiming another node's meeting point (vulnerability 6): NAME@<victim's key> is refused."""
    victim = run_amiko(["init", "--home", tmp_path / "v", "--listen", "127.0.0.1:%d" % free_port(),
                        "--meeting-point", "shop-mp", "--json"])
    assert victim.returncode == 0, victim
    claimed = victim.json["meeting_points"][0]
    r = run_amiko(["init", "--home", tmp_path / "t", "--listen", "127.0.0.1:%d" % free_port(),
                   "--meeting-point", claimed])
    one_line_error(r, "another node's key", claimed)
    assert not (tmp_path / "t" / "node.toml").exists()


def test_home_defaults_to_AMIKO_HOME(tmp_path):
    home = tmp_path / "env-home"
    env = amiko_env({"AMIKO_HOME": str(home)})
    r = run_amiko(["init", "--listen", "127.0.0.1:%d" % free_port(), "--json"], env=env)
    assert r.returncode == 0, r
    assert r.json["home"] == str(home)
    r = run_amiko(["status"], env=env)
    one_line_error(r, "node at %s is not running" % home, "amiko node --home %s" % home)


def test_no_home(tmp_path):
    one_line_error(run_amiko(["status"]), "--home", "AMIKO_HOME")
    missing = tmp_path / "missing"
    line = one_line_error(run_amiko(["status", "--home", missing]), "no node home at %s" % missing)
    assert "amiko init --home %s --listen HOST:PORT" % missing in line
    for args in (["link", "x"], ["deposit", "x", "5"], ["withdraw", "x", "1"], ["meetingpoint", "m"],
                 ["request", "5"], ["pay", "amikopay://127.0.0.1:1/x", "--yes"], ["node"]):
        one_line_error(run_amiko(args[:1] + ["--home", missing] + args[1:]), "no node home", "amiko init")


def test_dead_node_errors_say_how_to_start_it(tmp_path):
    home = tmp_path / "dead"
    assert run_amiko(["init", "--home", home, "--listen", "127.0.0.1:%d" % free_port()]).returncode == 0
    for args in (["status"], ["link", "bob"], ["deposit", "bob", "5"], ["request", "5"], ["meetingpoint", "m"]):
        one_line_error(run_amiko(args[:1] + ["--home", home] + args[1:]),
                       "node at %s is not running: start it with `amiko node --home %s`" % (home, home))
    # a stale socket file from a crashed node is not a running node
    (home / "control.sock").write_text("")
    one_line_error(run_amiko(["status", "--home", home]), "is not running")


def test_json_errors_are_one_object(tmp_path):
    r = run_amiko(["status", "--home", tmp_path / "nope", "--json"])
    assert r.returncode == 2
    obj = json.loads(r.stdout)
    assert set(obj) == {"error"} and obj["error"]["message"].startswith("no node home")
    r = run_amiko(["deposit", "--json", "--home", tmp_path, "link"])  # usage error
    assert r.returncode == 2
    assert "error" in json.loads(r.stdout)
    r = run_amiko(["deposit", "--home", tmp_path, "link", "-5", "--json"])
    assert r.returncode == 2
    assert "amount" in json.loads(r.stdout)["error"]["message"]


def test_bad_amounts_and_urls_are_refused_before_the_node(tmp_path):
    home = tmp_path / "h"
    assert run_amiko(["init", "--home", home, "--listen", "127.0.0.1:%d" % free_port()]).returncode == 0
    for amount in ("0", "-1", "1.5", "abc", "2100000000000001"):
        one_line_error(run_amiko(["request", "--home", home, amount]), "amount")
        one_line_error(run_amiko(["deposit", "--home", home, "bob", amount]), "amount")
    for url in ("http://x/y", "amikopay://", "amikopay://host", "amikolink://h/x", "amikopay://h:0/x", "amikopay://h/a b"):
        one_line_error(run_amiko(["pay", "--home", home, url, "--yes"]), "bad payment URL", "amikopay://")
    one_line_error(run_amiko(["link", "--home", home, "bob", "amikopay://h/x"]), "bad link URL")
    one_line_error(run_amiko(["link", "--home", home, "bob", "amikolink://127.0.0.1:5/x"]), "key=")
    one_line_error(run_amiko(["link", "--home", home, "bad name!"]), "link name")


def test_help_lists_every_command():
    r = run_amiko(["--help"])
    assert r.returncode == 0
    for c in ("init", "node", "link", "deposit", "withdraw", "meetingpoint", "request", "pay", "status", "demo"):
        assert c in r.stdout
    r = run_amiko([])
    assert r.returncode == 2


def test_node_runs_stops_cleanly_and_refuses_a_second_node(net):
    a = net.node("a", meeting_points=["mp-a"])
    s = a.status()
    assert s["node"]["name"] == "a"
    assert s["node"]["listen"] == "127.0.0.1:%d" % a.port
    assert s["node"]["key"] == a.key
    assert s["meeting_points"] == ["mp-a@" + a.key] == a.meeting_points
    assert s["links"] == [] and s["channels"] == []
    # a second node on the same home: refused, the first keeps running
    r = run_amiko(["node", "--home", a.home], timeout=30)
    one_line_error(r, "already running", str(a.home))
    assert a.running() and a.status()["node"]["pid"] == a.proc.pid
    # human status output
    r = a.run("status")
    r = run_amiko(["status", "--home", a.home])
    assert r.returncode == 0 and "mp-a" in r.stdout and "links: none" in r.stdout
    # meeting point added at run time
    r = a.cli("meetingpoint", "mp-a2")
    assert r["meeting_point"] == "mp-a2@" + a.key
    assert "mp-a2@" + a.key in a.status()["meeting_points"]
    # with its own key spelled out: the same id; another node's key: refused, nothing added
    assert a.cli("meetingpoint", "mp-a2@" + a.key)["meeting_point"] == "mp-a2@" + a.key
    victim = net.node("victim", meeting_points=["shop-mp"], start=False)
    r = a.run("meetingpoint", victim.meeting_points[0])
    assert r.returncode != 0 and "another node's key" in (r.stdout + r.stderr), r
    assert r.json["error"]["code"] == "invalid", r.json
    assert sorted(a.status()["meeting_points"]) == ["mp-a2@" + a.key, "mp-a@" + a.key]
    # SIGTERM: clean stop, exit 0, socket removed, log written
    assert a.stop() == 0
    assert not (a.home / "control.sock").exists()
    log = (a.home / "node.log").read_text()
    assert "listening on 127.0.0.1:%d" % a.port in log and "stopped" in log
    # and it starts again on the same home (the lock was released), keeping its state
    a.start()
    assert "mp-a2@" + a.key in a.status()["meeting_points"]
    a.proc.send_signal(signal.SIGINT)
    assert a.proc.wait(20) == 0


def test_node_killed_leaves_a_home_that_starts_again(net):
    a = net.node("a")
    a.kill()
    one_line_error(run_amiko(["status", "--home", a.home]), "is not running")
    a.start()
    assert a.status()["node"]["name"] == "a"


def test_port_in_use_is_a_one_line_error(net):
    a = net.node("a")
    b = net.node("b", start=False)
    toml = (b.home / "node.toml").read_text().replace("127.0.0.1:%d" % b.port, "127.0.0.1:%d" % a.port)
    (b.home / "node.toml").write_text(toml)
    r = run_amiko(["node", "--home", b.home], timeout=30)
    assert r.returncode == 2
    # the node's log lines go to stderr too; the error is the last line
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("amiko: cannot listen on 127.0.0.1:%d" % a.port) and "--listen" in last, last


def test_link_without_peer_prints_url_and_unknown_link_errors(net):
    a = net.node("a")
    r = a.cli("link", "bob")
    assert r["url"].startswith("amikolink://127.0.0.1:%d/bob?key=%s" % (a.port, a.key))
    r = run_amiko(["link", "--home", a.home, "bob"])
    assert r.returncode == 0 and r.stdout.strip().startswith("amikolink://")
    one_line_error(run_amiko(["deposit", "--home", a.home, "nolink", "100"]), "no link", "amiko link")
    # a peer that does not answer: the link is kept, the command says so
    dead = "amikolink://127.0.0.1:%d/x?key=%s" % (free_port(), a.key)
    r = run_amiko(["link", "--home", a.home, "carol", dead, "--timeout", "0.5"])
    one_line_error(r, "not connected")


def test_node_json_prints_one_ready_object(tmp_path):
    import subprocess

    from amiko_testing.network import amiko_argv

    home = tmp_path / "j"
    port = free_port()
    assert run_amiko(["init", "--home", home, "--listen", "127.0.0.1:%d" % port]).returncode == 0
    p = subprocess.Popen(amiko_argv() + ["node", "--home", str(home), "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=amiko_env())
    try:
        ready = json.loads(p.stdout.readline())
        assert ready["pid"] == p.pid and ready["listen"] == "127.0.0.1:%d" % port and ready["home"] == str(home)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        assert p.stdout.read() == ""  # nothing else on stdout: one JSON object
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_long_home_path_still_has_a_control_socket(net):
    # unix socket paths are limited to 108 bytes; the node works in deeper homes too
    a = net.node("n" * 64)
    assert len(str(a.home / "control.sock")) > 108
    assert a.status()["node"]["name"] == "n" * 64
    assert a.stop() == 0


def test_node_developer_options_need_developer_and_a_valid_delay(tmp_path):
    home = tmp_path / "d"
    assert run_amiko(["init", "--home", home, "--listen", "127.0.0.1:%d" % free_port()]).returncode == 0
    for flags in (["--dev-withhold-token"], ["--dev-lock-delay", "3"], ["--dev-check-schemas"]):
        r = run_amiko(["node", "--home", home] + flags, timeout=30)
        one_line_error(r, "need --developer")
    for bad in ("soon", "-1", "nan"):
        r = run_amiko(["node", "--home", home, "--developer", "--dev-lock-delay", bad], timeout=30)
        one_line_error(r, "--dev-lock-delay takes seconds or never")


def test_a_production_node_has_no_developer_methods(tmp_path):
    """The tests' nodes are developer nodes (amiko_testing.network.CHECKED_ARGS); one started as
    an operator starts it answers neither developer method and checks no schemas."""
    from amiko_testing.network import Net

    n = Net(tmp_path, checked=False)
    try:
        a = n.node("a")
        assert "--developer" not in a.proc.args
        for method, params in (("developer_refuse_settle", {"link": "b"}), ("debug_drop_link", {"link": "b"})):
            with pytest.raises(ControlError) as e:
                a.rpc(method, params)
            assert e.value.code == "unknown_method"
        assert "DEVELOPER MODE" not in (a.home / "node.log").read_text()
    finally:
        n.close()
