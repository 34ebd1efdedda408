"""Restarts: stop and start nodes between and during payments; no message lost or applied twice.

Network: a - b - c and a - d - c (a cycle); b is the meeting point "mp-b". a and c pay each
other. "Lost" would leave a payment unfinished (it never commits, something stays reserved
or pending); "applied twice" would break the balances (a channel's two ends disagree, or a
node's balance moves by more than it paid or received).
"""

import time

import pytest


FUNDING = 100000


def build(net):
    b = net.node("b", meeting_points=["mp-b"])  # first: the others name its meeting point mp-b@KEY
    a = net.node("a", external=["mp-b"])
    c = net.node("c", external=["mp-b"])
    d = net.node("d")
    for x, y in ((a, b), (b, c), (a, d), (d, c)):
        net.connect(x, y)
        x.cli("deposit", y.name, FUNDING)
        y.cli("deposit", x.name, FUNDING)
    nodes = [a, b, c, d]
    net.wait(lambda: all(len(n.status()["channels"]) == 2 * len(n.links) for n in nodes), 30, "deposits recorded")
    return nodes


def balances(nodes):
    return {n.name: n.status()["balance"] for n in nodes}


def check_consistent(net, nodes, before, paid):
    """Every payment in paid ((payer, payee, amount)) applied exactly once; channels agree."""
    net.quiet(nodes, timeout=60)
    expected = dict(before)
    for payer, payee, amount in paid:
        expected[payer.name] -= amount
        expected[payee.name] += amount
    assert balances(nodes) == expected
    views = {}
    for n in nodes:
        for ch in n.status()["channels"]:
            assert ch["local"] + ch["remote"] == FUNDING, (n.name, ch)
            views.setdefault(ch["id"], []).append((ch["local"], ch["remote"]))
    for ends in views.values():
        assert len(ends) == 2 and ends[0] == ends[1][::-1], ends


def wait_connected(net, nodes):
    net.wait(lambda: all(all(link["connected"] for link in n.status()["links"]) for n in nodes), 30,
             "every link reconnected")


def pay_all(net, plan, timeout=90):
    urls = [r.json["url"] for r in net.finish([payee.popen("request", amount) for _, payee, amount in plan])]
    return [payer.popen("pay", url, "--yes", "--timeout", timeout) for (payer, _, _), url in zip(plan, urls)]


def wait_in_flight(net, node, procs, timeout=30):
    """Wait until node holds a pending route of procs' payments (polled on the control socket,
    which is fast enough not to miss a short window); fail with the payers' output if they all
    finished first, since then the crash would test nothing."""
    deadline = time.monotonic() + timeout
    while not node.rpc("status")["pending"]:
        if all(p.poll() is not None for p in procs):
            results = net.finish(procs)
            raise AssertionError("every payment ended before %s held one; first: %r" % (node.name, results[0]))
        assert time.monotonic() < deadline, "no payment reached %s within %s s" % (node.name, timeout)
        time.sleep(0.005)


def committed(results):
    bad = [r for r in results if r.returncode != 0 or r.json.get("result") != "committed"]
    assert not bad, "%d payments did not commit, first: %r" % (len(bad), bad[0])


@pytest.mark.slow
def test_restart_between_payments(net):
    nodes = build(net)
    a, b, c, d = nodes
    before = balances(nodes)
    paid = []
    for payer, payee, amount in ((a, c, 100), (c, a, 40)):
        assert net.pay(payer, payee, amount).returncode == 0
        paid.append((payer, payee, amount))
    # clean stop and start of the meeting point and of both endpoints
    for n in (b, a, c):
        assert n.stop() == 0
        n.start()
    wait_connected(net, nodes)
    for payer, payee, amount in ((a, c, 7), (c, a, 9)):
        r = net.pay(payer, payee, amount)
        assert r.returncode == 0, r
        paid.append((payer, payee, amount))
    # a crash (SIGKILL) of the meeting point and of a forwarding node, then payments again
    b.kill()
    d.kill()
    b.start()
    d.start()
    wait_connected(net, nodes)
    for payer, payee, amount in ((a, c, 11), (c, a, 13)):
        r = net.pay(payer, payee, amount)
        assert r.returncode == 0, r
        paid.append((payer, payee, amount))
    check_consistent(net, nodes, before, paid)


@pytest.mark.slow
def test_payments_wait_for_a_stopped_meeting_point(net):
    """The meeting point is down while payments start: their messages wait in the outboxes
    and are delivered (once) when it is back."""
    nodes = build(net)
    a, b, c, d = nodes
    before = balances(nodes)
    assert b.stop() == 0
    plan = [(a, c, 10 + i) if i % 2 == 0 else (c, a, 20 + i) for i in range(10)]
    procs = pay_all(net, plan)
    # the payments are in flight: both endpoints have routes pending toward the meeting point
    net.wait(lambda: a.status()["pending"] and c.status()["pending"], 30, "payments waiting for the meeting point")
    assert all(p.poll() is None for p in procs)
    b.start()
    committed(net.finish(procs, timeout=120))
    check_consistent(net, nodes, before, plan)


@pytest.mark.slow
def test_meeting_point_crashes_during_payments(net):
    """SIGKILL of the meeting point while payments flow through it, then restart."""
    nodes = build(net)
    a, b, c, d = nodes
    before = balances(nodes)
    plan = [(a, c, 100 + i) if i % 2 == 0 else (c, a, 200 + i) for i in range(20)]
    procs = pay_all(net, plan)
    wait_in_flight(net, b, procs)
    b.kill()
    b.start()
    committed(net.finish(procs, timeout=120))
    # and a clean stop of a forwarding-capable node in the middle of more payments
    plan2 = [(c, a, 30 + i) if i % 2 == 0 else (a, c, 50 + i) for i in range(10)]
    procs = pay_all(net, plan2)
    assert b.stop() == 0
    b.start()
    committed(net.finish(procs, timeout=120))
    check_consistent(net, nodes, before, plan + plan2)
