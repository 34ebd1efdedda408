"""Meeting points bound to node keys, with real `amiko node` processes (vulnerability 6).

    p --- h --- m        m is the meeting point mp@<m's key>; q offers it in its requests
          |
          q

h is hostile: it tries to become m's meeting point. Through the commands it is refused
(`amiko meetingpoint` and node.toml); with the id written into its own database (modified
software) it does act as that meeting point for both halves, but the HaveRoutes it sends are
signed with its own key: p and q refuse them, the payment is cancelled at both ends, nothing
was locked, no balance moved, every channel agrees. The same network then pays through m
(h honest again) to show that the refusal was about the key only.
"""

import sqlite3

from amiko_testing.network import run_amiko

FUNDING = 10000


def build(net):
    m = net.node("m", meeting_points=["mp"])  # first: the others name mp@<m's key>
    p = net.node("p", external=["mp"])
    h = net.node("h", external=["mp"], start=False)
    q = net.node("q", external=["mp"])
    return m, p, h, q


def connect(net, nodes, edges):
    for a, b in edges:
        net.connect(nodes[a], nodes[b])
        net.deposit(nodes[a], nodes[b], FUNDING)
        net.deposit(nodes[b], nodes[a], FUNDING)


def balances(nodes):
    return {n.name: n.status()["balance"] for n in nodes}


def channels_agree(nodes):
    views = {}
    for n in nodes:
        for ch in n.status()["channels"]:
            views.setdefault(ch["id"], []).append((ch["local"], ch["remote"]))
    return all(len(v) == 2 and v[0] == v[1][::-1] for v in views.values())


def history(node, txid):
    return [p for p in node.status()["history"] if p["txid"] == txid]


def test_hostile_node_cannot_claim_or_forge_a_meeting_point(net):
    m, p, h, q = build(net)
    victim = net.mp("mp")
    assert victim == "mp@" + m.key
    # claiming it through node.toml: the node refuses to start, saying why
    toml = (h.home / "node.toml").read_text()
    (h.home / "node.toml").write_text(toml.replace("meeting_points = []", 'meeting_points = ["%s"]' % victim))
    r = run_amiko(["node", "--home", h.home], timeout=60)
    assert r.returncode != 0 and "another node's key" in r.stderr, r
    (h.home / "node.toml").write_text(toml)
    h.start()
    # claiming it at run time: refused, nothing added
    r = h.run("meetingpoint", victim)
    assert r.returncode != 0 and "another node's key" in r.stdout + r.stderr, r
    assert h.status()["meeting_points"] == []

    nodes = {n.name: n for n in (m, p, h, q)}
    connect(net, nodes, (("p", "h"), ("h", "m"), ("q", "h")))
    every = list(nodes.values())
    before = balances(every)

    # h writes m's meeting point into its own database (software that skips the check)
    h.stop()
    db = sqlite3.connect(str(h.home / "node.db"))
    with db:
        db.execute("INSERT INTO meeting_points (id, created) VALUES (?, 0)", (victim,))
    db.close()
    h.start()
    net.wait(lambda: all(link["connected"] for n in every for link in n.status()["links"]), 30, "links up again")

    r = net.pay(p, q, 700)
    assert r.returncode != 0, r
    paid = r.json
    assert paid["result"] == "cancelled", paid
    net.quiet(every)
    assert balances(every) == before
    assert channels_agree(every)
    # both ends agree: cancelled; the payer never locked
    assert [x["state"] for x in history(p, paid["txid"])] == ["cancelled"]
    assert [x["state"] for x in history(q, paid["txid"])] == ["cancelled"]
    assert not any(x.get("token") for x in history(p, paid["txid"]) + history(q, paid["txid"]))
    # whoever got h's forged HaveRoute first refused it with a clear line in its log; the other end
    # may have heard the payment was cancelled before h's HaveRoute reached it, which is just as safe
    logs = {n.name: (n.home / "node.log").read_text() for n in (p, q)}
    refused = [name for name, log in logs.items() if "refused HaveRoute from link h" in log]
    assert refused, logs
    for name in refused:
        assert victim in logs[name] and "not the meeting point's" in logs[name], name
    # m never saw the payment
    assert not any(x["txid"] == paid["txid"] for x in m.status()["routes"])

    # h removes the claim: the same payment now routes through m and commits
    h.stop()
    db = sqlite3.connect(str(h.home / "node.db"))
    with db:
        db.execute("DELETE FROM meeting_points")
    db.close()
    h.start()
    net.wait(lambda: all(link["connected"] for n in every for link in n.status()["links"]), 30, "links up again")
    r = net.pay(p, q, 700)
    assert r.returncode == 0 and r.json["result"] == "committed", r
    net.quiet(every)
    after = balances(every)
    assert after["p"] == before["p"] - 700 and after["q"] == before["q"] + 700
    assert channels_agree(every)
