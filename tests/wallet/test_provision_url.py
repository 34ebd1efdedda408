"""Provisioning through a provider URL with a one-time invitation (amiko.node.provisioning):
a virtual board is provisioned by URL + invite against a real provider node and pays once;
replayed, wrong and expired invitations, a wrong pinned key, tampered answers and garbage or
oversized first frames are refused with one-line errors, and nothing is created. Every
connection is BOLT 8 (amiko.wire.stream) pinned to the provider key; plain frames, a wrong key,
replayed and reordered ciphertext get nothing."""

import time

import pytest

from amiko_core import cbor, frame
from amiko_core import messages as m

from amiko.node import provisioning as pv
from amiko.node.identity import Identity

from amiko_testing.bolt8 import ciphertext, exchange, open_stream, plain_exchange, read_all, send_raw
from amiko_testing.wallets import pay_through_relay, provider_and_shop, start_wallet, wallet_cli


def invite(prov, *extra):
    r = wallet_cli("invite", "--home", prov.home, "--json", *extra)
    assert r.returncode == 0, r
    return r.json


def wallets(prov):
    with prov_db(prov) as db:
        return [row[0] for row in db.execute("SELECT id FROM wallets")]


def invitation_rows(prov):
    with prov_db(prov) as db:
        return db.execute("SELECT used, wallet FROM invitations ORDER BY created").fetchall()


class prov_db:
    def __init__(self, prov):
        import sqlite3

        self.db = sqlite3.connect("file:%s?mode=ro" % (prov.home / "node.db"), uri=True)

    def __enter__(self):
        return self.db

    def __exit__(self, *a):
        self.db.close()


def url_for(prov, wallet, key=None):
    info = prov.rpc("info")
    return "amikolink://127.0.0.1:%d/%s?key=%s" % (prov.port, wallet, key or info["key"])


def error_of(r):
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode != 0 and len(lines) == 1, r
    return lines[0]


def test_provision_by_url_and_pay(net, tmp_path):
    prov, shop = provider_and_shop(net)
    inv = invite(prov, "--limit", "5000", "--daily", "9000", "--auto", "1000", "--ttl", "600")
    assert len(inv["code"]) == 52 and inv["url"].startswith("amikolink://127.0.0.1:%d/w-" % prov.port)
    board = start_wallet(tmp_path)
    try:
        r = wallet_cli("provision", "--port", board.pty, "--provider", url_for(prov, "w-url1"), "--invite",
                       inv["code"].upper(), "--json")
        assert r.returncode == 0, r
        assert (r.json["wallet"], r.json["limit"], r.json["daily"], r.json["auto"]) == ("w-url1", 5000, 9000, 1000)
        (used, wallet), = invitation_rows(prov)
        assert used is not None and wallet == "w-url1"
        assert wallet_cli("topup", "--provider", prov.home, "--wallet", "w-url1", "2000").returncode == 0
        url = net.request(shop, 300, "tea")
        out = pay_through_relay(board.pty, url)
        assert out["result"] == "committed", out
        assert out["hello"]["wallet"] == "w-url1"
        info = wallet_cli("info", "--provider", prov.home, "--wallet", "w-url1", "--json").json
        assert info["balance"] == 1700 and info["payments"][0]["state"] == "committed", info

        # the same invitation again (a replay, for another wallet id): refused, nothing created
        board2 = start_wallet(tmp_path, "vb2")
        try:
            r = wallet_cli("provision", "--port", board2.pty, "--provider", url_for(prov, "w-url2"), "--invite",
                           inv["code"])
            assert "used already" in error_of(r)
            assert wallets(prov) == ["w-url1"]
        finally:
            board2.stop()
    finally:
        board.stop()


def test_hostile_invitations(net, tmp_path):
    prov = net.node("prov")
    key = prov.rpc("info")["key"]
    inv = invite(prov, "--limit", "500")
    url = url_for(prov, "w-h1")

    def fails(code, u=url, **kw):
        with pytest.raises(pv.ProvisionError) as e:
            pv.request_account(u, code, **kw)
        assert "\n" not in e.value.reason
        return e.value.reason

    # a wrong code, a malformed code
    assert "unknown invitation" in fails(pv.format_code(bytes(32)))
    assert "malformed" in fails("abc")
    # limits above the invitation's
    assert "over the invitation" in fails(inv["code"], limit=501)
    # a wrong pinned key: the BOLT 8 handshake fails before the request is sent
    other = Identity.generate().pubkey.hex()
    assert "does not hold the provider key pinned" in fails(inv["code"], url_for(prov, "w-h1", other))
    # a request naming another provider key over a genuine connection: the provider refuses it
    code = pv.parse_code(inv["code"])
    f = {"invite": pv.invite_id(code), "wallet": "w-h1", "provider_key": bytes.fromhex(other),
         "ephemeral": Identity.generate().pubkey}
    f["mac"] = pv.request_mac(pv.invite_key(code), f)
    got, closed = exchange(prov.port, key, m.Message(pv.REQUEST, f))
    assert closed and got[0].type == m.ERROR and "pins provider key" in got[0].reason
    assert wallets(prov) == [] and invitation_rows(prov) == [(None, None)]

    # an answer tampered on the way (a man in the middle flips a byte of box / provider URL):
    # the host refuses it and never confirms, so the provider creates nothing
    for field in ("box", "provider"):
        real = pv._Conn.recv

        def tampered(self, want, field=field):
            msg = real(self, want)
            if msg.type == pv.GRANT:
                v = msg.fields[field]
                v = bytes([v[0] ^ 1]) + v[1:] if isinstance(v, bytes) else v + "x"
                msg = m.Message(pv.GRANT, dict(msg.fields, **{field: v}))
            return msg

        pv._Conn.recv = tampered
        try:
            assert "not signed by the key pinned" in fails(inv["code"])
        finally:
            pv._Conn.recv = real
    # an impostor at the URL's address (another node key) answering a request pinned to the
    # real key: its grant is not signed by the pinned key, the host refuses it
    real_recv = pv._Conn.recv
    impostor = Identity.generate()

    def impostor_recv(self, want):
        msg = real_recv(self, want)
        if msg.type == pv.GRANT:
            msg = m.Message(pv.GRANT, dict(msg.fields, signature=impostor.sign(b"anything")))
        return msg

    pv._Conn.recv = impostor_recv
    try:
        assert "not signed by the key pinned" in fails(inv["code"])
    finally:
        pv._Conn.recv = real_recv
    assert wallets(prov) == [] and invitation_rows(prov) == [(None, None)]

    # the genuine request works once; a replay of the code is refused
    acct = pv.request_account(url, inv["code"])
    assert acct["wallet"] == "w-h1" and acct["limit"] == 500 and len(acct["key"]) == 32
    assert "used already" in fails(inv["code"], url_for(prov, "w-h2"))
    assert wallets(prov) == ["w-h1"]

    # expired
    short = invite(prov, "--ttl", "1")
    time.sleep(2.1)
    assert "expired" in fails(short["code"], url_for(prov, "w-h3"))
    assert wallets(prov) == ["w-h1"]

    # a request replayed byte for byte by an eavesdropper: it gets an answer it cannot open and
    # cannot confirm, so nothing is created
    inv2 = invite(prov)
    code = pv.parse_code(inv2["code"])
    eph = Identity.generate()
    fields = {"invite": pv.invite_id(code), "wallet": "w-h4", "provider_key": bytes.fromhex(key),
              "ephemeral": eph.pubkey}
    fields["mac"] = pv.request_mac(pv.invite_key(code), fields)
    req = m.Message(pv.REQUEST, fields)
    # the same with an ephemeral key that is no curve point (x >= p): refused before anything
    bad = dict(fields, ephemeral=b"\x02" + b"\xff" * 32)
    bad["mac"] = pv.request_mac(pv.invite_key(code), {k: v for k, v in bad.items() if k != "mac"})
    got, closed = exchange(prov.port, key, m.Message(pv.REQUEST, bad))
    assert closed and "not a valid secp256k1 point" in got[0].reason
    for _ in range(2):
        s = open_stream(prov.port, key)
        try:
            s.send_message(req)
            assert s.recv_message(timeout=10).type == pv.GRANT
            s.send_message(m.Message(pv.CONFIRM, proof=bytes(32)))  # no key: a guessed proof
            rest, _ = read_all(s)
            assert rest and rest[0].type == m.ERROR
        finally:
            s.close()
    # the same request as plain frames (no BOLT 8): no grant, nothing created
    data, closed = plain_exchange(prov.port, m.to_frame(req))
    assert closed and all(fr.type == m.ERROR for fr in frame.FrameDecoder().feed(data)), data
    # a Confirm replayed as ciphertext, and one sent ahead of its turn (reordered): the MAC fails,
    # the connection is dropped, nothing created
    s = open_stream(prov.port, key)
    try:
        s.send_message(req)
        assert s.recv_message(timeout=10).type == pv.GRANT
        first = ciphertext(s, m.to_frame(m.Message(pv.CONFIRM, proof=bytes(32))))
        second = ciphertext(s, m.to_frame(m.Message(pv.CONFIRM, proof=bytes(range(32)))))
        send_raw(s, second + first)
        assert read_all(s) == ([], True)
    finally:
        s.close()
    assert wallets(prov) == ["w-h1"]

    # the CLI: a URL without --invite, a URL without a pinned key: one-line errors
    assert "--invite" in error_of(wallet_cli("provision", "--port", "/dev/null", "--provider", url))
    assert "pin the provider's key" in fails(inv2["code"], "amikolink://127.0.0.1:%d/w-h5" % prov.port)
    assert "malformed" in error_of(wallet_cli("provision", "--port", "/dev/null", "--provider", url, "--invite", "x"))


def header(mtype, length, version=1):
    h = bytearray(b"\xa5\x4b" + bytes([version, mtype, length >> 8, length & 0xFF]))
    h.append(frame.crc8(h))
    return bytes(h)


def test_garbage_and_oversized_first_frames(net):
    prov = net.node("prov")
    key = prov.rpc("info")["key"]
    unknown = m.encode(m.Message(pv.REQUEST, invite=bytes(32), wallet="w-g", provider_key=Identity.generate().pubkey,
                                 ephemeral=Identity.generate().pubkey, mac=bytes(32)))
    for body in (b"\xff\xff\xff", b"", cbor.dumps({1: 1}), cbor.dumps([1, 2]), m.encode(m.Message(m.PAY, id="x")),
                 unknown):
        got, closed = exchange(prov.port, key, frame.encode(pv.REQUEST, body))
        assert closed and got and got[0].type == m.ERROR, body
        assert len(got) == 1
    # a BOLT 8 message of 20000 bytes (over the 4096-byte max frame): dropped at its length header
    got, closed = exchange(prov.port, key, frame.encode(pv.REQUEST, b"\0" * 20000, max_frame=65535),
                           max_frame=65535)
    assert closed and got == []
    # a plaintext that is not one frame (a bad header inside the encryption): closed, at most an Error
    got, closed = exchange(prov.port, key, header(pv.REQUEST, 0xFFFF) + b"\0" * 100)
    assert closed and all(g.type == m.ERROR for g in got), got
    # the other host-only types are no first frames
    for mtype in (pv.GRANT, pv.CONFIRM, pv.DONE):
        got, closed = exchange(prov.port, key, frame.encode(mtype, cbor.dumps({1: bytes(32)})))
        assert closed and got[0].type == m.ERROR
    assert wallets(prov) == []
    assert prov.rpc("info")["name"] == "prov"  # still serving
