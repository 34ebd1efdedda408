"""Secrets at rest (issue 11): a node's HOME is its owner's only, even when someone made it first.

Real `amiko init` / `amiko node` processes. The attack: HOME created by the user with mkdir
(0755) before `amiko init`, or files left 0644 (a copied node.db, the -wal of a crashed node);
another local user then reads node.db/-wal (the keys of a provider's wallets), node.log, node.toml.
"""

import os
import stat

from amiko_testing.network import Node, free_port, run_amiko  # noqa: F401 (net is a fixture)

SECRET_FILES = ("node.toml", "node.key", "node.db", "node.log", "node.lock", "control.sock")


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def modes(home):
    found = {str(home): mode(home)}
    for name in os.listdir(home):
        found[name] = mode(os.path.join(home, name))
    return found


def assert_private(home):
    m = modes(home)
    assert m.pop(str(home)) == 0o700, "HOME is %04o" % mode(home)
    loose = {name: "%04o" % v for name, v in m.items() if v != 0o600}
    assert not loose, "files in HOME not 0600: %r" % loose


def test_init_on_a_home_made_0755_warns_fixes_and_the_running_node_keeps_it_private(net, tmp_path):
    home = tmp_path / "shop"
    os.mkdir(home)
    os.chmod(home, 0o755)  # the user made the folder first, as mkdir does with umask 022
    port = free_port()
    r = run_amiko(["init", "--home", home, "--listen", "127.0.0.1:%d" % port, "--meeting-point", "mp-shop", "--json"])
    assert r.returncode == 0, r
    assert "fixed mode of %s: 0755 -> 0700" % home in r.stderr, r.stderr
    assert r.json["fixed_modes"] == [{"path": str(home), "old": "0755", "new": "0700"}]
    assert_private(home)

    node = Node(net, "shop", home, port)
    net.nodes["shop"] = node
    node.start()
    payer = net.node("payer")  # a link, a channel and a payment: the database and the log get written
    net.connect(payer, node)
    net.deposit(payer, node, 1000)
    net.pay(payer, node, 10)
    names = set(os.listdir(home))
    assert set(SECRET_FILES) <= names, names
    assert "node.db-wal" in names and "node.db-shm" in names, names  # the running node's WAL files
    assert_private(home)
    assert node.stop() == 0
    assert_private(home)
    log = (home / "node.log").read_text()
    assert "fixed mode" not in log  # nothing was loose when the node started


def test_node_fixes_loose_files_left_in_its_home_and_logs_each(net):
    node = net.node("prov", meeting_points=["mp-prov"])
    assert node.cli("request", "100")["url"]
    node.kill()  # a crash: node.db-wal and -shm stay behind
    home = node.home
    assert os.path.exists(home / "node.db-wal")
    os.chmod(home, 0o755)
    loose = ["node.db", "node.db-wal", "node.db-shm", "node.log", "node.toml", "node.key"]
    for name in loose:
        os.chmod(home / name, 0o644)  # e.g. restored from a backup by someone with umask 022
    node.start()
    assert_private(home)
    log = (home / "node.log").read_text()
    fixed = [line for line in log.splitlines() if "fixed mode of" in line]
    assert len(fixed) == len(loose) + 1, fixed  # one line per path: HOME and each file
    assert any(line.endswith("fixed mode of %s: 0755 -> 0700" % home) for line in fixed), fixed
    for name in loose:
        assert any(line.endswith("fixed mode of %s: 0644 -> 0600" % (home / name)) for line in fixed), (name, fixed)
    assert all(" WARNING " in line for line in fixed)
    # and it still works on its database
    assert node.cli("request", "200")["url"]
    node.stop()
    node.start()  # a clean home: nothing more to say
    log2 = (home / "node.log").read_text()[len(log):]
    assert "fixed mode" not in log2
    assert_private(home)
