"""Real `amiko node` processes on loopback for the node tests.

- Every node gets its own home under the test's tmp dir and a free loopback port.
- Nodes are separate processes started with `amiko node`; the tests drive them only
  through the `amiko` command (like a user), with --json.
- No fixed sleeps: Net.wait(condition) polls (mostly `amiko status --json`) with a
  short, growing interval until the condition holds or a deadline passes; the failure
  says what was awaited and the last value seen.
- Teardown always stops (SIGTERM, then SIGKILL) every child process.

Use the `net` fixture: `net.node("a", meeting_points=["mp-a"])`, `net.connect(a, b)`,
`a.cli("deposit", "b", "1000")`, `net.pay(payer, payee, 10)`. A meeting point is named
NAME@KEY by its node's key (`amiko init --meeting-point NAME` makes it so): `net.mp("mp-a")`
is its full id, and `external=["mp-a"]` names one of a node created before.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amiko import processes
from amiko_testing import leaks
from amiko_testing.waits import wait_for

from amiko_testing.paths import ROOT
_PYTHONPATH = os.pathsep.join([str(ROOT / "shared"), str(ROOT / "host")])
_used_ports = set()
CREDIT_LIMIT = 10 ** 9  # what Net.connect lets each end of a link accept in deposits from the other


def amiko_argv():
    """How to run `amiko`: the installed script next to this Python, else `python -m amiko.cli`."""
    script = Path(sys.executable).parent / "amiko"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "amiko.cli"]


def amiko_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = _PYTHONPATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("AMIKO_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port():
    """A loopback TCP port nobody listens on now (and not handed out before in this process)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port found")


class Result:
    def __init__(self, argv, returncode, stdout, stderr):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self._json = None

    @property
    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.stdout)
            except ValueError:
                raise AssertionError("not one JSON object from %s:\n%s\nstderr: %s" % (self.argv, self.stdout, self.stderr))
        return self._json

    def __repr__(self):
        return "Result(%s -> %d, stdout=%r, stderr=%r)" % (" ".join(self.argv[-4:]), self.returncode, self.stdout[-500:], self.stderr[-500:])


def run_amiko(args, timeout=60, input=None, env=None, cwd=None):
    argv = amiko_argv() + [str(a) for a in args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                       env=env or amiko_env(), cwd=cwd)
    return Result(argv, p.returncode, p.stdout, p.stderr)


class Node:
    """One node: its home, port and (when started) its `amiko node` process."""

    def __init__(self, net, name, home, port):
        self.net = net
        self.name = name
        self.home = Path(home)
        self.port = port
        self.proc = None
        self.stderr_path = self.home.parent / (name + ".stderr")
        self._stderr = None
        self.links = {}  # peer Node name -> this side's link name
        self.env = {}  # extra environment of `amiko node` (e.g. $AMIKO_LOG_LEVEL), kept across restarts
        self.node_args = []  # extra arguments of `amiko node` (e.g. --developer), kept across restarts

    # -- commands

    def run(self, *args, timeout=60, input=None):
        """`amiko CMD --home HOME ARGS... --json` -> Result (any exit status)."""
        return run_amiko([args[0], "--home", self.home, "--json"] + list(args[1:]), timeout=timeout, input=input)

    def cli(self, *args, timeout=60, input=None):
        """Like run() but the command must succeed; returns its JSON object."""
        r = self.run(*args, timeout=timeout, input=input)
        assert r.returncode == 0, "%s failed: %r\nnode stderr tail:\n%s" % (args[0], r, self.stderr_tail())
        return r.json

    def popen(self, *args):
        """Start `amiko CMD --home HOME --json ARGS...` without waiting (see finish())."""
        argv = amiko_argv() + [str(a) for a in [args[0], "--home", self.home, "--json"] + list(args[1:])]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=amiko_env())
        p.argv = argv
        self.net._children.append(p)
        return p

    def status(self):
        return self.cli("status")

    def rpc(self, method, params=None, timeout=30.0):
        """One control-socket call (what the `amiko` commands send), without starting a process."""
        from amiko.node.control import ControlClient

        with ControlClient(str(self.home), str(self.home / "control.sock"), timeout=timeout) as c:
            return c.call(method, params or {}, timeout=timeout)

    # -- process

    def init(self, meeting_points=(), external=(), extra=()):
        args = ["init", "--listen", "127.0.0.1:%d" % self.port, "--name", self.name]
        for mp in meeting_points:
            args += ["--meeting-point", mp]
        for mp in external:
            args += ["--external-meeting-point", mp]
        r = run_amiko(args[:1] + ["--home", self.home, "--json"] + args[1:] + list(extra))
        assert r.returncode == 0, r
        self.key = r.json["key"]
        self.meeting_points = r.json["meeting_points"]
        return r.json

    def start(self, wait=True, env=None, args=None):
        assert not self.running(), "node %s already running" % self.name
        if env is not None:
            self.env = dict(env)
        if args is not None:
            self.node_args = list(args)
        self._stderr = open(self.stderr_path, "ab")
        args = (CHECKED_ARGS if self.net.checked else []) + self.node_args
        self.proc = subprocess.Popen(amiko_argv() + ["node", "--home", str(self.home)] + args,
                                     stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr, env=amiko_env(self.env))
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("node %s exited with %s:\n%s" % (self.name, self.proc.returncode, self.stderr_tail()))
            r = self.run("status", timeout=10)
            return r.returncode == 0
        self.net.wait(ready, timeout, "node %s to answer status" % self.name)

    def signal(self, sig):
        """Send a signal (SIGSTOP / SIGCONT: a node that stops answering, and resumes)."""
        self.proc.send_signal(sig)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20):
        """SIGTERM and wait; a clean stop exits 0."""
        if self.proc is None:
            return None
        if not processes.stop(self.proc, timeout):
            raise AssertionError("node %s did not stop within %s s of SIGTERM:\n%s" % (self.name, timeout, self.stderr_tail()))
        rc = self.proc.returncode
        self._close_stderr()
        self.proc = None
        return rc

    def kill(self):
        """SIGKILL (a crash): nothing gets to clean up."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self._close_stderr()
            self.proc = None

    def _close_stderr(self):
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stderr_tail(self, n=40):
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no stderr)"
        return "\n".join(lines[-n:])

    # -- views of status

    def link_status(self, link):
        for row in self.status()["links"]:
            if row["name"] == link:
                return row
        return None

    def channels(self, status=None):
        return (status or self.status())["channels"]

    def __repr__(self):
        return "Node(%s, port %d)" % (self.name, self.port)


def _balance_fields(ch):
    return ch["local"], ch["remote"], ch.get("reserved", 0), ch.get("locked", 0)


CHECKED_ARGS = ["--developer", "--dev-check-schemas"]  # every test node checks the control API's schemas


class Net:
    """A set of nodes of one test; close() stops them all. checked: every node runs with
    CHECKED_ARGS (a benchmark turns that off: it measures the node as it runs in production)."""

    def __init__(self, tmp_path, checked=True):
        self.dir = Path(tmp_path)
        self.checked = checked
        self.nodes = {}
        self._children = []

    def node(self, name, meeting_points=(), external=(), start=True, extra=()):
        home = self.dir / name
        n = Node(self, name, home, free_port())
        external = [self.mp(x) for x in external]
        self.nodes[name] = n
        n.init(meeting_points, external, extra)
        if start:
            n.start()
        return n

    def mp(self, name):
        """The id NAME@KEY of the meeting point NAME of a node of this net (a full id as it is)."""
        if "@" in name:
            return name
        found = [mp for n in self.nodes.values() for mp in getattr(n, "meeting_points", ())
                 if mp.rpartition("@")[0] == name]
        assert len(found) == 1, "meeting point %s is held by %d nodes of this net (create its node first)" % (
            name, len(found))
        return found[0]

    def wait(self, condition, timeout=30, what="condition"):
        """Poll condition() until it returns a true value (returned); fail after timeout seconds."""
        return wait_for(condition, timeout, what)

    def connect(self, a, b, timeout=20, credit_limit=CREDIT_LIMIT):
        """Link a and b (a prints its URL for b, b connects with it); wait until both see it up.
        Each end accepts deposits from the other up to credit_limit (None: the node's default, 0)."""
        credit = [] if credit_limit is None else ["--credit-limit", credit_limit]
        url = a.cli("link", b.name, *credit)["url"]
        b.cli("link", a.name, url, "--timeout", timeout, *credit)
        a.links[b.name] = b.name
        b.links[a.name] = a.name
        self.wait(lambda: a.link_status(b.name)["connected"] and b.link_status(a.name)["connected"], timeout,
                  "link %s<->%s up on both sides" % (a.name, b.name))
        return url

    def deposit(self, a, b, amount):
        """a opens a channel to b funded with amount; waits until b has recorded it."""
        ch = a.cli("deposit", b.name, amount)["channel"]
        self.wait(lambda: find_channel(b.status(), a.name, ch), 20, "channel %s of %s at %s" % (ch, a.name, b.name))
        return ch

    def request(self, payee, amount, receipt="test"):
        return payee.cli("request", amount, "--receipt", receipt)["url"]

    def pay(self, payer, payee, amount, receipt="test", timeout=60):
        url = self.request(payee, amount, receipt)
        r = payer.run("pay", url, "--yes", "--timeout", timeout, timeout=timeout + 30)
        return r

    def finish(self, procs, timeout=120):
        """Wait for Popen'ed commands; returns a Result per process."""
        out = []
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                stdout, stderr = p.communicate(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                stdout, stderr = p.communicate()
                raise AssertionError("command %s did not finish in %s s: %s %s" % (p.argv, timeout, stdout, stderr))
            out.append(Result(p.argv, p.returncode, stdout, stderr))
        return out

    def quiet(self, nodes=None, timeout=30):
        """Wait until no node has anything reserved, locked or pending, and all links are idle."""
        nodes = list(nodes or self.nodes.values())

        def idle():
            for n in nodes:
                s = n.status()
                if s.get("pending"):
                    return False
                for ch in s["channels"]:
                    if ch.get("reserved") or ch.get("locked"):
                        return False
                for link in s["links"]:
                    if link.get("unacked"):
                        return False
            return True
        self.wait(idle, timeout, "every node quiet (nothing reserved, locked, pending or unacked)")

    def close(self):
        for p in self._children:
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=5)
            except Exception:
                pass
        for n in self.nodes.values():
            if n.running():
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes.values():
            if n.proc is not None:
                try:
                    n.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
                n.kill()


def find_channel(status, link, channel):
    for ch in status["channels"]:
        if ch["link"] == link and ch["id"] == channel:
            return ch
    return None


def channel_balances(status):
    """{(link, channel id): (local, remote)} of open channels."""
    return {(ch["link"], ch["id"]): (ch["local"], ch["remote"]) for ch in status["channels"] if ch.get("state", "open") == "open"}


def total_local(status):
    return sum(ch["local"] for ch in status["channels"] if ch.get("state", "open") != "closed")


@pytest.fixture
def net(tmp_path, request):
    """A Net torn down after the test; a test that passed must leave no payment state past its
    deadline on the nodes still running, and no node may have logged a control call outside the
    schemas (amiko_testing.leaks)."""
    n = Net(tmp_path)
    try:
        yield n
        if getattr(request.node, "amiko_passed", False):
            leaks.check_nodes(n.nodes.values())
            leaks.check_schema_logs(n.nodes.values())
    finally:
        n.close()
