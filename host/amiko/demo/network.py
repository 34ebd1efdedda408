"""The demo's network on this machine: real `amiko node` processes, links, channels, the bridge.

    wallet ~~serial~~ bridge (amiko bridge + cashier page, on the shop node)
      :                 |
    provider --- hop1 --- mp (meeting point "mp-demo") --- shop          (hops=3, the default)

DemoNetwork(directory, hops=N) lays out a route of N links between the wallet's provider and
the shop node: provider, hop1 .. hop(N-2), mp, shop (N >= 2); with N = 1 the provider links to
the shop directly and the shop is the meeting point. Channels (IOU, funded by the side that
pays on them) follow the route: provider -> hop1 -> ... -> mp (payer side) and mp -> shop
(payee side). The mp node is the meeting point "mp-demo@<its key>" (a meeting point is named
by its node's key); the shop offers it as an external meeting point. Every node is its own
`amiko node` process with its home under the demo directory; the bridge is an `amiko bridge`
process on the shop node (start_bridge(transports), after the wallet is plugged in). All is
stopped by close() (SIGTERM, then SIGKILL), and gets SIGTERM from the kernel should the demo
process die without closing (PR_SET_PDEATHSIG).
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

from amiko import processes, waits
from amiko.node import daemon, home as homes
from amiko.node.control import ControlClient, ControlError

MEETING_POINT = "mp-demo"
FUNDING = 10_000_000
MAX_HOPS = 12


def route_names(hops):
    """The nodes from the provider to the shop for a route of `hops` links."""
    if not 1 <= hops <= MAX_HOPS:
        raise DemoError("a route of 1..%d hops, not %r" % (MAX_HOPS, hops))
    if hops == 1:
        return ["provider", "shop"]
    return ["provider"] + ["hop%d" % i for i in range(1, hops - 1)] + ["mp", "shop"]


PAGE_TOKENS = {}  # bridge page URL -> its cashier_token (Authorization for the demo's own API calls)


class DemoError(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def amiko_argv():
    return [sys.executable, "-m", "amiko.cli"]


def _die_with_parent():
    """In the child before exec: SIGTERM when the demo process dies, even by SIGKILL (Linux), so
    no node or bridge outlives a killed demo."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def child_env():
    env = dict(os.environ)
    env.pop("AMIKO_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DemoNode:
    def __init__(self, directory, name, meeting_points=(), external=()):
        self.name = name
        self.home = os.path.join(directory, name)
        self.port = free_port()
        home, config, identity = homes.create(self.home, "127.0.0.1:%d" % self.port, name=name,
                                              meeting_points=list(meeting_points), external_meeting_points=list(external))
        daemon.create_database(home)
        self.key = identity.pubkey.hex()
        self.meeting_points = list(config.meeting_points)  # NAME@KEY
        self.log_path = os.path.join(directory, name + ".stderr")
        self.proc = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(amiko_argv() + ["node", "--home", self.home], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, env=child_env(), preexec_fn=_die_with_parent)

    def client(self, timeout=30):
        return ControlClient(self.home, os.path.join(self.home, homes.SOCKET_FILE), timeout=timeout)

    def call(self, method, params=None, timeout=30):
        with self.client(timeout) as c:
            return c.call(method, params, timeout=timeout)

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DemoError("node %s exited (%s): see %s" % (self.name, self.proc.returncode, self.log_path))
            try:
                return self.call("info", timeout=2)
            except ControlError:
                if time.monotonic() > deadline:
                    raise DemoError("node %s did not start within %s s: see %s" % (self.name, timeout, self.log_path))
                time.sleep(0.05)

    def terminate(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        processes.stop(self.proc, 10)
        if self._log is not None:
            self._log.close()
            self._log = None


def wait_for(condition, timeout, what):
    return waits.wait_for(condition, timeout, what, error=DemoError, max_delay=0.3)


class DemoNetwork:
    """Start with start(); .nodes[name], .bridge_url; close() stops everything."""

    def __init__(self, directory, page_listen=None, note=None, bridge_extra="", hops=3):
        self.dir = directory
        self.hops = hops
        self.names = route_names(hops)
        self.channels = list(zip(self.names, self.names[1:]))
        # the meeting point: "mp" on the route, or the shop itself on a one-hop route
        self.mp_node = "mp" if hops > 1 else "shop"
        self.note = note or (lambda text: None)
        self.page_listen = page_listen or "127.0.0.1:%d" % free_port()
        # (the bridge follows the shop node's payment state by push: nothing to tune)
        self.bridge_extra = bridge_extra or ""
        self.nodes = {}
        self.bridge = None
        self.bridge_url = None
        self.bridge_token = None  # the bridge config's cashier_token: the demo's own API calls use it
        self.pairing_code = None  # for a person who opens the page in a browser
        self._bridge_log = None

    def start(self):
        """The nodes, their links and channels (not yet the bridge: start_bridge)."""
        os.makedirs(self.dir, exist_ok=True)
        for name in self.names:  # the mp node before the shop, which names its meeting point by its key
            self.nodes[name] = DemoNode(self.dir, name, meeting_points=[MEETING_POINT] if name == self.mp_node else [],
                                        external=self.nodes["mp"].meeting_points
                                        if name == "shop" and self.mp_node != "shop" else [])
        for n in self.nodes.values():
            n.start()
        for n in self.nodes.values():
            n.wait_ready()
        self.note("nodes up: " + ", ".join("%s :%d" % (n.name, n.port) for n in self.nodes.values()))
        self._each(lambda ab: self.link(self.nodes[ab[0]], self.nodes[ab[1]]), self.channels)
        for a, b in self.channels:
            self.nodes[a].call("deposit", {"link": b, "amount": FUNDING})
        for a, b in self.channels:
            wait_for(lambda: any(ch["link"] == a for ch in self.nodes[b].call("status")["channels"]), 20,
                     "channel %s -> %s recorded at %s" % (a, b, b))
        self.note("route of %d hop%s, channels: %s; meeting point %s on %s"
                  % (self.hops, "s" if self.hops > 1 else "",
                     ", ".join("%s -> %s (%d)" % (a, b, FUNDING) for a, b in self.channels),
                     self.nodes[self.mp_node].meeting_points[0], self.mp_node))
        return self

    @staticmethod
    def _each(fn, items):
        """fn on every item at once (threads: links come up concurrently); the first error is raised."""
        errors = []

        def run(item):
            try:
                fn(item)
            except Exception as e:  # re-raised below, in the caller's thread
                errors.append(e)

        threads = [threading.Thread(target=run, args=(item,), daemon=True) for item in items]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def link(self, a, b):
        # Each end accepts the other's deposit of FUNDING (a peer's deposit is refused beyond the
        # credit limit its operator set, 0 by default).
        url = a.call("link", {"name": b.name, "credit_limit": FUNDING})["url"]
        r = b.call("link", {"name": a.name, "remote_url": url, "wait": 15, "credit_limit": FUNDING}, timeout=30)
        if not r.get("connected"):
            raise DemoError("link %s <-> %s did not come up: %s" % (a.name, b.name, r.get("last_error")))

    def start_bridge(self, transports=()):
        """`amiko bridge` on the shop node, its reader on `transports` (["serial:/dev/pts/N"])."""

        config = os.path.join(self.dir, "bridge.toml")
        self.bridge_token = self.bridge_token or secrets.token_urlsafe(32)
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            # the demo wallet's provider is the one this shop accepts (a node on loopback: listed)
            f.write('node = "%s"\nlisten = "%s"\nshop_name = "Amiko demo shop"\nreceipt = "demo coffee"\n'
                    'transports = %s\nproviders = ["127.0.0.1:%d"]\ncashier_token = "%s"\n%s'
                    % (self.nodes["shop"].home, self.page_listen, json.dumps(list(transports)),
                       self.nodes["provider"].port, self.bridge_token, self.bridge_extra))
        self._bridge_log = open(os.path.join(self.dir, "bridge.stderr"), "ab")
        self.bridge = subprocess.Popen(amiko_argv() + ["bridge", "--config", config, "--json"], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=self._bridge_log, text=True, env=child_env(),
                                       preexec_fn=_die_with_parent)
        line = self.bridge.stdout.readline()
        if not line:
            raise DemoError("the bridge did not start: see %s" % os.path.join(self.dir, "bridge.stderr"))
        info = json.loads(line)
        self.bridge_url, self.pairing_code = info["url"], info.get("pairing_code")
        PAGE_TOKENS[self.bridge_url] = self.bridge_token
        self.note("bridge up: cashier page %s" % self.bridge_url)

    def stop_bridge(self):
        """Stop the bridge (its wallet port is free again)."""
        processes.stop(self.bridge, 10)
        if self._bridge_log is not None:
            self._bridge_log.close()
            self._bridge_log = None

    def close(self):
        self.stop_bridge()
        for n in self.nodes.values():
            n.terminate()  # all at once, then wait for each
        for n in self.nodes.values():
            n.stop()
