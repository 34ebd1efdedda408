"""The provider role of a real node, spoken to over BOLT 8 as a hostile terminal would: only Auths
with the wallet's MAC and a fresh counter count; limits and balance hold; answers are MAC'd;
plain frames, a wrong pinned key, replayed, reordered and oversized ciphertext get nothing."""

import os

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.token import new_token, transaction_id

from amiko.node.control import ControlClient
from amiko.node.identity import Identity
from amiko.wire import stream as streams

from amiko_testing.bolt8 import ciphertext, exchange, open_stream, plain_exchange, read_all, send_raw

KEY = bytes(range(100, 132))


def control(node, method, params):
    with ControlClient(str(node.home), str(node.home / "control.sock")) as c:
        return c.call(method, params)


class Conn:
    def __init__(self, port, key):
        self.s = open_stream(port, key)

    def ask(self, data):
        self.s.send(data if isinstance(data, bytes) else m.to_frame(data))
        return m.from_frame(self.s.recv(timeout=20))

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
    pkey = prov.rpc("info")["key"]
    c = Conn(prov.port, pkey)
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
    got, closed = exchange(prov.port, pkey, frame.encode(wl.AUTH, b"\xff\xff\xff"))
    assert closed and got[0].type == m.ERROR
    # the daily limit counts committed and pending payments of the day (here: none)
    assert control(prov, "wallet_info", {"wallet": "w-1"})["payments"][0]["state"] == "cancelled"


def test_provider_over_bolt8_only(net):
    """A genuine Auth sent in the clear, to a wrong key, replayed or reordered as ciphertext, or
    inside an oversized message moves nothing; the wallet's counter stays where it was."""
    prov = net.node("prov")
    pkey = prov.rpc("info")["key"]
    control(prov, "wallet_provision", {"wallet": "w-1", "key": KEY.hex(), "limit": 500, "daily": 700, "auto": 0})
    control(prov, "wallet_topup", {"wallet": "w-1", "amount": 600})
    txid = transaction_id(new_token())
    query = m.to_frame(auth(1, wl.QUERY, txid))
    # plain (unencrypted) Auth: no Status, at most an Error, closed; the counter is untouched
    data, closed = plain_exchange(prov.port, query)
    assert closed and all(fr.type == m.ERROR for fr in frame.FrameDecoder().feed(data)), data
    # a terminal pinning another key: the handshake fails, nothing reaches the provider
    try:
        open_stream(prov.port, Identity.generate().pubkey)
        raise AssertionError("handshake with a wrong key succeeded")
    except streams.StreamError as e:
        assert e.code == "auth", e
    # the same Auth replayed as ciphertext on its stream, and two Auths sent out of order
    s = open_stream(prov.port, pkey)
    try:
        first = ciphertext(s, query)
        send_raw(s, first)
        st = m.from_frame(s.recv(timeout=10))
        assert st.type == wl.STATUS and st.ref == 1
        send_raw(s, first)  # the very same bytes again: the MAC under the next nonce fails
        assert read_all(s) == ([], True)
    finally:
        s.close()
    s = open_stream(prov.port, pkey)
    try:
        a2 = ciphertext(s, m.to_frame(auth(2, wl.QUERY, txid)))
        a3 = ciphertext(s, m.to_frame(auth(3, wl.QUERY, txid)))
        send_raw(s, a3 + a2)
        assert read_all(s) == ([], True)
    finally:
        s.close()
    # an oversized message (announced over 4096 bytes): dropped at its length header
    got, closed = exchange(prov.port, pkey, frame.encode(wl.AUTH, b"\0" * 9000, max_frame=65535), max_frame=65535)
    assert closed and got == []
    assert control(prov, "wallet_info", {"wallet": "w-1"})["counter"] == 1
    # and a genuine terminal still gets its answers
    c = Conn(prov.port, pkey)
    try:
        st = c.ask(auth(4, wl.QUERY, txid))
        assert st.type == wl.STATUS and wl.verify(KEY, st) and st.ref == 4
    finally:
        c.close()
