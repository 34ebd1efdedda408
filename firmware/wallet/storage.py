"""Wallet state on flash that survives a power cut at any instant.

A record NAME (a small CBOR value) lives in two slot files, ROOT/NAME.a and ROOT/NAME.b.
File format: sha256(payload) (32 bytes) || payload, payload = cbor [seq, value].
save(NAME, value):
  1. write ROOT/NAME.tmp (payload with seq = current seq + 1), flush, close (os.sync if the
     port has it);
  2. remove the slot that does NOT hold the current valid copy (it is older or invalid);
  3. rename NAME.tmp to that slot.
Power lost at any point leaves the current valid slot untouched, so load() returns either
the old value or the new one, never a mix: load() reads both slots, drops any whose
checksum or CBOR does not verify, and returns the value with the highest seq (NAME.tmp is
ignored: the next save truncates it). load() only reads, so another process may inspect a
wallet's files while it runs (the tests do).

Write-once files (put_once/get_once, used for history entries) are written the same way
(tmp, close, rename) with the same checksum, into one file.

step(name) is called between the steps (tests kill the process there; see
tests/wallet/test_wallet_powercut.py): "tmp-half", "tmp-written", "slot-removed", "renamed".
"""

import os

from amiko_core import cbor
from amiko_core.errors import DecodeError
from amiko_core.hashing import sha256

_MAX_FILE = 4096
_SLOTS = ("a", "b")


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _sync():
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()


class Storage:
    def __init__(self, root, step=None):
        self.root = root
        self.step = step
        self._seq = {}  # name -> seq of the current valid copy
        self._slot = {}  # name -> slot letter of the current valid copy
        try:
            os.mkdir(root)
        except OSError:
            pass

    def _path(self, name):
        return self.root + "/" + name

    def _step(self, what):
        if self.step is not None:
            self.step(what)

    def _read(self, path):
        """The payload of a checksummed file, or None if it is missing or damaged."""
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_FILE + 1)
        except OSError:
            return None
        if len(data) < 33 or len(data) > _MAX_FILE:
            return None
        payload = data[32:]
        if sha256(payload) != data[:32]:
            return None
        try:
            return cbor.loads(payload, _MAX_FILE, 8, 512, 1024)
        except DecodeError:
            return None

    def _write(self, path, payload):
        tmp = path + ".tmp"
        data = sha256(payload) + payload
        half = len(data) // 2
        with open(tmp, "wb") as f:
            f.write(data[:half])
            self._step("tmp-half")
            f.write(data[half:])
            f.flush()
        _sync()
        self._step("tmp-written")
        return tmp

    # -- two-slot records

    def load(self, name):
        best = None
        for slot in _SLOTS:
            v = self._read(self._path(name) + "." + slot)
            if type(v) is list and len(v) == 2 and type(v[0]) is int:
                if best is None or v[0] > best[0]:
                    best = (v[0], slot, v[1])
        if best is None:
            self._seq.pop(name, None)
            self._slot.pop(name, None)
            return None
        self._seq[name] = best[0]
        self._slot[name] = best[1]
        return best[2]

    def save(self, name, value):
        if name not in self._seq:
            self.load(name)
        seq = self._seq.get(name, 0) + 1
        base = self._path(name)
        tmp = self._write(base, cbor.dumps([seq, value]))
        slot = "b" if self._slot.get(name) == "a" else "a"
        target = base + "." + slot
        _remove(target)  # FAT cannot rename onto an existing file; this slot is not the valid one
        self._step("slot-removed")
        os.rename(tmp, target)
        _sync()
        self._step("renamed")
        self._seq[name] = seq
        self._slot[name] = slot

    def remove(self, name):
        for slot in _SLOTS:
            _remove(self._path(name) + "." + slot)
        self._seq.pop(name, None)
        self._slot.pop(name, None)

    # -- write-once files

    def put_once(self, name, value):
        path = self._path(name)
        tmp = self._write(path, cbor.dumps(value))
        _remove(path)
        self._step("slot-removed")
        os.rename(tmp, path)
        _sync()
        self._step("renamed")

    def get_once(self, name):
        return self._read(self._path(name))

    def drop_once(self, name):
        _remove(self._path(name))
