"""SIGKILL in the middle of a group commit (issue 14): nothing acknowledged is lost.

A node applies the link reads of every connection that arrive within one loop iteration in
one store transaction and sends the Acks only after its COMMIT (amiko.node.links). Here the
forwarding node b of a - b - c (b is the meeting point: payments both ways reach it from both
links) runs with `--developer --dev-kill-in-group-commit before|after`: it SIGKILLs itself in
the first group transaction that applies link messages of both connections, just before the
COMMIT or right after it, before any Ack of the group is sent. Then, with b dead:
- what each peer saw acknowledged by b (its acked_out, outbox rows deleted) is applied in
  b's database (b's last_in for that link is at least as far): nothing acknowledged is lost;
- after the restart the payments all commit, the peers' resends are dropped as duplicates
  (in the 'after' case they must be: b committed and acknowledged nothing), both ends of
  every channel agree, every balance moved by exactly the payments, nothing stays locked.
"""

import sqlite3
import time

import pytest

from amiko.node.home import DB_FILE

FUNDING = 100000


def link_seq(node):
    """{link: (next_out, acked_out, last_in)} read from the node's database (read-only)."""
    conn = sqlite3.connect("file:%s?mode=ro" % (node.home / DB_FILE), uri=True)
    try:
        return {row[0]: tuple(row[1:]) for row in conn.execute("SELECT link, next_out, acked_out, last_in FROM link_seq")}
    finally:
        conn.close()


def start(node, args):
    """Start node and wait until its control socket answers (no `amiko status` process per poll:
    on a loaded machine those take seconds)."""
    node.start(wait=False, args=args)

    def answers():
        assert node.proc.poll() is None, "node %s exited:\n%s" % (node.name, node.stderr_tail())
        try:
            return node.rpc("info", timeout=5)
        except Exception:
            return None
    node.net.wait(answers, 60, "node %s to answer on its control socket" % node.name)


def balances(nodes):
    return {n.name: n.status()["balance"] for n in nodes}


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_in_a_group_commit_loses_nothing_acknowledged(net, when):
    b = net.node("b", meeting_points=["mp-b"])
    a = net.node("a", external=["mp-b"])
    c = net.node("c", external=["mp-b"])
    nodes = [a, b, c]
    for x, y in ((a, b), (b, c)):
        net.connect(x, y)
        x.cli("deposit", y.name, FUNDING)
        y.cli("deposit", x.name, FUNDING)
    net.wait(lambda: all(len(n.status()["channels"]) == 2 * len(n.links) for n in nodes), 30, "deposits recorded")
    before = balances(nodes)
    assert b.stop() == 0
    start(b, ["--dev-kill-in-group-commit", when])

    plan = [(a, c, 100 + i) if i % 2 == 0 else (c, a, 200 + i) for i in range(24)]
    urls = [r.json["url"] for r in net.finish([payee.popen("request", amount) for _, payee, amount in plan])]
    procs = [payer.popen("pay", url, "--yes", "--timeout", 120) for (payer, _, _), url in zip(plan, urls)]
    deadline = time.monotonic() + 90
    while b.proc.poll() is None:
        assert time.monotonic() < deadline, "b never applied a group of two connections' messages"
        time.sleep(0.01)
    assert b.proc.returncode == -9, b.stderr_tail()
    assert "DEVELOPER --dev-kill-in-group-commit: SIGKILL %s the COMMIT" % when in b.stderr_tail(200)
    b.kill()  # reap it (the net's bookkeeping)

    at_b = link_seq(b)
    for peer in (a, c):
        seen = link_seq(peer)[b.name]
        # The peer deleted everything up to acked_out from its outbox: b must hold all of it.
        assert seen[1] <= at_b[peer.name][2], (peer.name, seen, at_b[peer.name])
    start(b, [])
    results = net.finish(procs, timeout=180)
    bad = [r for r in results if r.returncode != 0 or r.json.get("result") != "committed"]
    assert not bad, "%d payments did not commit, first: %r" % (len(bad), bad[0])

    net.quiet(nodes, timeout=60)
    expected = dict(before)
    for payer, payee, amount in plan:
        expected[payer.name] -= amount
        expected[payee.name] += amount
    assert balances(nodes) == expected
    views = {}
    for n in nodes:
        for ch in n.status()["channels"]:
            assert ch["local"] + ch["remote"] == FUNDING, (n.name, ch)
            assert not ch["reserved"] and not ch["locked"], (n.name, ch)
            views.setdefault(ch["id"], []).append((ch["local"], ch["remote"]))
    for ends in views.values():
        assert len(ends) == 2 and ends[0] == ends[1][::-1], ends
    if when == "after":
        # b committed the group and acknowledged none of it: the peers resent, b dropped them.
        assert sum(link["duplicates"] for link in b.status()["links"]) > 0
