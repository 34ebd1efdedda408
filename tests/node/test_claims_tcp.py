"""Issue 11 with real `amiko node` processes: a neighbour that takes the token and refuses to
settle cannot take B's claim (it becomes a dispute, bounded by the trust the operator
extended), and a peer's Deposit is refused beyond the credit limit the operator set.

The thief is a real node started with `amiko node --developer`, told through its control
method developer_refuse_settle to cheat link b: it keeps the token the shop gives it, pays
nothing, and answers b's RequestCommit with an Error over the real link."""

import time

from amiko_testing.network import channel_balances, find_channel, run_amiko, total_local  # noqa: F401 (fixture)

TIMEOUTS = ["--route-timeout", "4", "--lock-timeout", "4", "--timeout-increment", "3"]
FUNDING = 5000


def log_of(node):
    return (node.home / "node.log").read_text(errors="replace")


def route_at(status, txid, side=0):
    for r in status["pending"]:
        if r["txid"] == txid and r["side"] == side:
            return r
    return None


def test_neighbour_that_takes_the_token_and_refuses_to_settle_leaves_a_dispute_not_a_theft(net):
    x = net.node("x", extra=TIMEOUTS, start=False)
    x.start(args=["--developer"])
    b = net.node("b", extra=TIMEOUTS)
    s = net.node("s", meeting_points=["mp-s"], extra=TIMEOUTS)
    net.connect(x, b, credit_limit=FUNDING)   # b trusts x for FUNDING: x's deposit is within it
    net.connect(b, s, credit_limit=FUNDING)
    ch_xb = net.deposit(x, b, FUNDING)
    net.deposit(b, s, FUNDING)
    before = {n.name: total_local(n.status()) for n in (x, b, s)}
    assert x.rpc("developer_refuse_settle", {"link": "b"})["refusing"] == ["b"]

    r = net.pay(x, s, 3000, receipt="stolen coffee")
    assert r.returncode == 0, r
    assert r.json["result"] == "committed" and r.json["token"]  # x holds the proof of payment
    txid, token = r.json["txid"], r.json["token"]

    # x refused b's claim long before b's deadline: b keeps it and claims again.
    net.wait(lambda: log_of(b).count("refused by link x") >= 2, 30, "b's claim refused twice and sent again")
    st = b.status()
    claim = route_at(st, txid)
    assert claim is not None and claim["up_status"] == "requested", st["pending"]
    assert time.time() < claim["up_deadline"]
    assert st["disputes"] == []
    assert find_channel(st, "x", ch_xb)["locked"] == 3000

    # Past b's deadline, with x still refusing: a dispute on the channel, reported at WARNING.
    st = net.wait(lambda: (lambda v: v if v["disputes"] else None)(b.status()), 60, "the dispute at b")
    (d,) = st["disputes"]
    assert (d["link"], d["channel"], d["txid"], d["amount"], d["token"], d["state"]) == (
        "x", ch_xb, txid, 3000, token, "open")
    assert d["created"] >= claim["up_deadline"] and "refused" in d["reason"]
    assert "WARNING amiko.claims: DISPUTE on channel %d of link x: 3000 owed" % ch_xb in log_of(b)
    net.quiet([x, b, s])
    text = run_amiko(["status", "--home", b.home]).stdout  # the human view lists it too
    assert "disputes: 1" in text and "amount=3000" in text

    # Conservation: b paid the shop; what x owes it is the dispute; both ends of every channel agree.
    after = {n.name: total_local(n.status()) for n in (x, b, s)}
    assert after["s"] == before["s"] + 3000 and after["x"] == before["x"]
    assert after["b"] + d["amount"] == before["b"]
    views = {n.name: channel_balances(n.status()) for n in (x, b, s)}
    for (p, q) in (("x", "b"), ("b", "s")):
        for (link, cid), (local, remote) in views[p].items():
            if link == q:
                assert views[q][(p, cid)] == (remote, local)

    # The disputed channel forwards no new payment, even once x behaves.
    x.rpc("developer_refuse_settle", {"link": "b", "refuse": False})
    again = net.pay(x, s, 10, timeout=30)
    assert again.returncode != 0, again
    net.quiet([x, b, s])
    assert channel_balances(b.status())[("x", ch_xb)] == (0, FUNDING)


def test_peer_deposits_beyond_the_operators_credit_limit_are_refused_and_both_ends_agree(net):
    a = net.node("a")
    c = net.node("c")
    net.connect(a, c, credit_limit=None)  # nobody set a limit: c accepts no deposit from a

    def channels(node, link):
        return sorted((ch["id"], ch["local"], ch["remote"]) for ch in node.status()["channels"] if ch["link"] == link)

    def refused(amount):
        kept = channels(a, "c")
        ch = a.cli("deposit", "c", amount)["channel"]
        net.wait(lambda: channels(a, "c") == kept, 20, "a drops its refused channel %d" % ch)
        assert [row[0] for row in channels(c, "a")] == [row[0] for row in kept]
        return ch

    refused(1000)
    assert "deposit of 1000 refused: link a has no credit limit" in log_of(c)
    assert "link c refused our deposit of 1000" in log_of(a)
    (row,) = [lk for lk in c.status()["links"] if lk["name"] == "a"]
    assert (row["credit_limit"], row["credit_used"]) == (0, 0)

    # c's operator decides: up to 5000 from a
    assert c.cli("link", "a", "--credit-limit", "5000")["credit_limit"] == 5000
    refused(2_100_000_000_000_000)  # the whole money supply
    assert "deposit of 2100000000000000 refused" in log_of(c) and "beyond the credit limit 5000" in log_of(c)
    ok = net.deposit(a, c, 5000)
    refused(1)  # one more is beyond the limit
    assert channels(a, "c") == [(ok, 5000, 0)] and channels(c, "a") == [(ok, 0, 5000)]

    # `amiko deposit ... --credit-limit N` sets the limit for the peer's deposits on that link
    a.cli("link", "c", "--credit-limit", "700")  # (c's own deposit is credit a extends to c)
    r = c.cli("deposit", "a", "700", "--credit-limit", "6000")
    assert r["credit_limit"] == 6000
    ok2 = net.deposit(a, c, 1000)
    net.wait(lambda: find_channel(a.status(), "c", r["channel"]), 20, "c's deposit recorded at a")
    net.quiet([a, c])
    assert dict((k[1], v) for k, v in channel_balances(a.status()).items()) == {
        ok: (5000, 0), ok2: (1000, 0), r["channel"]: (0, 700)}
    assert dict((k[1], v) for k, v in channel_balances(c.status()).items()) == {
        ok: (0, 5000), ok2: (0, 1000), r["channel"]: (700, 0)}
    (row,) = [lk for lk in c.status()["links"] if lk["name"] == "a"]
    assert (row["credit_limit"], row["credit_used"]) == (6000, 6000)
    bad = c.run("link", "a", "--credit-limit", "-3")
    assert bad.returncode != 0
