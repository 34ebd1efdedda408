"""Wallet time per payment on the MicroPython unix port, split by kind of work. Prints JSON lines.

    MICROPYPATH=<flashed .mpy set>:tests/mp micropython bench/wallet_micropython.py ROOT PAYMENTS [pure]

The wallet (wallet.app.App, from the .mpy files `amiko flash` deploys) pays PAYMENTS times against
the scripted payee and provider of tests/mp/wallet_world.py, in one process (no serial port, no
network: only the wallet's own work is timed). Test-only wrapper, no change to the firmware's
behaviour: after the imports, every module-level binding of the functions below is replaced by
a wrapper that adds its *exclusive* time (its own time minus that of wrapped callees) to a
category, but only while the wallet runs (inside App.step()); the world's own hashing and CBOR
are not counted.
    crypto   hashing.sha256, hash160, ripemd160, hmac_sha256
    cbor     cbor.dumps/loads, messages.to_frame/from_frame, frame.encode, FrameDecoder.feed
    storage  wallet.storage.Storage load/save/put_once/get_once/drop_once (file I/O, minus the
             checksum and CBOR they call)
    other    everything else inside App.step() (wallet logic, payer state machine, frame loop)
"pure": the RIPEMD-160 of amiko_core.hashing runs its pure-Python compression even where the
viper one loaded (as on a port built without the viper emitter): the interpreted-only figure.
Each row says which one ran ("ripemd160").
The filesystem layer of wallet.storage (its module globals `open` and `os`) is replaced by a
counting one: per payment, files opened for writing (each is a flash write: LittleFS commits it
at close/sync), bytes written, os.remove, os.rename and os.sync calls ("fs_*" fields).
"""

import sys
import time

# the script's own directory comes first on sys.path; bench/wallet.py there is not the firmware's wallet/
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("bench")]

from amiko_core import cbor, frame, hashing
from amiko_core import messages as m
from amiko_core import walletlink as wl
from wallet.app import App
from wallet import storage as storage_mod
from wallet.storage import Storage
from wallet_world import FakeBoard, Provider, World, provision_msg

FAST = {"receipt": 2, "confirm": 5, "routing": 6, "locking": 3}
CATEGORIES = ("crypto", "cbor", "storage")
acc = {"crypto": 0, "cbor": 0, "storage": 0}
calls = {"crypto": 0, "cbor": 0, "storage": 0}
stack = []
active = [False]


def wrap(cat, fn):
    def wrapper(*a, **k):
        if not active[0]:
            return fn(*a, **k)
        t0 = time.ticks_us()
        stack.append(0)
        try:
            return fn(*a, **k)
        finally:
            dt = time.ticks_diff(time.ticks_us(), t0)
            inner = stack.pop()
            acc[cat] += dt - inner
            calls[cat] += 1
            if stack:
                stack[-1] += dt

    return wrapper


def patch_everywhere(cat, fn):
    w = wrap(cat, fn)
    for mod in list(sys.modules.values()):
        for name in dir(mod):
            try:
                if getattr(mod, name) is fn:
                    setattr(mod, name, w)
            except (AttributeError, TypeError):
                pass


def instrument():
    for name in ("sha256", "hash160", "ripemd160", "hmac_sha256"):
        patch_everywhere("crypto", getattr(hashing, name))
    for mod, name in ((cbor, "dumps"), (cbor, "loads"), (m, "to_frame"), (m, "from_frame"), (frame, "encode")):
        patch_everywhere("cbor", getattr(mod, name))
    frame.FrameDecoder.feed = wrap("cbor", frame.FrameDecoder.feed)
    for name in ("load", "save", "put_once", "get_once", "drop_once"):
        setattr(Storage, name, wrap("storage", getattr(Storage, name)))
    for name in ("save", "put_once"):
        setattr(Storage, name, count_writes(getattr(Storage, name)))


writes = [0]
FS = ("fs_files_written", "fs_bytes", "fs_removes", "fs_renames", "fs_syncs")
fs = {}


class CountingFile:
    def __init__(self, f, writing):
        self.f = f
        if writing:
            fs["fs_files_written"] += 1

    def write(self, data):
        fs["fs_bytes"] += len(data)
        return self.f.write(data)

    def read(self, *a):
        return self.f.read(*a)

    def seek(self, *a):
        return self.f.seek(*a)

    def flush(self):
        return self.f.flush()

    def close(self):
        return self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


class CountingOs:
    def __init__(self, real):
        self.real = real
        if hasattr(real, "sync"):  # (the unix port has none: the storage then does without)
            self.sync = self._sync

    def __getattr__(self, name):
        return getattr(self.real, name)

    def remove(self, path):
        fs["fs_removes"] += 1
        return self.real.remove(path)

    def rename(self, a, b):
        fs["fs_renames"] += 1
        return self.real.rename(a, b)

    def _sync(self):
        fs["fs_syncs"] += 1
        return self.real.sync()


def counting_open(path, mode="r"):
    return CountingFile(open(path, mode), "w" in mode or "+" in mode or "a" in mode)


def instrument_fs():
    for k in FS:
        fs[k] = 0
    storage_mod.open = counting_open
    storage_mod.os = CountingOs(storage_mod.os)


def count_writes(fn):
    def wrapper(*a, **k):
        if active[0]:
            writes[0] += 1
        return fn(*a, **k)

    return wrapper


def interpreted_only():
    hashing._viper = None
    hashing.RIPEMD160_BACKEND = "pure"


def main():
    root = sys.argv[1]
    payments = int(sys.argv[2])
    if sys.argv[3:] == ["pure"]:
        interpreted_only()
    instrument()
    instrument_fs()
    board = FakeBoard(root)
    app = App(board, timeouts=FAST)
    provider = Provider(balance=10 ** 9)

    def run_until(world, done, limit=2000):
        total = 0
        for _ in range(limit):
            active[0] = True
            t0 = time.ticks_us()
            app.step()
            total += time.ticks_diff(time.ticks_us(), t0)
            active[0] = False
            sent = board.serial.sent
            board.serial.sent = []
            if world is not None:
                for data in sent:
                    world.from_wallet(data)
                for data in world.take():
                    board.serial.inbox.extend(data)
            if done():
                return total
        raise RuntimeError("the payment did not finish")

    # no auto-confirm budget runs out over the payments (each would stop for a button)
    board.serial.inbox.extend(m.to_frame(provision_msg(limit=5000, daily=10 ** 9, auto=1000, auto_count=65535,
                                                       auto_total=10 ** 9, auto_new=65535)))
    run_until(None, lambda: app.wallet.provisioned())
    for i in range(payments):
        for k in CATEGORIES:
            acc[k] = 0
            calls[k] = 0
        writes[0] = 0
        for k in FS:
            fs[k] = 0
        token = bytes([(i % 250) + 1]) * 32
        world = World(amount=500, provider=provider, token=token, payment_id="pay-%d" % i)
        board.serial.inbox.extend(m.to_frame(m.Message(wl.TAP, url="amikopay://127.0.0.1:4001/pay-%d" % i)))
        total = run_until(world, lambda: app.wallet.state["pay"] is None and app.wallet.state["hist"] == i + 1)
        if not world.done or world.done[-1].state != wl.COMMITTED:
            raise RuntimeError("payment %d not committed" % i)
        row = {"kind": "payment", "i": i, "total_us": total, "file_writes": writes[0],
               "ripemd160": getattr(hashing, "RIPEMD160_BACKEND", "pure")}
        for k in CATEGORIES:
            row[k + "_us"] = acc[k]
            row[k + "_calls"] = calls[k]
        for k in FS:
            row[k] = fs[k]
        print(repr(row).replace("'", '"'))


main()
