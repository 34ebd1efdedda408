"""The virtual board's flash is its "/": the wallet's default storage_root "/data" lands in HOME/flash/data,
and the atomic-rename steps of wallet.storage work there with absolute paths (the unix port's VfsPosix
mounted at "/" fails rename() of two absolute paths; the ROM's os fixes that)."""

import json
import os
import shutil

from amiko_testing.boards import mpremote
from amiko_testing.paths import ROOT

VIRTUAL = [b for b in json.loads((ROOT / "boards.json").read_text())["boards"] if b["id"] == "VIRTUAL"][0]


def test_rename_with_absolute_paths(vboard):
    b = vboard(main="")
    code = ("import os\nos.mkdir('/d')\nopen('/d/x.tmp', 'wb').write(b'1')\nos.rename('/d/x.tmp', '/d/x.a')\n"
            "os.chdir('/d')\nopen('/d/y.tmp', 'wb').write(b'2')\nos.rename('/d/y.tmp', '/d/y.a')\n"
            "os.rename('x.a', 'x.b')\nos.chdir('/')\nprint(sorted(os.listdir('/d')))")
    r = mpremote(b.pty, "exec", code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "['x.b', 'y.a']" in r.stdout
    assert sorted(os.listdir(os.path.join(b.flash, "d"))) == ["x.b", "y.a"]


def test_default_storage_root_is_inside_the_flash(vboard):
    b = vboard(main="")
    for pkg, src in (("board", ROOT / "firmware" / "board"), ("wallet", ROOT / "firmware" / "wallet"),
                     ("amiko_core", ROOT / "shared" / "amiko_core")):
        shutil.copytree(src, os.path.join(b.flash, pkg), ignore=shutil.ignore_patterns("__pycache__"))
    cfg = {"board": VIRTUAL, "settings": {}}  # what `amiko flash` writes: no storage_root
    code = ("import board\nb = board.select(%r)\nfrom wallet.storage import Storage\ns = Storage(b.storage_root)\n"
            "s.save('state', {'n': 1})\ns.save('state', {'n': 2})\ns.put_once('h0', {'k': 3})\n"
            "print(b.storage_root, s.load('state'), s.get_once('h0'))" % cfg)
    r = mpremote(b.pty, "exec", code, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/data {'n': 2} {'k': 3}" in r.stdout, r.stdout
    assert sorted(os.listdir(os.path.join(b.flash, "data"))) == ["journal.a"]
    assert not os.path.exists("/data/state.a")  # not the host's /data
