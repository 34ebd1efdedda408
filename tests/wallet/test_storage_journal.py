"""The wallet's journal (firmware/wallet/storage.py) on CPython: a write cut at any byte leaves
the state before it or after it, never a mix; compaction cut anywhere keeps the old file current."""

import os

import pytest
from wallet import storage
from wallet.storage import Storage


class Cut(Exception):
    pass


def cut_put(monkeypatch, keep):
    """Make the next journal write store only its first `keep` bytes, then lose power."""
    real = storage.Journal._put

    def put(self, i, pos, data):
        if keep >= len(data):
            return real(self, i, pos, data)
        with open(self._path(i), "r+b") as f:
            f.seek(pos)
            f.write(bytes(data[:keep]))
        raise Cut()

    monkeypatch.setattr(storage.Journal, "_put", put)


def test_values_survive_a_reboot_and_removals_stick(tmp_path):
    s = Storage(str(tmp_path))
    s.save("config", {"key": b"k" * 32})
    s.save("state", {"n": 1})
    s.save("state", {"n": 2})
    s.put_once("h0", {"x": 1})
    s.drop_once("h0")
    again = Storage(str(tmp_path))
    assert again.load("state") == {"n": 2} and again.get_once("h0") is None
    assert again.load("config") == {"key": b"k" * 32}
    assert sorted(os.listdir(tmp_path)) == ["config.a", "journal.a"]
    assert os.path.getsize(tmp_path / "journal.a") == storage.JOURNAL_SIZE  # preallocated
    assert s.writes == 5


@pytest.mark.parametrize("group", [False, True])
def test_a_write_cut_at_any_byte_is_all_or_nothing(tmp_path, monkeypatch, group):
    root = str(tmp_path / "w")
    s = Storage(root)
    s.save("state", {"n": 1, "pay": {"phase": "paid"}})
    torn = 0
    for keep in range(0, 400, 3):
        monkeypatch.undo()
        before = Storage(root)
        old = (before.load("state"), before.get_once("h%d" % keep))
        new = ({"n": keep, "pay": None}, {"entry": keep} if group else old[1])
        cut_put(monkeypatch, keep)
        w = Storage(root)
        try:
            if group:
                w.begin()
                w.put_once("h%d" % keep, {"entry": keep})
            w.save("state", {"n": keep, "pay": None})
            if group:
                w.commit()
            done = True
        except Cut:
            done = False
        monkeypatch.undo()
        r = Storage(root)
        now = (r.load("state"), r.get_once("h%d" % keep))
        if done or keep > 300:
            assert now == new, keep
        elif keep < 16:  # not even the header
            assert now == old, keep
        else:  # torn inside the record(s): ignored; torn in the 0xff padding: complete already
            assert now in (old, new), keep
            torn += now == old
    assert torn >= 3


def test_compaction_cut_at_any_byte_keeps_a_consistent_wallet(tmp_path, monkeypatch):
    root = str(tmp_path / "w")
    s = Storage(root)
    n = 0
    while s._journal("state")._end + 256 < storage.JOURNAL_SIZE:  # fill the first file
        n += 1
        s.save("state", {"n": n, "pad": b"p" * 100})
        s.put_once("h%d" % (n % 5), {"n": n})
    live = {"state": {"n": n, "pad": b"p" * 100}}
    for k in range(5):
        live["h%d" % k] = Storage(root).get_once("h%d" % k)
    for keep in (0, 1, 15, 16, 17, 64, 100, 200, 300, 400, 600, 10 ** 6):
        cut_put(monkeypatch, keep)
        w = Storage(root)
        try:
            w.save("state", {"n": n + 1, "pad": b"q" * 900})  # does not fit: compaction first
            done = True
        except Cut:
            done = False
        monkeypatch.undo()
        r = Storage(root)
        for name, value in live.items():
            if done and name == "state":
                value = {"n": n + 1, "pad": b"q" * 900}
            assert r.load(name) == value, (keep, name)
        if done:
            assert os.path.exists(os.path.join(root, "journal.b"))
            assert r._journal("state")._cur == 1
            return
    raise AssertionError("the compaction never completed")


def test_a_write_that_does_not_fit_is_one_write_with_the_compaction(tmp_path):
    root = str(tmp_path / "w")
    s = Storage(root)
    n = 0
    while s._journal("state")._end + 1024 < storage.JOURNAL_SIZE:
        n += 1
        s.save("state", {"n": n, "pad": b"p" * 200})
        s.put_once("h%d" % (n % 4), {"n": n})
    writes = s.writes
    s.begin()
    s.put_once("h9", {"n": "new"})
    s.drop_once("h1")
    s.save("state", {"n": n + 1, "pad": b"q" * 900})
    s.commit()
    assert s.writes == writes + 1  # the snapshot holds the group's records: no second write
    assert s._journal("state")._cur == 1
    r = Storage(root)
    assert r.load("state") == {"n": n + 1, "pad": b"q" * 900}
    assert r.get_once("h9") == {"n": "new"} and r.get_once("h1") is None
    assert [r.get_once("h%d" % k)["n"] % 4 for k in (0, 2, 3)] == [0, 2, 3]
