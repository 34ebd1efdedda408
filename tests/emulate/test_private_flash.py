"""The virtual board's flash is its owner's only (issue 11/12): the wallet's key lives in HOME/flash/data/config.a.

Attack: another local user reads the board's flash files (0644 in a 0755 folder before this fix)."""

import os
import stat

from amiko_testing.boards import mpremote

from amiko.emulate import VirtualBoard


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def loose_entries(home):
    found = {}
    for root, dirs, files in os.walk(home):
        for name in dirs:
            p = os.path.join(root, name)
            if not os.path.islink(p) and mode(p) != 0o700:
                found[p] = "%04o" % mode(p)
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p) and mode(p) != 0o600:
                found[p] = "%04o" % mode(p)
    if mode(home) != 0o700:
        found[str(home)] = "%04o" % mode(home)
    return found


def test_loose_flash_is_fixed_at_start_and_what_the_firmware_writes_is_0600(tmp_path, capfd):
    home = tmp_path / "vb"
    data = home / "flash" / "data"
    os.makedirs(data)
    for d in (home, home / "flash", data):
        os.chmod(d, 0o755)
    (data / "config.a").write_bytes(b"a wallet key")
    os.chmod(data / "config.a", 0o644)
    (home / "flash" / "main.py").write_text("")
    os.chmod(home / "flash" / "main.py", 0o644)
    board = VirtualBoard(home).start()
    try:
        assert loose_entries(home) == {}
        fixed = {f["path"]: (f["old"], f["new"]) for f in board.info["fixed_modes"]}
        for p in (home, home / "flash", data):
            assert fixed[str(p)] == ("0755", "0700"), fixed
        assert fixed[str(data / "config.a")] == ("0644", "0600")
        err = capfd.readouterr().err
        assert "fixed mode of %s: 0644 -> 0600" % (data / "config.a") in err, err  # one warning line per path
        assert err.count("fixed mode of") == len(fixed)

        # files and folders the firmware (the micropython process) makes are private too
        r = mpremote(board.pty, "exec", "import os\nos.mkdir('/data2')\nopen('/data2/state.a', 'wb').write(b'x')\n"
                                        "open('/data/state.b', 'wb').write(b'y')")
        assert r.returncode == 0, r.stderr
        assert mode(home / "flash" / "data2") == 0o700
        assert mode(home / "flash" / "data2" / "state.a") == 0o600
        assert mode(data / "state.b") == 0o600
        assert loose_entries(home) == {}
    finally:
        board.stop()


def test_a_fresh_board_home_is_private(tmp_path):
    old = os.umask(0o022)  # whatever the user's umask
    try:
        board = VirtualBoard(tmp_path / "fresh").start()
    finally:
        os.umask(old)
    try:
        assert board.info["fixed_modes"] == []  # made private from the start, nothing to fix
        assert loose_entries(tmp_path / "fresh") == {}
    finally:
        board.stop()
