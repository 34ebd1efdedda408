"""The payee side of payment links on real node processes, attacked through the real transport
(BOLT 8, amiko_testing.bolt8): a bystander who saw the QR code, a second payer,
malformed, oversized, replayed, reordered and plain frames, a wrong pinned key, stalled
handshakes. Each is refused or ends only the attacker's own attempt; the request stays payable
by its payer, the real payment commits and both ends of the channel agree afterwards."""

import os
import select
import subprocess
import time

from amiko_core import cbor, frame
from amiko_core import messages as m

from amiko.node.identity import Identity
from amiko.wire import stream as streams

from amiko_testing.bolt8 import ciphertext, exchange, open_stream, plain_exchange, read_all, send_raw
from amiko_testing.network import amiko_argv, amiko_env
from test_two_nodes import mirrored


def payment_id(url):
    return url.split("?")[0].rsplit("/", 1)[1]


def pair(net):
    a = net.node("a", meeting_points=["mp-a"])
    b = net.node("b", meeting_points=["mp-b"])
    net.connect(a, b)
    net.deposit(a, b, 1000)
    return a, b


def payee_row(node, txid):
    return next(p for p in node.status()["history"] if p["txid"] == txid and p["role"] == "payee")


def test_a_bystander_who_saw_the_qr_code_cannot_cancel_the_sale(net):
    """Issue 12: anyone who sees the QR code sends Pay for its ID and disconnects (or sends Pay
    then Cancel, or lets the confirm time pass): before, the shop node cancelled the request and
    the real payer got "cancelled". Now only the bystander's own attempt ends."""
    a, b = pair(net)
    req = b.cli("request", 25, "--receipt", "croissant")
    url, pid = req["url"], payment_id(req["url"])
    # Pay, read the Receipt, hang up
    s = open_stream(b.port, b.key)
    s.send_message(m.Message(m.PAY, id=pid))
    receipt = s.recv_message(timeout=10)
    assert receipt.type == m.RECEIPT and receipt.amount == 25 and bytes(receipt.payee_key).hex() == b.key
    s.close()
    # Pay, then Cancel as the payer
    got, closed = exchange(b.port, b.key, m.Message(m.PAY, id=pid), m.Message(m.CANCEL, id=pid, reason="mine now"),
                           timeout=3)
    assert got and got[0].type == m.RECEIPT
    net.wait(lambda: payee_row(b, req["txid"])["state"] == "requested", 10, "the request still open at b")
    # the real payer pays it
    r = a.run("pay", url, "--yes")
    assert r.returncode == 0 and r.json["result"] == "committed", r
    net.quiet()
    assert a.status()["balance"] == 975 and b.status()["balance"] == 25
    assert mirrored(a, b)


def _wait_for_prompt(p, timeout=30):
    seen = b""
    deadline = time.monotonic() + timeout
    while b"[y/N]" not in seen:
        left = deadline - time.monotonic()
        assert left > 0, "no prompt from amiko pay: %r" % seen
        ready, _, _ = select.select([p.stderr], [], [], left)
        if ready:
            chunk = os.read(p.stderr.fileno(), 4096)
            assert chunk, "amiko pay ended: %r" % seen
            seen += chunk
    return seen


def test_a_second_pay_is_refused_and_the_first_payer_is_untouched(net):
    a, b = pair(net)
    req = b.cli("request", 40, "--receipt", "soup")
    pid = payment_id(req["url"])
    payer = subprocess.Popen(amiko_argv() + ["pay", "--home", str(a.home), "--json", req["url"]],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=amiko_env())
    try:
        _wait_for_prompt(payer)  # the real payer holds the receipt and is being asked
        # a second payer: a Cancel on its own connection only, then closed
        got, closed = exchange(b.port, b.key, m.Message(m.PAY, id=pid))
        assert closed and [g.type for g in got] == [m.CANCEL] and "already in progress" in got[0].reason, got
        # it cannot cancel the first session either: its Cancel goes nowhere
        got, closed = exchange(b.port, b.key, m.Message(m.CANCEL, id=pid, reason="bystander"))
        assert closed and all(g.type == m.ERROR for g in got), got
        out, err = payer.communicate(b"y\n", timeout=60)
    finally:
        if payer.poll() is None:
            payer.kill()
    assert payer.returncode == 0, (out, err)
    assert b'"committed"' in out
    net.quiet()
    assert a.status()["balance"] == 960 and b.status()["balance"] == 40
    assert mirrored(a, b)


def test_hostile_frames_on_a_payment_link(net):
    a, b = pair(net)
    req = b.cli("request", 30, "--receipt", "cake")
    pid = payment_id(req["url"])
    pay = m.to_frame(m.Message(m.PAY, id=pid))
    # malformed Pay bodies: an Error, closed
    for body in (b"\xff\xff", cbor.dumps({1: 5}), cbor.dumps([1])):
        got, closed = exchange(b.port, b.key, frame.encode(m.PAY, body))
        assert closed and [g.type for g in got] == [m.ERROR], (body, got)
    # a plaintext that is no frame, and an oversized message (announced over 4096 bytes)
    # (closed, at most with an Error saying why; never a Receipt)
    got, closed = exchange(b.port, b.key, b"\xa5\x4b" + os.urandom(40))
    assert closed and all(g.type == m.ERROR for g in got), got
    got, closed = exchange(b.port, b.key, frame.encode(m.PAY, b"\0" * 8000, max_frame=65535), max_frame=65535)
    assert closed and all(g.type == m.ERROR for g in got), got
    # Pay, then garbage inside the encryption: the attempt ends, nothing else
    got, closed = exchange(b.port, b.key, pay, b"\x00" * 30)
    assert closed and got[0].type == m.RECEIPT
    # Pay replayed as ciphertext on its stream (an eavesdropper's copy), and Confirm sent
    # ahead of Pay (reordered): the MAC under the next nonce fails, closed
    s = open_stream(b.port, b.key)
    try:
        c1 = ciphertext(s, pay)
        send_raw(s, c1)
        assert s.recv_message(timeout=10).type == m.RECEIPT
        send_raw(s, c1)
        assert read_all(s) == ([], True)
    finally:
        s.close()
    s = open_stream(b.port, b.key)
    try:
        first = ciphertext(s, pay)
        second = ciphertext(s, m.to_frame(m.Message(m.CONFIRM, id=pid, meeting_point="mp-b")))
        send_raw(s, second + first)
        assert read_all(s) == ([], True)
    finally:
        s.close()
    # the same Pay in the clear: refused (no Receipt), the request untouched
    data, closed = plain_exchange(b.port, pay)
    assert closed and all(fr.type == m.ERROR for fr in frame.FrameDecoder().feed(data)), data
    # a payer that pins a wrong key never gets to send Pay
    try:
        open_stream(b.port, Identity.generate().pubkey)
        raise AssertionError("handshake with a wrong key succeeded")
    except streams.StreamError as e:
        assert e.code == "auth"
    # every attempt ended before a Confirm: the request is still the payer's to pay
    assert payee_row(b, req["txid"])["state"] == "requested"
    r = a.run("pay", req["url"], "--yes")
    assert r.returncode == 0 and r.json["result"] == "committed", r
    net.quiet()
    assert mirrored(a, b)
    assert b.status()["balance"] == 30 and a.status()["balance"] == 970


def test_stalled_connections_are_dropped_and_payments_go_on(net):
    """A handshake stalled at act one, one stalled after the handshake (no first frame): both
    closed by the node within its deadlines, while a real payment goes through meanwhile."""
    import socket

    a, b = pair(net)
    stalled = socket.create_connection(("127.0.0.1", b.port), timeout=30)
    stalled.sendall(b"\x00" + os.urandom(20))  # 21 of the 50 bytes of act one
    quiet = open_stream(b.port, b.key)  # handshake done, then nothing
    try:
        assert net.pay(a, b, 12).returncode == 0
        t0 = time.monotonic()
        assert stalled.recv(100) == b""  # closed by the node (handshake deadline)
        assert read_all(quiet, timeout=30) == ([], True)  # closed (first-frame deadline)
        assert time.monotonic() - t0 < 30
    finally:
        stalled.close()
        quiet.close()
    net.quiet()
    assert mirrored(a, b)


class FakePayee:
    """A BOLT 8 responder holding `identity` that answers Pay with a Receipt of its making."""

    def __init__(self, identity, make_receipt):
        import asyncio
        import threading

        self.identity, self.make_receipt = identity, make_receipt
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self):
        import asyncio

        asyncio.set_event_loop(self.loop)

        async def serve(reader, writer):
            try:
                s = await streams.accept(reader, writer, self.identity)
                pay = await s.recv_message(timeout=10)
                s.send_message(self.make_receipt(pay.id))
                await s.drain()
                await s.recv(timeout=10)  # until the payer closes
            except streams.StreamError:
                pass
            finally:
                writer.close()

        async def start():
            self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_the_receipt_must_be_signed_by_the_key_the_url_pins(net):
    """A node that holds the URL's key (the handshake succeeds) but hands out a receipt signed by
    another key, or unsigned, or with a broken signature: the payer declines it, nothing routes."""
    from amiko_core.token import new_token, transaction_id

    a = net.node("a", meeting_points=["mp-a"])
    pinned, other = Identity.generate(), Identity.generate()

    def receipt(pid, signer, key):
        fields = {"id": pid, "amount": 10, "receipt": "x", "txid": transaction_id(new_token()),
                  "meeting_points": ["mp-a"], "payee_key": key}
        if signer is not None:
            fields["signature"] = signer.sign(m.receipt_signed_bytes(m.Message(m.RECEIPT, fields)))
        return m.Message(m.RECEIPT, fields)

    cases = [(lambda pid: receipt(pid, other, other.pubkey), "signed for key"),
             (lambda pid: receipt(pid, None, None), "carries no signature"),
             (lambda pid: receipt(pid, other, pinned.pubkey), "does not verify")]
    for make, why in cases:
        fake = FakePayee(pinned, make)
        try:
            r = a.run("pay", "amikopay://127.0.0.1:%d/sale-1?key=%s" % (fake.port, pinned.pubkey.hex()), "--yes")
        finally:
            fake.close()
        assert r.returncode == 1 and r.json["result"] == "cancelled", r
        assert "receipt not signed by the payee key in the URL" in r.json["reason"] and why in r.json["reason"], r
    assert [p for p in a.status()["history"] if p["role"] == "payer"] == []
