"""Link set-up without a race (issue 11), with real `amiko node` processes: `amiko link NAME`
prints a one-time invitation; a stranger who connects as "dave" first, with no, a wrong, an
expired or an already used invitation, is refused (ERR_AUTH, logged); the real dave links.
`amiko link NAME --peer-key HEX` pins a key instead."""

import time



def strip_invite(url):
    return url.split("&invite=")[0]


def refused(net, node, stranger, url, why):
    """stranger dials url as its link "b": not connected; node's log names the reason."""
    r = stranger.run("link", "b", url, "--timeout", "1")
    assert r.returncode == 2 and "not connected" in r.json["error"]["message"], r
    net.wait(lambda: why in (node.home / "node.log").read_text(errors="replace"), 10, "log: %s" % why)
    return r


def test_stranger_first_is_refused_and_dave_links(net):
    b = net.node("b", meeting_points=["mp-b"])
    dave = net.node("dave")
    stranger = net.node("stranger")
    out = b.cli("link", "dave")
    url = out["url"]
    assert url.startswith("amikolink://127.0.0.1:%d/dave?key=%s&invite=" % (b.port, b.key))
    secret = url.split("&invite=")[1]
    assert len(secret) == 64 and out["invite_expires"] > time.time() + 3500
    # the secret is nowhere in b's home (only its HMAC is stored), nor in its log
    for f in b.home.iterdir():
        if f.is_file():
            assert secret.encode() not in f.read_bytes() and bytes.fromhex(secret) not in f.read_bytes(), f

    # a stranger who learned the link name and b's key, with no invitation
    refused(net, b, stranger, strip_invite(url), "dave has no pinned peer key and the peer brought no invitation")
    # with a guessed invitation
    refused(net, b, stranger, strip_invite(url) + "&invite=" + "00" * 32, "invitation refused: unknown")
    # with an invitation that expired
    short = b.cli("link", "dave", "--invite-expiry", "1")["url"]
    time.sleep(1.2)
    refused(net, b, stranger, short, "invitation refused: expired")
    assert b.link_status("dave")["remote_key"] is None and not b.link_status("dave")["connected"]

    # the real dave, with the invitation b printed
    dave.cli("link", "b", url, "--timeout", 20)
    net.wait(lambda: b.link_status("dave")["connected"], 20, "b sees dave")
    assert b.link_status("dave")["remote_key"] == dave.key
    log = (b.home / "node.log").read_text(errors="replace")
    assert "pinned peer key %s (invitation accepted" % dave.key in log and secret not in log

    # the stranger now holds dave's (used) invitation: refused, dave stays linked
    refused(net, b, stranger, url, "is not the key pinned for it")
    assert b.link_status("dave")["connected"] and b.link_status("dave")["remote_key"] == dave.key
    b.cli("link", "dave", "--credit-limit", 100)  # b accepts dave's IOUs up to 100
    net.deposit(dave, b, 100)
    assert net.pay(dave, b, 7).returncode == 0


def test_peer_key_pins_directly(net):
    b = net.node("b")
    carol = net.node("carol")
    mallory = net.node("mallory")
    out = b.cli("link", "carol", "--peer-key", carol.key)
    assert "invite" not in out["url"] and out["remote_key"] == carol.key
    refused(net, b, mallory, out["url"], "is not the key pinned for it")
    carol.cli("link", "b", out["url"], "--timeout", 20)
    net.wait(lambda: b.link_status("carol")["connected"], 20, "b sees carol")
    r = b.run("link", "x", "--peer-key", "02" + "ff" * 32)
    assert r.returncode == 2 and "not a 33-byte compressed" in r.json["error"]["message"]
