"""Bounded connections on a real node process (issue 11): 600 stalled connections from one
address, of three kinds (TCP connect then nothing; half a BOLT 8 handshake; a complete
handshake then no frame), while two authenticated nodes keep paying each other through
the same listener. The payments commit; the stalled connections are closed by the
deadlines or evicted (oldest unauthenticated first), and the node logs it."""

import socket
import threading

from amiko.node.home import Home
from amiko.node.identity import Identity
from amiko.wire import noise


STALLED = 600
DEADLINE = 1.0  # the attacked node's handshake and first-frame deadlines in this test


def tune(node, **settings):
    """Change node.toml settings of a node that is not running (documented in home.py)."""
    home = Home(str(node.home))
    config = home.load_config()
    for key, value in settings.items():
        setattr(config, key, value)
    home.save_config(config)


class Attacker(threading.Thread):
    """Opens STALLED connections to port, cycling through the three kinds, and keeps them."""

    def __init__(self, port, key):
        super().__init__(daemon=True)
        self.port, self.key = port, bytes.fromhex(key)
        self.socks = []
        self.errors = []
        self.done = threading.Event()

    def run(self):
        try:
            for i in range(STALLED):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                kind = i % 3
                if kind == 1:
                    s.sendall(noise.Initiator(Identity.generate(), self.key).act_one()[:25])
                elif kind == 2:
                    ini = noise.Initiator(Identity.generate(), self.key)
                    s.sendall(ini.act_one())
                    act_two = b""
                    while len(act_two) < noise.ACT_TWO_SIZE:
                        chunk = s.recv(noise.ACT_TWO_SIZE - len(act_two))
                        if not chunk:
                            break  # evicted before it answered: fine, it stays a stalled socket
                        act_two += chunk
                    if len(act_two) == noise.ACT_TWO_SIZE:
                        s.sendall(ini.read_act_two(act_two))
                self.socks.append(s)
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.errors.append(e)
        finally:
            self.done.set()

    def closed_by_node(self):
        n = 0
        for s in self.socks:
            s.setblocking(False)
            try:
                data = s.recv(4096)
                n += data == b""
            except BlockingIOError:
                pass
            except ConnectionError:
                n += 1
        return n

    def close(self):
        for s in self.socks:
            s.close()


def test_600_stalled_connections_do_not_stop_payments(net):
    a = net.node("a", meeting_points=["mp-a"], start=False)
    tune(a, handshake_timeout=DEADLINE, first_frame_timeout=DEADLINE)
    a.start()
    b = net.node("b")
    net.connect(a, b)
    net.deposit(b, a, 10000)
    attacker = Attacker(a.port, a.key)
    attacker.start()
    paid = 0
    try:
        # b keeps paying a (a new payment-link connection to a's listener each time) while the
        # attack runs, and after all its connections are open
        while not attacker.done.is_set() or paid < 4:
            r = net.pay(b, a, 10, timeout=60)
            assert r.returncode == 0 and r.json["result"] == "committed", (r, a.stderr_tail())
            paid += 1
        attacker.join(30)
        assert not attacker.errors, attacker.errors
        assert len(attacker.socks) == STALLED
        # every stalled connection is closed by the node: evicted, or at a deadline
        net.wait(lambda: attacker.closed_by_node() == STALLED, 10 + 2 * DEADLINE,
                 "the node to close all %d stalled connections" % STALLED)
        listener = a.status()["listener"]
        assert listener["unauthenticated"] == 0
        assert listener["evicted"] > 0 and listener["handshake_timeouts"] > 0 and listener["first_frame_timeouts"] > 0
        assert listener["evicted"] + listener["handshake_timeouts"] + listener["first_frame_timeouts"] >= STALLED
        assert a.link_status("b")["connected"] and b.link_status("a")["connected"]
    finally:
        attacker.close()
    log = (a.home / "node.log").read_text(errors="replace")
    assert "dropped unauthenticated connection from 127.0.0.1:" in log
    assert "no handshake within 1.0 s" in log and "no first frame within 1.0 s" in log
    net.quiet()
    assert a.status()["balance"] == 10 * paid and b.status()["balance"] == 10000 - 10 * paid
