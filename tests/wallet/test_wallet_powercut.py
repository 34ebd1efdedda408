"""Power cut at every storage step of a payment: kill the MicroPython process there, boot again,
and the wallet is consistent and the payment resolves (with the provider, at the next contact).

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

    def _check_crash(self):
        if b"CRASH" in self.err:
            self.crashed = self.err[self.err.index(b"CRASH"):].split(b"\n")[0].decode()
            self.kill()
            return True
        return False

    def pump(self, world, until, timeout):
        """Relay between the wallet and the world until until() or a crash or timeout."""
        deadline = time.monotonic() + timeout
        if self._check_crash():
            return "crash"
        out_fd, err_fd = self.proc.stdout.fileno(), self.proc.stderr.fileno()
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
                if self._check_crash():
                    return "crash"
            if until():
                return "done"
        return "timeout"

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


def resolved(root):
    s = state(root)
    return s is not None and s["pay"] is None and s["hist"] >= 1


def history(root):
    s = Storage(root)
    st = s.load("state")
    return [s.get_once("h%d" % i) for i in range(st["hist"])] if st else []


def run_with_crash(tmp_path, crash_at, resume_crash=None, **wallet_options):
    root = str(tmp_path / ("w%d-%s" % (crash_at, resume_crash)))
    provider = Provider()
    world = World(amount=AMOUNT, provider=provider)
    w = Wallet(root, crash_at, **wallet_options)
    w.send(m.to_frame(provision_msg(auto=1000)))
    w.send(m.to_frame(m.Message(wl.TAP, url=PAY_URL)))
    outcome = w.pump(world, lambda: resolved(root), 8)
    if outcome != "crash":
        w.kill()
        assert outcome == "done", "no crash and no outcome at step %d: %s" % (crash_at, w.err[-500:])
        return None
    crashed = w.crashed
    world.to_wallet = []
    if resume_crash is not None:
        # a second power cut, while the wallet resolves the payment after the first one
        w = Wallet(root, resume_crash)
        w.send(m.to_frame(m.Message(wl.TAP)))
        outcome = w.pump(world, lambda: resolved(root), 8)
        w.kill()
        crashed += " / " + (w.crashed or "resolved before step %d" % resume_crash)
        world.to_wallet = []
    # boot again; contacts until the payment is resolved (the first ones may still be provisioning)
    for _ in range(3):
        w = Wallet(root, -1)
        w.send(m.to_frame(m.Message(wl.TAP)))
        outcome = w.pump(world, lambda: resolved(root) or (state(root) or {}).get("pay") is None, 8)
        w.kill()
        if outcome == "done":
            break
    check_consistent(root, provider, world, crashed)
    return crashed


def check_consistent(root, provider, world, crashed):
    st = state(root)
    cfg = Storage(root).load("config")
    if cfg is None or st is None:
        # cut before the wallet was provisioned (or before its first payment state): nothing happened
        assert provider.counter == 0 and not provider.pays, crashed
        return
    assert st["pay"] is None, (crashed, st)
    assert st["counter"] >= provider.counter, (crashed, st["counter"], provider.counter)
    txid = world.payee.txid
    p = provider.pays.get(txid)
    hist = history(root)
    committed = p is not None and p["state"] == wl.COMMITTED
    if committed:
        assert [h["state"] for h in hist] == [wl.COMMITTED], (crashed, hist)
        assert hist[0]["token"] == world.payee.token, crashed
        assert st["balance"] == provider.balance == 10000 - AMOUNT, crashed
        assert st["spent"] == AMOUNT, crashed
    else:
        assert provider.balance == 10000 and provider.available() == 10000, (crashed, p)
        assert all(h["state"] == wl.CANCELLED for h in hist), (crashed, hist)
        assert st["spent"] == 0, (crashed, st)


def test_power_cut_at_every_storage_step(tmp_path):
    crashes = []
    n = 1
    while n < 80:
        crashed = run_with_crash(tmp_path, n)
        if crashed is None:
            break
        crashes.append(crashed)
        n += 1
    assert n < 80, "the payment never finished without a crash"
    # every kind of step was hit, in several records (a cut at "record-half" leaves a torn record)
    for kind in ("record-half", "record-written"):
        assert sum(1 for c in crashes if c.endswith(kind)) >= 4, (kind, crashes)


def test_power_cut_while_resolving_after_a_power_cut(tmp_path):
    # first cuts while a payment is pending (route / lock / paid phases), then again at each of
    # the first storage steps of the recovery
    seen = []
    for first in (4, 6, 8, 10, 12, 14):
        for second in range(1, 6):
            seen.append(run_with_crash(tmp_path, first, resume_crash=second))
    assert sum(1 for c in seen if "/ CRASH" in c) >= 12, seen


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
    assert run_with_crash(tmp_path, -1, heapsize=SMALL_HEAP, path=[out]) is None
    root = str(tmp_path / "w-1-None")
    assert [h["state"] for h in history(root)] == [wl.COMMITTED]
    assert state(root)["balance"] == 10000 - AMOUNT
