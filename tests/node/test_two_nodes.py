"""Two real nodes: link, deposit both ways, pay each way, withdraw; balances exact on both sides."""

from amiko_core import messages as m
from amiko_core.hashing import hash160

from amiko.node.identity import verify

from amiko_testing.network import channel_balances, find_channel, free_port, run_amiko, total_local


def mirrored(a, b):
    """Each channel as a sees it is the mirror of b's view (local <-> remote)."""
    sa, sb = a.status(), b.status()
    ba = channel_balances(sa)
    bb = channel_balances(sb)
    flipped = {(b_link, cid): (remote, local) for (b_link, cid), (local, remote) in bb.items()}
    return {cid: v for (_, cid), v in ba.items()} == {cid: v for (_, cid), v in flipped.items()}


def test_two_nodes_link_deposit_pay_withdraw(net):
    a = net.node("a", meeting_points=["mp-a"])
    b = net.node("b", meeting_points=["mp-b"])
    url = net.connect(a, b)
    assert url.startswith("amikolink://127.0.0.1:%d/b?key=%s" % (a.port, a.key))
    la, lb = a.link_status("b"), b.link_status("a")
    assert la["connected"] and lb["connected"]
    assert la["remote_key"] == b.key and lb["remote_key"] == a.key

    ch_ab = net.deposit(a, b, 1000)
    ch_ba = net.deposit(b, a, 500)
    sa, sb = a.status(), b.status()
    assert (find_channel(sa, "b", ch_ab)["local"], find_channel(sa, "b", ch_ab)["remote"]) == (1000, 0)
    assert (find_channel(sb, "a", ch_ab)["local"], find_channel(sb, "a", ch_ab)["remote"]) == (0, 1000)
    assert (find_channel(sa, "b", ch_ba)["local"], find_channel(sa, "b", ch_ba)["remote"]) == (0, 500)
    assert (find_channel(sb, "a", ch_ba)["local"], find_channel(sb, "a", ch_ba)["remote"]) == (500, 0)

    # a pays b
    req = b.cli("request", 100, "--receipt", "coffee")
    assert req["url"].startswith("amikopay://127.0.0.1:%d/" % b.port)
    assert req["meeting_points"] == ["mp-b@" + b.key] and req["amount"] == 100
    assert "token" not in req
    r = a.run("pay", req["url"], "--yes")
    assert r.returncode == 0, r
    paid = r.json
    assert paid["result"] == "committed" and paid["amount"] == 100 and paid["receipt"] == "coffee"
    # proof of payment: the token hashes to the txid, and the payee's signature covers the receipt
    assert hash160(bytes.fromhex(paid["token"])).hex() == paid["txid"] == req["txid"]
    assert paid["payee_key"] == b.key
    receipt = m.Message(m.RECEIPT, {"id": paid["payment_id"], "amount": 100, "receipt": "coffee",
                                    "txid": bytes.fromhex(paid["txid"]), "meeting_points": paid["meeting_points"],
                                    "payee_key": bytes.fromhex(paid["payee_key"]), "payee": paid["payee"]})
    assert verify(bytes.fromhex(b.key), m.receipt_signed_bytes(receipt), bytes.fromhex(paid["signature"]))
    # the payer's stored proof is self-contained: the signed bytes, the key, the signature, the token
    proof = next(p for p in a.status()["history"] if p["txid"] == paid["txid"] and p["role"] == "payer")
    assert bytes.fromhex(proof["signed_receipt"]) == m.receipt_signed_bytes(receipt)
    assert verify(bytes.fromhex(proof["payee_key"]), bytes.fromhex(proof["signed_receipt"]),
                  bytes.fromhex(proof["signature"]))
    assert hash160(bytes.fromhex(proof["token"])).hex() == proof["txid"]

    # b pays a, asked on stdin (human output)
    req2 = b_to_a = a.cli("request", 30, "--receipt", "tea")
    r = run_amiko(["pay", "--home", b.home, b_to_a["url"]], input="y\n")
    assert r.returncode == 0, r
    assert r.stdout.startswith("Pay 30 for tea? [y/N]")
    assert r.stdout.strip().splitlines()[-1].endswith("committed")

    net.quiet()
    sa, sb = a.status(), b.status()
    assert total_local(sa) == 1000 - 100 + 30
    assert total_local(sb) == 500 + 100 - 30
    assert sa["balance"] == 930 and sb["balance"] == 570
    assert mirrored(a, b)
    for ch in sa["channels"] + sb["channels"]:
        assert ch["local"] + ch["remote"] == (1000 if ch["id"] == ch_ab else 500)

    # both ends keep the payment in their history
    hist_a = {(p["txid"], p["role"]): p for p in sa["history"]}
    hist_b = {(p["txid"], p["role"]): p for p in sb["history"]}
    assert hist_a[(req["txid"], "payer")]["state"] == "committed"
    assert hist_a[(req["txid"], "payer")]["token"] == paid["token"]
    assert hist_b[(req["txid"], "payee")]["state"] == "committed"
    assert hist_b[(req2["txid"], "payer")]["state"] == "committed"
    assert hist_a[(req2["txid"], "payee")]["state"] == "committed"

    # a paid request cannot be paid again
    r = a.run("pay", req["url"], "--yes")
    assert r.returncode == 1 and r.json["result"] == "cancelled", r
    assert "already" in r.json["reason"]

    # withdraw: both sides closed, balances kept
    before = (find_channel(sa, "b", ch_ab)["local"], find_channel(sb, "a", ch_ab)["local"])
    assert sum(before) == 1000
    w = a.cli("withdraw", "b", ch_ab)
    assert w["channel"] == ch_ab
    net.wait(lambda: find_channel(b.status(), "a", ch_ab)["state"] == "closed", 20, "withdraw seen at b")
    sa, sb = a.status(), b.status()
    assert find_channel(sa, "b", ch_ab)["state"] == "closed"
    assert (find_channel(sa, "b", ch_ab)["local"], find_channel(sb, "a", ch_ab)["local"]) == before
    r = a.run("withdraw", "b", ch_ab)
    assert r.returncode == 2 and "closed" in r.json["error"]["message"]
    r = a.run("withdraw", "b", 12345)
    assert r.returncode == 2 and "no channel" in r.json["error"]["message"]


def test_pay_declined_unknown_unreachable_and_no_funds(net):
    a = net.node("a", meeting_points=["mp-a"])
    b = net.node("b", meeting_points=["mp-b"])
    net.connect(a, b)
    net.deposit(a, b, 100)

    # declined at the prompt: cancelled, exit 1, nothing moved, the payee's request is cancelled
    url = b.cli("request", 10, "--receipt", "cake")["url"]
    r = run_amiko(["pay", "--home", a.home, url], input="n\n")
    assert r.returncode == 1, r
    assert r.stdout.startswith("Pay 10 for cake? [y/N]")
    assert r.stdout.strip().splitlines()[-1].endswith("cancelled: declined by payer")
    # with --json the question goes to stderr, stdout is one object
    url = b.cli("request", 10, "--receipt", "pie")["url"]
    r = a.run("pay", url, input="\n")
    assert r.returncode == 1 and r.json["result"] == "cancelled" and "Pay 10 for pie? [y/N]" in r.stderr

    # unknown payment id at a live payee
    r = run_amiko(["pay", "--home", a.home, "amikopay://127.0.0.1:%d/nosuchpayment?key=%s" % (b.port, b.key), "--yes"])
    assert r.returncode == 1 and r.stdout.startswith("cancelled: ") and "unknown payment" in r.stdout, r

    # nobody listening: an error (exit 2) that says what to check
    r = run_amiko(["pay", "--home", a.home, "amikopay://127.0.0.1:%d/x?key=%s" % (free_port(), b.key), "--yes"])
    assert r.returncode == 2 and "cannot reach the payee" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r

    # a URL without the payee key is refused before any connection; one pinning another key
    # (here a's own) fails the handshake at b: one-line errors, b's request stays payable
    req = b.cli("request", 7, "--receipt", "bun")
    url = req["url"]
    assert url.endswith("?key=" + b.key)
    r = run_amiko(["pay", "--home", a.home, url.split("?")[0], "--yes"])
    assert r.returncode == 2 and "carries no payee key" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    r = run_amiko(["pay", "--home", a.home, url.split("?")[0] + "?key=" + a.key, "--yes"])
    assert r.returncode == 2 and "does not hold the payee key" in r.stderr, r
    row = next(p for p in b.status()["history"] if p["txid"] == req["txid"] and p["role"] == "payee")
    assert row["state"] == "requested", row

    # more than the channel can carry: no route, cancelled
    url = b.cli("request", 101)["url"]
    r = a.run("pay", url, "--yes", "--timeout", 30)
    assert r.returncode == 1 and r.json["result"] == "cancelled", r

    # the payee can also not pay back what it does not have
    url = a.cli("request", 5)["url"]
    r = b.run("pay", url, "--yes", "--timeout", 30)
    assert r.returncode == 1 and r.json["result"] == "cancelled", r

    net.quiet()
    assert a.status()["balance"] == 100 and b.status()["balance"] == 0
    hist = b.status()["history"]
    assert all(p["state"] in ("cancelled", "requested") for p in hist), hist

    # and a payment that fits still goes through afterwards
    assert net.pay(a, b, 100).returncode == 0
    net.quiet()
    assert a.status()["balance"] == 0 and b.status()["balance"] == 100
    assert mirrored(a, b)
