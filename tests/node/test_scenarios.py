"""The original's failure scenarios, re-created with real node processes (issue 4).

Network (branches and two cycles), meeting point "mp" at node m:

        a           c
      /   \\       /   \\
    p  ---  m --- ...    q          p - a, p - b, a - b, a - m, b - m,
      \\   /       \\   /           m - c, m - d, c - d, c - q, d - q
        b           d

p pays q. The payer side is funded generously (5000 per channel), the payee side with 1000
(so 2000 finds no route on the payee side, 6000 none on the payer side). Every node: route
and lock time-out 1.5 s, timeout increment 1 s, except the payer p whose local policy waits
4 s for a lock (so a late lock can meet hops that already forgot the route).

The scenarios run one after the other on one network (each starts from a quiet network and
must leave it quiet). After each: every node's balance changed by exactly the payment
(payer, payee) or by zero, both ends of every channel agree, nothing is reserved, locked,
pending or unacknowledged, and every node that carried the transaction shows the same
final state for it (committed: no hop rolled back; cancelled: no hop settled).

Misbehaviour is made with SIGSTOP/SIGCONT and with the developer options of `amiko node`
(amiko.node.paylink_tcp: `amiko node --developer --dev-withhold-token / --dev-lock-delay`).
"""

import signal

import pytest

from amiko_testing.network import Net

TIMEOUTS = ["--route-timeout", "1.5", "--lock-timeout", "1.5", "--timeout-increment", "1"]
PAYER_TIMEOUTS = ["--route-timeout", "1.5", "--lock-timeout", "4", "--timeout-increment", "1"]
BIG, SMALL = 5000, 1000
EDGES = [("p", "a", BIG), ("p", "b", BIG), ("a", "b", BIG), ("a", "m", BIG), ("b", "m", BIG),
         ("m", "c", SMALL), ("m", "d", SMALL), ("c", "d", SMALL), ("c", "q", SMALL), ("d", "q", SMALL)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    n = Net(tmp_path_factory.mktemp("scenarios"))
    try:
        nodes = {}
        for name in ("m", "p", "a", "b", "c", "d", "q"):  # m first: the others name mp@KEY
            nodes[name] = n.node(name, meeting_points=["mp"] if name == "m" else [],
                                 external=["mp"] if name != "m" else [],
                                 extra=PAYER_TIMEOUTS if name == "p" else TIMEOUTS)
        for x, y, amount in EDGES:
            url = nodes[x].rpc("link", {"name": y, "credit_limit": amount})["url"]  # each end accepts amount
            nodes[y].rpc("link", {"name": x, "remote_url": url, "wait": 20, "credit_limit": amount}, timeout=40)
            nodes[x].links[y] = y
            nodes[y].links[x] = x
        wait_links(n, nodes)
        for x, y, amount in EDGES:
            nodes[x].rpc("deposit", {"link": y, "amount": amount})  # funded both ways
            nodes[y].rpc("deposit", {"link": x, "amount": amount})
        n.wait(lambda: all(len(v.rpc("status")["channels"]) == 2 * len(v.links) for v in nodes.values()), 30,
               "every deposit recorded at both ends")
        yield n, nodes
    finally:
        n.close()


def snapshot(nodes):
    return {name: n.rpc("status") for name, n in nodes.items()}


def quiet(snap):
    for s in snap.values():
        if s["pending"] or any(ch["reserved"] or ch["locked"] for ch in s["channels"]):
            return None
        if any(link["unacked"] for link in s["links"]):
            return None
    return snap


def check_after(net, nodes, before, txid, outcome, amount):
    """The invariants after one scenario (see the module doc)."""
    after = net.wait(lambda: quiet(snapshot(nodes)), 40, "every node quiet (nothing reserved, locked, pending)")
    moved = amount if outcome == "committed" else 0
    for name in nodes:
        want = before[name]["balance"] + {"p": -moved, "q": moved}.get(name, 0)
        assert after[name]["balance"] == want, (name, before[name]["balance"], after[name]["balance"], outcome)
    views = {}
    for name, s in after.items():
        assert not s["pending"], (name, s["pending"])
        for ch in s["channels"]:
            assert ch["reserved"] == 0 and ch["locked"] == 0, (name, ch)
            views.setdefault(ch["id"], []).append((name, ch["link"], ch["local"], ch["remote"]))
        for link in s["links"]:
            assert link["unacked"] == 0, (name, link)
    for ends in views.values():
        (n1, l1, loc1, rem1), (n2, l2, loc2, rem2) = ends
        assert (l1, l2) == (n2, n1) and (loc1, rem1) == (rem2, loc2), ends
    history = {(name, h["role"]): h for name, s in after.items() for h in s["history"] if h["txid"] == txid}
    assert history[("p", "payer")]["state"] == outcome, history
    assert history[("q", "payee")]["state"] == outcome, history
    carried = {}
    for name, s in after.items():
        for r in s["routes"]:
            if r["txid"] == txid:
                carried[(name, r["side"])] = r["state"]
    assert ("p", 0) in carried, carried
    forbidden = "rolled_back" if outcome == "committed" else "settled"
    assert forbidden not in carried.values(), carried
    return history[("p", "payer")]


def pay(net, nodes, amount, timeout=60, url=None):
    url = url or net.request(nodes["q"], amount)
    r = nodes["p"].run("pay", url, "--yes", "--timeout", timeout, timeout=timeout + 30)
    assert r.returncode in (0, 1), r
    return r.json


def restart(node, args):
    assert node.stop() == 0
    node.start(args=args)


def wait_links(net, nodes):
    net.wait(lambda: all(all(link["connected"] for link in n.rpc("status")["links"]) for n in nodes.values()), 30,
             "every link up")


def test_scenarios(world):
    net, nodes = world

    # 1. success over the multi-hop network
    before = snapshot(nodes)
    r = pay(net, nodes, 100)
    assert r["result"] == "committed", r
    check_after(net, nodes, before, r["txid"], "committed", 100)

    # 2. no route on the payer side: p's channels cannot carry 6000
    before = snapshot(nodes)
    r = pay(net, nodes, 6000)
    assert r["result"] == "cancelled" and "no route to meeting point %s on the payer side" % net.mp("mp") in r["reason"], r
    row = check_after(net, nodes, before, r["txid"], "cancelled", 6000)
    assert "no route" in row["reason"]

    # 3. no route on the payee side: the payee cancels, the payer withdraws its half from mp
    before = snapshot(nodes)
    r = pay(net, nodes, 2000)
    assert r["result"] == "cancelled", r
    assert r["reason"].startswith("payee cancelled: ") and "no route to meeting point %s on the payee side" % net.mp("mp") in r["reason"], r
    check_after(net, nodes, before, r["txid"], "cancelled", 2000)

    # 4. route time-out on the payer side: a (first choice of p) stops answering
    before = snapshot(nodes)
    nodes["a"].signal(signal.SIGSTOP)
    try:
        r = pay(net, nodes, 50)
    finally:
        nodes["a"].signal(signal.SIGCONT)
    assert r["result"] == "cancelled" and "time-out while routing to meeting point %s (at node " % net.mp("mp") in r["reason"], r
    check_after(net, nodes, before, r["txid"], "cancelled", 50)

    # 5. route time-out on the payee side: c (first choice of q) stops answering
    before = snapshot(nodes)
    nodes["c"].signal(signal.SIGSTOP)
    try:
        r = pay(net, nodes, 50)
    finally:
        nodes["c"].signal(signal.SIGCONT)
    # (payer and payee time out alike: the payer's half waits at mp for the payee's)
    assert r["result"] == "cancelled" and "time-out while routing to meeting point %s (at node " % net.mp("mp") in r["reason"], r
    check_after(net, nodes, before, r["txid"], "cancelled", 50)

    # 6. the payer never locks: every hop forgets the route, the payer's own lock timer ends it
    restart(nodes["p"], ["--developer", "--dev-lock-delay", "never"])
    wait_links(net, nodes)
    before = snapshot(nodes)
    r = pay(net, nodes, 70)
    assert r["result"] == "cancelled" and r["reason"] == "time-out waiting for the lock (at node p)", r
    check_after(net, nodes, before, r["txid"], "cancelled", 70)

    # 7. a lock delayed past the hops' time-outs meets a hop that forgot: rolled back
    restart(nodes["p"], ["--developer", "--dev-lock-delay", "3"])
    wait_links(net, nodes)
    before = snapshot(nodes)
    r = pay(net, nodes, 80)
    assert r["result"] == "cancelled", r
    assert r["reason"].startswith("late lock rolled back: node ") and "had forgotten the transaction" in r["reason"], r
    check_after(net, nodes, before, r["txid"], "cancelled", 80)

    # 8. the payee never releases the token: the commit deadlines pass, hop by hop toward the
    #    payer (one increment more per hop upstream), every hop rolls back
    restart(nodes["p"], [])
    restart(nodes["q"], ["--developer", "--dev-withhold-token"])
    wait_links(net, nodes)
    before = snapshot(nodes)
    r = pay(net, nodes, 90)
    assert r["result"] == "cancelled", r
    assert r["reason"].startswith("rolled back: no commit token before the deadline (at node "), r
    check_after(net, nodes, before, r["txid"], "cancelled", 90)

    # 9. the same with the meeting point killed (SIGKILL) while the payment is locked: its
    #    commit timer is stored, fires after the restart, and the rollback completes
    before = snapshot(nodes)
    url = net.request(nodes["q"], 60)
    proc = nodes["p"].popen("pay", url, "--yes", "--timeout", 60)
    net.wait(lambda: any(x["state"] == "locked" for x in nodes["m"].rpc("status")["pending"]), 20, "the lock at m")
    nodes["m"].kill()
    nodes["m"].start()
    (res,) = net.finish([proc], timeout=90)
    assert res.returncode == 1 and res.json["reason"].startswith("rolled back: no commit token"), res
    check_after(net, nodes, before, res.json["txid"], "cancelled", 60)

    # 10. cancel: refused once locked (payer and payee), allowed before (an open request)
    before = snapshot(nodes)
    req = nodes["q"].rpc("request", {"amount": 30})
    proc = nodes["p"].popen("pay", req["url"], "--yes", "--timeout", 60)
    net.wait(lambda: nodes["q"].rpc("status")["history"][0]["state"] == "locked", 20, "the lock at q")
    for node, ident in ((nodes["p"], req["txid"]), (nodes["q"], req["payment_id"])):
        refused = node.run("cancel", ident)
        assert refused.returncode == 2 and "is locked: it can no longer be cancelled" in refused.stdout + refused.stderr, refused
    (res,) = net.finish([proc], timeout=90)
    check_after(net, nodes, before, res.json["txid"], "cancelled", 30)
    before = snapshot(nodes)
    req = nodes["q"].rpc("request", {"amount": 30})
    assert nodes["q"].cli("cancel", req["payment_id"], "--reason", "sold out")["result"] == "cancelled"
    r = pay(net, nodes, 0, url=req["url"])
    assert r["result"] == "cancelled" and "is cancelled" in r["reason"], r

    # 11. and success again once the payee behaves
    restart(nodes["q"], {})
    wait_links(net, nodes)
    before = snapshot(nodes)
    r = pay(net, nodes, 40)
    assert r["result"] == "committed", r
    check_after(net, nodes, before, r["txid"], "committed", 40)
