"""Wallet state on flash as an append-only journal that survives a power cut at any instant.

A journal is two preallocated files, ROOT/BASE.a and ROOT/BASE.b (created filled with 0xff on the
first write). The key record "config" has its own journal (config.a / config.b: wallet.maintenance
and main.py find the key by these names), so have the BLE bonds (written by another Storage
instance, firmware/board/ble.py); every other record is in journal.a / journal.b (JOURNAL_SIZE). A file holds a chain of records, each a whole number of BLOCK-byte
blocks:
    header (16 bytes): b"AJ" | seq (u32 LE) | payload length (u16 LE) | kind (1) | 0 |
                       sha256(header[0:10] || payload)[:6]
    payload: cbor [name, value] (kind "s", a save or a put_once) or cbor name (kind "d", a removal)
Replay reads records from offset 0 while each has the magic, a good checksum and seq one more
than the previous one; the first that does not (never written, stale from an older use of the
file, or torn by a power cut) ends the chain. A later record for a name replaces the earlier.

save / put_once / remove / drop_once append one record: one positioned write, flush and os.sync
at the end of the chain, the only flash write of the operation. A cut before the write completes
leaves a record whose checksum fails, so the operation did not happen; after it, it did.

When a record does not fit, the live records (latest of each name, removals dropped, the
operation's own records applied) are written instead as one snapshot at the start of the other
file, with new seqs that continue the chain, the first record of kind "c" whose payload is the
number of records that follow: still one flash write for the operation. A file is valid only if its
chain starts at seq 1 or with a complete snapshot; the valid file whose chain starts with the
higher seq is current. A cut during compaction therefore leaves the old file current.

load() only reads, so another process may inspect a wallet's files while it runs (the tests do).
step(name) is called between the stages of a write (tests kill the process there; see
tests/wallet/test_wallet_powercut.py): "record-half", "record-written".
"""

import os

from amiko_core import cbor
from amiko_core.errors import DecodeError
from amiko_core.hashing import sha256

BLOCK = 64
JOURNAL_SIZE = 65536  # 1 KiB a payment (two writes): a compaction (~11 KiB, in its write) every ~50 payments
_OWN_JOURNAL = {"config": 2048, "ble_bonds": 8192}  # name -> its journal's file size
_HEADER = 16
_MAX_PAYLOAD = 4096


def _sync():
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()


def _u(data, at, n):
    v = 0
    for i in range(n - 1, -1, -1):
        v = (v << 8) | data[at + i]
    return v


def _check(head, payload):
    return sha256(bytes(head[:10]) + payload)[:6]


def _blocks(n):
    return (n + BLOCK - 1) // BLOCK * BLOCK


def encode_record(seq, kind, payload):
    head = bytearray(_HEADER)
    head[0:2] = b"AJ"
    for i in range(4):
        head[2 + i] = (seq >> (8 * i)) & 0xFF
    head[6] = len(payload) & 0xFF
    head[7] = len(payload) >> 8
    head[8] = ord(kind)
    head[10:16] = _check(head, payload)
    rec = bytearray(_blocks(_HEADER + len(payload)))
    rec[0:_HEADER] = head
    rec[_HEADER:_HEADER + len(payload)] = payload
    for i in range(_HEADER + len(payload), len(rec)):
        rec[i] = 0xFF
    return rec


def _decode(payload, kind):
    try:
        v = cbor.loads(payload, _MAX_PAYLOAD, 8, 512, 1024)
    except DecodeError:
        return None
    if kind == "s":
        return v if type(v) is list and len(v) == 2 and type(v[0]) is str else None
    return v if type(v) in (str, int) else None  # "d": a name; "c", "g": a count


def scan(f, size):
    """(first seq, last seq, end offset, {name: (offset, length)}) of a file's chain, or None if
    the file holds no valid chain (an interrupted snapshot, or nothing)."""
    index = {}
    first = last = None
    pos = 0
    snapshot = None  # records still expected to complete a snapshot
    group = 0  # records still expected to complete a group
    pending = []  # a group's records, applied when it is complete
    while pos + _HEADER <= size:
        f.seek(pos)
        head = f.read(_HEADER)
        if len(head) < _HEADER or head[0:2] != b"AJ":
            break
        seq = _u(head, 2, 4)
        n = _u(head, 6, 2)
        kind = chr(head[8])
        if n > _MAX_PAYLOAD or pos + _HEADER + n > size or (last is not None and seq != last + 1):
            break
        payload = f.read(n)
        if len(payload) < n or _check(head, payload) != head[10:16]:
            break
        v = _decode(payload, kind)
        if v is None:
            break
        if first is None:
            if kind == "c":
                snapshot = v
            elif seq != 1:
                break
            first = seq
        elif kind == "c" or (kind == "g" and (group or snapshot is not None)):
            break
        elif snapshot is not None:
            snapshot -= 1
        if kind == "g":
            group, pending, group_at, group_last = v, [], pos, last
        elif group:
            pending.append((kind, v, pos, n))
            group -= 1
        else:
            pending = [(kind, v, pos, n)]
        if not group:
            for kind, v, at, n in pending:
                if kind == "s":
                    index[v[0]] = (at, n)
                elif kind == "d":
                    index.pop(v, None)
            pending = []
        last = seq
        pos += _blocks(_HEADER + n)
        if snapshot == 0:
            snapshot = None
    if group:  # a group cut short: none of it happened
        pos, last = group_at, group_last
        if last is None:
            first = None
    if first is None or snapshot is not None:
        return None
    return first, last, pos, index


class Journal:
    def __init__(self, store, base, size):
        self.store = store
        self.files = (store.root + "/" + base + ".a", store.root + "/" + base + ".b")
        self.size = size
        self._cur = None  # index into self.files of the current file
        self._last = 0
        self._end = 0
        self._index = {}
        self._loaded = False
        self.group = None  # records of a group being collected (Storage.begin)

    def _path(self, i):
        return self.files[i]

    def _replay(self):
        self._loaded = True
        best = None
        for i in (0, 1):
            try:
                with open(self._path(i), "rb") as f:
                    r = scan(f, self.size)
            except OSError:
                r = None
            if r is not None and (best is None or r[0] > best[1][0]):
                best = (i, r)
        if best is None:
            self._cur, self._last, self._end, self._index = None, 0, 0, {}
        else:
            self._cur = best[0]
            self._last, self._end, self._index = best[1][1], best[1][2], best[1][3]

    def _value(self, name):
        at = self._index.get(name)
        if at is None:
            return None
        with open(self._path(self._cur), "rb") as f:
            f.seek(at[0] + _HEADER)
            v = _decode(f.read(at[1]), "s")
        return None if v is None else v[1]

    def _prepare(self, i):
        """The file, preallocated (created once, filled with 0xff)."""
        path = self._path(i)
        try:
            if os.stat(path)[6] >= self.size:
                return
        except OSError:
            pass
        fill = b"\xff" * BLOCK
        with open(path, "wb") as f:
            for _ in range(self.size // BLOCK):
                f.write(fill)
        _sync()

    def _put(self, i, pos, data):
        with open(self._path(i), "r+b") as f:
            f.seek(pos)
            if self.store.step is None:
                f.write(data)
            else:
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                self.store.step("record-half")
                f.write(data[half:])
            f.flush()
        _sync()
        self.store.writes += 1
        self.store.bytes_written += len(data)
        if self.store.step is not None:
            self.store.step("record-written")

    def _compact(self, records):
        """Write the live records, with `records` applied, as one snapshot at the start of the
        other file: the operation's one flash write."""
        other = 1 - self._cur
        self._prepare(other)
        live = {}
        with open(self._path(self._cur), "rb") as f:
            for name in self._index:
                pos, n = self._index[name]
                f.seek(pos + _HEADER)
                live[name] = f.read(n)
        for kind, payload, name in records:
            if kind == "s":
                live[name] = payload
            elif kind == "d":
                live.pop(name, None)
        seq = self._last + 1
        snapshot = bytearray(encode_record(seq, "c", cbor.dumps(len(live))))
        index = {}
        for name in live:
            seq += 1
            payload = live[name]
            index[name] = (len(snapshot), len(payload))
            snapshot.extend(encode_record(seq, "s", payload))
        if len(snapshot) > self.size:
            raise OSError(28)  # ENOSPC: the live state does not fit a journal file
        self._put(other, 0, snapshot)
        self._cur, self._last, self._end, self._index = other, seq, len(snapshot), index

    def _append(self, kind, payload, name):
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError("record too large")
        if self.group is not None:
            self.group.append((kind, payload, name))
            return
        self._write([(kind, payload, name)])

    def commit(self):
        """Write the records appended since Storage.begin() as one group in one write."""
        records, self.group = self.group, None
        if records:
            self._write(records if len(records) == 1 else [("g", cbor.dumps(len(records)), None)] + records)

    def _write(self, records):
        if not self._loaded:
            self._replay()
        if self._cur is None:
            self._prepare(0)
            self._cur, self._last, self._end, self._index = 0, 0, 0, {}
        size = 0
        for r in records:
            size += _blocks(_HEADER + len(r[1]))
        if self._end + size > self.size:
            self._compact(records)
            return
        data = bytearray()
        seq = self._last
        for kind, payload, name in records:
            seq += 1
            at = self._end + len(data)
            data.extend(encode_record(seq, kind, payload))
            if kind == "s":
                self._index[name] = (at, len(payload))
            elif kind == "d":
                self._index.pop(name, None)
        self._put(self._cur, self._end, data)
        self._last = seq
        self._end += len(data)

    def load(self, name):
        self._replay()
        if self._cur is None:
            return None
        return self._value(name)


class Storage:
    def __init__(self, root, step=None):
        self.root = root
        self.step = step
        self.writes = 0  # durable writes (positioned write + flush + sync) since construction
        self.bytes_written = 0
        self._journals = {}
        try:
            os.mkdir(root)
        except OSError:
            pass

    def _journal(self, name):
        base = name if name in _OWN_JOURNAL or name == "journal" else "journal"
        j = self._journals.get(base)
        if j is None:
            j = self._journals[base] = Journal(self, base, _OWN_JOURNAL.get(name, JOURNAL_SIZE))
        return j

    def begin(self):
        """Collect the next saves and removals of the main journal until commit(): they are then
        written as one group, in one flash write; a power cut applies all of them or none."""
        self._journal("journal").group = []

    def commit(self):
        self._journal("journal").commit()

    # -- records (the latest value of a name)

    def load(self, name):
        return self._journal(name).load(name)

    def save(self, name, value):
        self._journal(name)._append("s", cbor.dumps([name, value]), name)

    def remove(self, name):
        self._journal(name)._append("d", cbor.dumps(name), name)

    # -- write-once records (history entries): the same journal

    def put_once(self, name, value):
        self.save(name, value)

    def get_once(self, name):
        return self.load(name)

    def drop_once(self, name):
        self.remove(name)
