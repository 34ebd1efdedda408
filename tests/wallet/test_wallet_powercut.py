"""Power cut at every step of a payment: kill the MicroPython process there, boot again, and the
wallet is consistent and the payment resolves (with the provider, at the next contact). The steps
(tests/mp/wallet_stdio_driver.py) are both halves of every storage write and the moment after
every frame the wallet sent.

The wallet runs under the real MicroPython unix port (tests/mp/wallet_stdio_driver.py) with its
serial port on stdin/stdout; the payee and the provider are the scripted world of
tests/mp/wallet_world.py, running here in CPython, so they outlive the wallet's power cut.
"""

import os
import select
import signal
import subprocess
import time

from amiko_testing.micropython import ROOT, micropython_binary


from amiko_core import messages as m  # noqa: E402
from amiko_core import walletlink as wl  # noqa: E402
from wallet.storage import Storage  # noqa: E402  (the firmware's module, on CPython)
from wallet_world import Provider, World, provision_msg  # noqa: E402

PAY_URL = "amikopay://127.0.0.1:4001/pay-1"
AMOUNT = 500
SETTLE = 0.3


class Wallet:
    def __init__(self, root, crash_at, heapsize=None, path=None):
        path = path or [ROOT / p for p in ("shared", "firmware")]
        env = dict(os.environ, MICROPYPATH=":".join(str(p) for p in list(path) + [ROOT / "tests" / "mp"]))
        heap = ["-X", "heapsize=%s" % heapsize] if heapsize else []
        self.proc = subprocess.Popen([micropython_binary()] + heap + [str(ROOT / "tests/mp/wallet_stdio_driver.py"),
                                      root, str(crash_at)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.crashed = None
        self.err = b""
        self._wait_err((b"READY", b"CRASH"), 10)  # a cut may come while booting (recovery)

    def _wait_err(self, tokens, timeout):
        deadline = time.monotonic() + timeout
        while not any(t in self.err for t in tokens) and time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.05)
            if r:
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                self.err += chunk
        return any(t in self.err for t in tokens)

    def send(self, data):
        if b"CRASH" in self.err:
            return  # hanging at the cut: what it would read is lost anyway
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def steps(self):
        """The names of the steps the wallet went through (the one it was cut at last)."""
        return [line.split()[2].decode() for line in self.err.split(b"\n")
                if line.startswith(b"STEP ") or line.startswith(b"CRASH ")]

    def _check_crash(self, world):
        if b"CRASH" in self.err:
            self.crashed = self.err[self.err.index(b"CRASH"):].split(b"\n")[0].decode()
            out_fd = self.proc.stdout.fileno()
            while select.select([out_fd], [], [], 0)[0]:  # what it sent before the cut has left
                data = os.read(out_fd, 4096)
                if not data:
                    break
                world.from_wallet(data)
            self.kill()
            return True
        return False

    def pump(self, world, until, timeout, settle=SETTLE):
        """Relay between the wallet and the world until until() (and settle seconds more, for
        what the wallet does right after: a cut there still counts) or a crash or timeout."""
        deadline = time.monotonic() + timeout
        if self._check_crash(world):
            return "crash"
        out_fd, err_fd = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        done = False
        while time.monotonic() < deadline:
            for data in world.take():
                self.send(data)
            r, _, _ = select.select([out_fd, err_fd], [], [], 0.02)
            if out_fd in r:
                data = os.read(out_fd, 4096)
                if data:
                    world.from_wallet(data)
            if err_fd in r:
                self.err += os.read(err_fd, 4096)
                if self._check_crash(world):
                    return "crash"
            if not done and until():
                done = True
                deadline = time.monotonic() + settle
        return "done" if done else "timeout"

    def kill(self):
        if self.proc.stdin.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()


def state(root):
    return Storage(root).load("state")


def history(root):
    s = Storage(root)
    st = s.load("state")
    return [s.get_once("h%d" % i) for i in range(st["hist"])] if st else []


def on_flash(root, before):
    """What a cut left: "nothing", "idle" (provisioned, no payment since the `before` ones),
    "pending" (a payment to resolve), "committed"/"cancelled" (resolved, its history entry written)."""
    s = Storage(root)
    st = s.load("state")
    if st is None:
        return "idle" if s.load("config") is not None else "nothing"
    if st["pay"] is not None:
        return "pending"
    if st["hist"] == before:
        return "idle"
    return {wl.COMMITTED: "committed", wl.CANCELLED: "cancelled"}[s.get_once("h%d" % (st["hist"] - 1))["state"]]


class Run:
    def __init__(self, root, crashed, left, steps, offset, resumed=None):
        self.root = root
        self.crashed = crashed  # "CRASH <n> <step>", or None: the payment went through uncut
        self.left = left  # on_flash() right after the (first) cut
        self.steps = steps  # the steps of the first wallet process
        self.offset = offset  # how many of them came before the payment under test
        self.resumed = resumed  # the second cut's line, if it came


def run_with_crash(tmp_path, crash_at, resume_crash=None, before=0, **wallet_options):
    """Provision a wallet, let it pay `before` times, then the payment under test: cut at step
    crash_at of that wallet process (-1: never; see Wallet), then boot again until resolved."""
    root = str(tmp_path / ("w%d-%s-%d" % (crash_at, resume_crash, before)))
    provider = Provider()
    w = Wallet(root, crash_at, **wallet_options)
    w.send(m.to_frame(provision_msg(auto=1000)))
    worlds = []
    for i in range(before):  # in the same process: no boot in between
        world = World(amount=AMOUNT, provider=provider, token=bytes([i + 1]) * 32, payment_id="pay-0-%d" % i)
        worlds.append(world)
        w.send(m.to_frame(m.Message(wl.TAP, url="amikopay://127.0.0.1:4001/pay-0-%d" % i)))
        outcome = w.pump(world, lambda: len(history(root)) > i and world.done, 8)
        assert outcome == "done", "payment %d before the cut payment: %s (cut at %d)" % (i, outcome, crash_at)
    start = len(w.steps())
    world = World(amount=AMOUNT, provider=provider)
    worlds.append(world)
    w.send(m.to_frame(m.Message(wl.TAP, url=PAY_URL)))
    outcome = w.pump(world, lambda: len(history(root)) > before and world.done, 8)
    steps = w.steps()
    if outcome != "crash":
        w.kill()
        assert outcome == "done", "no crash and no outcome at step %d: %s" % (crash_at, w.err[-500:])
        check_consistent(root, provider, worlds, "uncut", before)
        return Run(root, None, on_flash(root, before), steps, start)
    crashed = w.crashed
    left = on_flash(root, before)
    resumed = None
    world.to_wallet = []
    if resume_crash is not None:
        # a second power cut, while the wallet resolves the payment after the first one
        w = Wallet(root, resume_crash)
        w.send(m.to_frame(m.Message(wl.TAP)))
        outcome = w.pump(world, lambda: len(history(root)) > before, 8)
        w.kill()
        resumed = w.crashed
        crashed += " / " + (w.crashed or "resolved before step %d" % resume_crash)
        world.to_wallet = []
    # boot again; contacts until the payment is resolved (the first ones may still be provisioning).
    # First the terminal replays every Status the provider ever sent: none may be taken.
    replays = [msg for x in worlds for d, msg in x.log if d == "in" and msg.type == wl.STATUS]
    errors = len(world.errors)
    for i in range(3):
        w = Wallet(root, -1)
        if i == 0:
            for msg in replays:
                w.send(m.to_frame(msg))
        w.send(m.to_frame(m.Message(wl.TAP)))
        outcome = w.pump(world, lambda: (state(root) or {}).get("pay") is None, 8, settle=SETTLE if i == 0 else 0)
        w.kill()
        if outcome == "done":
            break
    refused = [e for e in world.errors[errors:] if "Status refused" in e or "not provisioned" in e]
    assert len(refused) >= len(replays), (crashed, len(replays), world.errors[errors:])
    check_consistent(root, provider, worlds, crashed, before)
    return Run(root, crashed, left, steps, start, resumed)


def check_consistent(root, provider, worlds, crashed, before):
    world = worlds[-1]
    balance = 10000 - AMOUNT * before
    st = state(root)
    cfg = Storage(root).load("config")
    if cfg is None or st is None:
        # cut before the wallet was provisioned (or before its first payment state): nothing happened
        assert provider.counter == 0 and not provider.pays, crashed
        return
    assert st["pay"] is None, (crashed, st)
    counters = [msg.counter for x in worlds for d, msg in x.log if d == "out" and msg.type == wl.AUTH]
    assert all(a < b for a, b in zip(counters, counters[1:])), ("an Auth counter used twice", crashed, counters)
    # the wallet goes on counting above what it reserved on flash: never a counter the provider saw
    assert max(st["counter"], st["climit"]) >= provider.counter, (crashed, st, provider.counter)
    txid = world.payee.txid
    p = provider.pays.get(txid)
    hist = history(root)
    assert [h["state"] for h in hist[:before]] == [wl.COMMITTED] * before, (crashed, hist)
    hist = hist[before:]
    committed = p is not None and p["state"] == wl.COMMITTED
    if committed:
        assert [h["state"] for h in hist] == [wl.COMMITTED], (crashed, hist)
        assert hist[0]["token"] == world.payee.token, crashed
        assert st["balance"] == provider.balance == balance - AMOUNT, crashed
        assert st["spent"] == AMOUNT * (before + 1), crashed
    else:
        assert provider.balance == balance and provider.available() == balance, (crashed, p)
        assert all(h["state"] == wl.CANCELLED for h in hist), (crashed, hist)
        assert st["spent"] == AMOUNT * before, (crashed, st)


def cut_at_every_step(tmp_path, before):
    """Cut at every step of the payment after `before` uncut ones (and of the provisioning,
    when none): the cut step and what it left, for each."""
    uncut = run_with_crash(tmp_path, -1, before=before)
    cuts = []
    for n in range(uncut.offset + 1, len(uncut.steps) + 1):
        run = run_with_crash(tmp_path, n, before=before)
        assert run.crashed == "CRASH %d %s" % (n, uncut.steps[n - 1]), (run.crashed, uncut.steps)
        cuts.append((uncut.steps[n - 1], run.left))
    assert run_with_crash(tmp_path, len(uncut.steps) + 1, before=before).crashed is None, "more steps than uncut"
    assert uncut.steps[uncut.offset:].count("sent") >= 6, uncut.steps  # Hello, Pay, Confirm, Auth x3, Done
    return cuts


def writes(cuts):
    """Each flash write's two cuts (in its middle: nothing happened; right after it)."""
    return [c for c in cuts if c[0].startswith("record")]


def test_power_cut_at_every_step_of_a_first_payment(tmp_path):
    # three flash writes: the provisioned key, the payment's point of no return, its proof
    assert writes(cut_at_every_step(tmp_path, 0)) == [
        ("record-half", "nothing"), ("record-written", "idle"), ("record-half", "idle"), ("record-written", "pending"),
        ("record-half", "pending"), ("record-written", "committed")]


def test_power_cut_at_every_step_of_a_payment(tmp_path):
    # a wallet that paid before, without a boot since (its reserved Auth counters left): two writes
    cuts = cut_at_every_step(tmp_path, 1)
    assert writes(cuts) == [("record-half", "idle"), ("record-written", "pending"), ("record-half", "pending"),
                            ("record-written", "committed")], cuts


def test_power_cut_while_resolving_after_a_power_cut(tmp_path):
    # first cuts at every step that leaves a payment pending on flash, then again at each of the
    # first steps of the recovery (its storage writes and what it sends)
    uncut = run_with_crash(tmp_path, -1, before=1)
    written = [i + 1 for i, name in enumerate(uncut.steps) if name == "record-written" and i >= uncut.offset]
    pending = range(written[0], written[1])  # from the point of no return to the proof's write
    seen = []
    for first in pending:
        for second in range(1, 8):
            run = run_with_crash(tmp_path, first, resume_crash=second, before=1)
            assert run.left == "pending", (run.crashed, run.left)
            seen.append(run)
    for first in pending:
        second_cuts = [r.resumed.split()[2] for r in seen if r.crashed.startswith("CRASH %d " % first) and r.resumed]
        assert {"record-half", "record-written", "sent"} <= set(second_cuts), (first, second_cuts)


SMALL_HEAP = "128k"  # a payment needs about 110k on the 64-bit unix port from .mpy (modules: ~85k of it)


def test_payment_from_mpy_in_a_small_heap(tmp_path):
    from amiko_testing.micropython import compile_to_mpy

    out = tmp_path / "mpy"
    compile_to_mpy(ROOT / "shared" / "amiko_core", out)
    compile_to_mpy(ROOT / "firmware" / "wallet", out)
    assert not list(out.rglob("*.py"))
    # the wallet loads neither the node-link schema nor the URL parser
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nfrom wallet import app\nprint(sorted(k for k in sys.modules if 'amiko' in k or "
                     "k.startswith('wallet')))\n")
    from amiko_testing.micropython import run_micropython

    r = run_micropython([str(probe)], [out])
    assert r.returncode == 0, r.stderr
    assert "linkschema" not in r.stdout and "amiko_core.url" not in r.stdout, r.stdout
    run = run_with_crash(tmp_path, -1, heapsize=SMALL_HEAP, path=[out])
    assert run.crashed is None
    root = run.root
    assert [h["state"] for h in history(root)] == [wl.COMMITTED]
    assert state(root)["balance"] == 10000 - AMOUNT
