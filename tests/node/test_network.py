"""A multi-hop network with cycles: 8 real nodes, 50 concurrent payments in mixed directions.

Topology (a ring of 8 with two chords, so there are cycles and several routes):

    n0 - n1 - n2 - n3 - n4 - n5 - n6 - n7 - n0,  chords n0 - n4 and n2 - n6

The meeting point "mp-mid" is node n2, in the middle between the payers and payees
(which are 2..4 hops from it). Every link has a channel funded from each side.
"""

import random

import pytest


N = 8
EDGES = [(i, (i + 1) % N) for i in range(N)] + [(0, 4), (2, 6)]
FUNDING = 20000
# (payer, payee) pairs, both directions
PAIRS = [(0, 4), (4, 0), (1, 5), (5, 1), (7, 3), (3, 7), (0, 6), (6, 0)]
PAYMENTS = 50


def build(net):
    nodes = {2: net.node("n2", meeting_points=["mp-mid"])}  # first: the others name mp-mid@KEY
    for i in range(N):
        if i != 2:
            nodes[i] = net.node("n%d" % i, external=["mp-mid"])
    nodes = [nodes[i] for i in range(N)]
    for i, j in EDGES:
        net.connect(nodes[i], nodes[j])
    for i, j in EDGES:
        nodes[i].cli("deposit", nodes[j].name, FUNDING)
        nodes[j].cli("deposit", nodes[i].name, FUNDING)
    net.wait(lambda: all(len(n.status()["channels"]) == 2 * len(n.links) for n in nodes), 30,
             "every deposit recorded at both ends")
    return nodes


def check_channels_agree(nodes):
    """Both ends of every channel agree (mirror images), capacity unchanged, nothing held."""
    views = {}
    for n in nodes:
        s = n.status()
        assert not s["pending"], (n.name, s["pending"])
        for ch in s["channels"]:
            assert ch["reserved"] == 0 and ch["locked"] == 0, (n.name, ch)
            assert ch["local"] + ch["remote"] == FUNDING, (n.name, ch)
            views.setdefault(ch["id"], []).append((n.name, ch["link"], ch["local"], ch["remote"]))
        for link in s["links"]:
            assert link["unacked"] == 0, (n.name, link)
    for cid, ends in views.items():
        assert len(ends) == 2, ends
        (n1, l1, loc1, rem1), (n2, l2, loc2, rem2) = ends
        assert (l1, l2) == (n2, n1), ends
        assert (loc1, rem1) == (rem2, loc2), ends


@pytest.mark.slow
def test_network_of_8_with_cycles_50_concurrent_payments(net):
    nodes = build(net)
    before = {n.name: n.status()["balance"] for n in nodes}
    assert all(b == FUNDING * len(n.links) for n, b in zip(nodes, before.values()))

    rng = random.Random(4)
    plan = []
    for k in range(PAYMENTS):
        payer, payee = PAIRS[k % len(PAIRS)]
        plan.append((nodes[payer], nodes[payee], rng.randint(1, 500), "order %d" % k))

    # requests (in parallel), then all payments at once
    reqs = net.finish([payee.popen("request", amount, "--receipt", text) for _, payee, amount, text in plan])
    urls = []
    for r in reqs:
        assert r.returncode == 0, r
        urls.append(r.json["url"])
    procs = [payer.popen("pay", url, "--yes", "--timeout", 120) for (payer, _, _, _), url in zip(plan, urls)]
    results = net.finish(procs, timeout=240)
    failed = [r for r in results if r.returncode != 0]
    assert not failed, "%d of %d payments failed, first: %r" % (len(failed), len(results), failed[0])
    assert all(r.json["result"] == "committed" for r in results)

    net.quiet(timeout=60)
    expected = dict(before)
    for payer, payee, amount, _ in plan:
        expected[payer.name] -= amount
        expected[payee.name] += amount
    after = {n.name: n.status()["balance"] for n in nodes}
    assert after == expected
    check_channels_agree(nodes)

    # every payment is committed at both endpoints, the payer holding the token as proof
    history = {}
    for n in nodes:
        for p in n.status()["history"]:
            history[(n.name, p["txid"], p["role"])] = p
    for (payer, payee, amount, _), r in zip(plan, results):
        txid = r.json["txid"]
        mine = history[(payer.name, txid, "payer")]
        theirs = history[(payee.name, txid, "payee")]
        assert mine["state"] == "committed" and mine["token"] == r.json["token"] and mine["amount"] == amount
        assert theirs["state"] == "committed" and theirs["amount"] == amount
    assert sum(after.values()) == sum(before.values())
    # nodes that were never payer or payee forwarded without gaining or losing
    ends = {n for pair in PAIRS for n in pair}
    for i in range(N):
        if i not in ends:
            assert after["n%d" % i] == before["n%d" % i]
    # every route went through the meeting point n2: its channels moved
    assert any(ch["local"] not in (0, FUNDING) for ch in nodes[2].status()["channels"])
