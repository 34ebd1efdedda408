"""The provider role of a real node, spoken to over TCP as a hostile terminal would: only Auths
with the wallet's MAC and a fresh counter count; limits and balance hold; answers are MAC'd."""

import os
import socket

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.token import new_token, transaction_id

from amiko.node.control import ControlClient
from amiko.node.identity import Identity

from harness import net  # noqa: F401

KEY = bytes(range(100, 132))


def control(node, method, params):
    with ControlClient(str(node.home), str(node.home / "control.sock")) as c:
        return c.call(method, params)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.dec = frame.FrameDecoder(4096)
        self.pending = []

    def ask(self, data):
        self.s.sendall(data if isinstance(data, bytes) else m.to_frame(data))
        while not self.pending:
            chunk = self.s.recv(4096)
            assert chunk, "provider closed the connection"
            self.pending += [m.from_frame(fr) for fr in self.dec.feed(chunk)]
        return self.pending.pop(0)

    def close(self):
        self.s.close()


PAYEE = Identity(12345)


def receipt(txid, amount, mp):
    """The payee's signed Receipt for this payment (deterministic: the same bytes every time)."""
    r = m.Message(m.RECEIPT, id="pay-x", amount=amount, receipt="x", txid=txid, meeting_points=[mp],
                  payee_key=PAYEE.pubkey, payee="payee")
    return m.Message(m.RECEIPT, dict(r.fields, signature=PAYEE.sign(m.receipt_signed_bytes(r))))


def auth(counter, action, txid, amount=100, mp="mp-x", key=KEY, wallet="w-1", token=None, confirm=wl.BUTTON):
    r = receipt(txid, amount, mp)
    return wl.auth(key, wallet, counter, action, txid, amount, mp, PAYEE.pubkey, wl.receipt_hash(r), confirm, token,
                   m.encode(r) if action == wl.ROUTE else None)


def test_provider_refuses_forged_replayed_and_over_limit(net):
    prov = net.node("prov")
    r = control(prov, "wallet_provision", {"wallet": "w-1", "key": KEY.hex(), "limit": 500, "daily": 700, "auto": 0})
    assert r["provider"].startswith("amikolink://127.0.0.1:%d/w-1?key=" % prov.port)
    assert control(prov, "wallet_topup", {"wallet": "w-1", "amount": 600})["balance"] == 600
    c = Conn(prov.port)
    try:
        txid = transaction_id(new_token())
        # unknown wallet, wrong key, altered field: an Error, nothing changes
        e = c.ask(auth(1, wl.QUERY, txid, wallet="w-unknown"))
        assert e.type == m.ERROR and "unknown wallet" in e.reason
        e = c.ask(auth(1, wl.QUERY, txid, key=bytes(32)))
        assert e.type == m.ERROR and "MAC" in e.reason
        good = auth(1, wl.ROUTE, txid, amount=400)
        altered = m.Message(wl.AUTH, dict(good.fields, amount=300))
        assert c.ask(altered).type == m.ERROR
        redirected = m.Message(wl.AUTH, dict(good.fields, meeting_point="mp-evil"))
        assert c.ask(redirected).type == m.ERROR
        assert control(prov, "wallet_info", {"wallet": "w-1"})["counter"] == 0
        # the genuine one: no route from this lone node -> cancelled, MAC'd, answers counter 1
        st = c.ask(good)
        assert st.type == wl.STATUS and wl.verify(KEY, st) and st.ref == 1
        assert st.state == wl.CANCELLED and st.balance == 600 and st.txid == txid
        # replayed: refused
        e = c.ask(good)
        assert e.type == m.ERROR and "replay" in e.reason
        # same txid with another amount: refused
        st2 = c.ask(auth(2, wl.ROUTE, txid, amount=401))
        assert st2.state == wl.REFUSED and st2.counter > st.counter and wl.verify(KEY, st2)
        # limits and balance
        st = c.ask(auth(3, wl.ROUTE, transaction_id(new_token()), amount=501))
        assert st.state == wl.REFUSED and "per-payment limit" in st.reason
        st = c.ask(auth(4, wl.QUERY, transaction_id(new_token())))
        assert st.state == wl.CANCELLED and "no payment" in st.reason
        # lock / commit for a payment that never routed move nothing
        st = c.ask(auth(5, wl.COMMIT, txid, amount=400, token=os.urandom(32)))
        assert st.state == wl.CANCELLED
        # garbage, then a non-Auth message: Error frames, connection refused at garbage
        e = c.ask(m.Message(wl.TAP))
        assert e.type == m.ERROR and "only Auth" in e.reason
        info = control(prov, "wallet_info", {"wallet": "w-1"})
        assert info["balance"] == 600 and info["available"] == 600 and info["counter"] == 5
    finally:
        c.close()
    bad = socket.create_connection(("127.0.0.1", prov.port), timeout=10)
    try:
        bad.sendall(frame.encode(wl.AUTH, b"\xff\xff\xff"))
        data = bad.recv(4096)
        fr = frame.FrameDecoder().feed(data)
        assert m.from_frame(fr[0]).type == m.ERROR
    finally:
        bad.close()
    # the daily limit counts committed and pending payments of the day (here: none)
    assert control(prov, "wallet_info", {"wallet": "w-1"})["payments"][0]["state"] == "cancelled"
