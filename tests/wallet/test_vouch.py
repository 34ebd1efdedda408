"""The wallet pays only a payee it can vouch for (issue 12), with real processes: a virtual board
running the flashed firmware, real `amiko node` processes (provider, shop, a stranger), the relay as
the terminal.

- ten taps with payment requests from another node, each under the auto-confirm amount: only the
  new-payee limit auto-confirms, then the wallet asks for its button;
- a receipt relabelled with the URL's key but signed by another node: the provider refuses it, no
  funds move;
- the cumulative auto-confirm limit, then a press resets it;
- a compromised wallet (its key on the host) claiming auto-confirm beyond the limits: the provider
  refuses, whatever the wallet says.
"""

import asyncio
import concurrent.futures
import threading

from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko_testing.wallets import pay_through_relay, start_wallet, wallet_cli

from amiko.node.control import ControlClient
from amiko.node.identity import Identity
from amiko.wire import stream


def control(node, method, params):
    with ControlClient(str(node.home), str(node.home / "control.sock")) as c:
        return c.call(method, params)


def info(prov, wallet):
    return wallet_cli("info", "--provider", prov.home, "--wallet", wallet, "--json").json


def network(net, payee_names=("shop",)):
    prov = net.node("prov")
    payees = []
    for name in payee_names:
        p = net.node(name, meeting_points=["mp-" + name])
        net.connect(prov, p)
        net.deposit(prov, p, 50000)
        payees.append(p)
    return prov, payees


def provision(board, prov, *options):
    r = wallet_cli("provision", "--port", board.pty, "--provider", prov.home, "--auto", "1000", "--json", *options)
    assert r.returncode == 0, r
    wallet = r.json["wallet"]
    assert wallet_cli("topup", "--provider", prov.home, "--wallet", wallet, "40000").returncode == 0
    return r.json


def pay_pressing(board, url, button, screen="Pay "):
    """Tap with url; when the wallet asks, press button; returns (relay result, screen lines)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(pay_through_relay, board.pty, url)
        lines = board.wait_for_screen(screen, timeout=30)
        board.press(button)
        return fut.result(90), lines


def test_ten_taps_from_another_node_stop_at_the_new_payee_limit(net, tmp_path):
    prov, (shop, stranger) = network(net, ("shop", "stranger"))
    board = start_wallet(tmp_path)
    try:
        acct = provision(board, prov)  # defaults: 5 auto-confirmed since a press, 3000 in sum, 2 to new payees
        assert (acct["auto_count"], acct["auto_total"], acct["auto_new"]) == (5, 3000, 2)
        outcomes = []
        for n in range(10):
            url = net.request(stranger, 900, "tap %d" % n)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                fut = pool.submit(pay_through_relay, board.pty, url)
                lines = board.wait_for_screen(lambda lines: fut.done() or "Pay 900 ?" in lines[:1], timeout=30)
                asked = lines if "Pay 900 ?" in lines[:1] and not fut.done() else None
                if asked is not None:
                    assert asked[1] == "to stranger", asked  # the payee's name, from its signed receipt
                    assert asked[3] == "new payee: OK", asked
                    board.press("cancel")
                out = fut.result(90)
            outcomes.append((out["result"], asked is not None))
        assert outcomes[:2] == [("committed", False)] * 2, outcomes
        assert outcomes[2:] == [("cancelled", True)] * 8, outcomes
        i = info(prov, acct["wallet"])
        assert i["balance"] == 40000 - 1800, i
        assert i["since_press"] == {"count": 2, "total": 1800, "new": 2}, i
        # a press pays and trusts that payee: the next taps there auto-confirm again
        out, lines = pay_pressing(board, net.request(stranger, 900, "pressed"), "confirm")
        assert out["result"] == "committed" and lines[1] == "to stranger", (out, lines)
        out = pay_through_relay(board.pty, net.request(stranger, 900, "known now"))
        assert out["result"] == "committed", out
        i = info(prov, acct["wallet"])
        assert i["balance"] == 40000 - 3600 and i["since_press"] == {"count": 1, "total": 900, "new": 0}, i
        h = wallet_cli("history", "--port", board.pty, "--json").json["history"]
        assert h[0]["payee"] == "stranger" and h[0]["signature_ok"] is True, h[0]
    finally:
        board.stop()


class RelabellingPayee:
    """A hostile payee in front of a real payee node: it holds its own key A (so a wallet's
    relay, pinned to A by the URL, completes the BOLT 8 handshake with it), relays the payment
    link to the real payee B over BOLT 8 both ways, and rewrites B's Receipt to name A while
    keeping B's signature: URL and receipt say A, the signature is B's."""

    def __init__(self, upstream_port, upstream_key):
        self.upstream_port = upstream_port
        self.upstream_key = upstream_key
        self.identity = Identity.generate()
        self.claimed_key = self.identity.pubkey
        self.relabelled = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, reader, writer):
        try:
            down = await stream.accept(reader, writer, self.identity)
            up = await stream.connect("127.0.0.1", self.upstream_port, Identity.generate(), self.upstream_key)
        except stream.StreamError:
            writer.close()
            return
        pumps = [asyncio.ensure_future(self._pipe(down, up, False)), asyncio.ensure_future(self._pipe(up, down, True))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for t in pumps:
            t.cancel()
        down.close()
        up.close()

    async def _pipe(self, src, dst, rewrite):
        try:
            while True:
                msg = await src.recv_message()
                if rewrite and msg.type == m.RECEIPT:
                    msg = m.Message(m.RECEIPT, dict(msg.fields, payee_key=self.claimed_key))
                    self.relabelled += 1
                dst.send_message(msg)
                await dst.drain()
        except (stream.StreamError, OSError):
            pass

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def with_key(url, key_hex):
    return url + ("&" if "?" in url else "?") + "key=" + key_hex


def test_receipt_signed_by_another_key_than_the_url_names_is_refused_by_the_provider(net, tmp_path):
    prov, (shop, stranger) = network(net, ("shop", "stranger"))
    board = start_wallet(tmp_path)
    mitm = RelabellingPayee(stranger.port, bytes.fromhex(stranger.rpc("info")["key"]))
    try:
        acct = provision(board, prov)
        url = net.request(stranger, 700, "relabelled").replace(":%d/" % stranger.port, ":%d/" % mitm.port)
        url = with_key(url.split("?")[0], mitm.claimed_key.hex())  # the URL names the hostile payee's key: A
        out = pay_through_relay(board.pty, url)
        assert mitm.relabelled == 1
        assert out["result"] == "cancelled" and "signature does not verify" in out["reason"], out
        i = info(prov, acct["wallet"])
        assert i["balance"] == 40000 and i["available"] == 40000, i
        assert [(p["state"], "signature" in p["reason"]) for p in i["payments"]] == [("cancelled", True)], i
        assert i["since_press"] == {"count": 0, "total": 0, "new": 0}, i  # a refused route is not counted
        # the stranger's URL with the shop's key: the relay's BOLT 8 handshake, pinned to the shop's
        # key, fails at the stranger; nothing is paid
        url = with_key(net.request(stranger, 700, "wrong key").split("?")[0], shop.rpc("info")["key"])
        out = pay_through_relay(board.pty, url)
        assert out["result"] == "cancelled", out
        assert info(prov, acct["wallet"])["balance"] == 40000
        # the stranger's receipt under its own key: paid
        out = pay_through_relay(board.pty, net.request(stranger, 700, "right key"))
        assert out["result"] == "committed", out
        assert info(prov, acct["wallet"])["balance"] == 39300
    finally:
        mitm.close()
        board.stop()


def test_cumulative_auto_limit_then_a_press_resets_it(net, tmp_path):
    prov, (shop,) = network(net)
    board = start_wallet(tmp_path)
    try:
        acct = provision(board, prov, "--auto-total", "1500", "--auto-count", "9", "--auto-new", "9")
        out = pay_through_relay(board.pty, net.request(shop, 800, "one"))
        assert out["result"] == "committed", out
        out, lines = pay_pressing(board, net.request(shop, 800, "two"), "confirm")
        assert lines[0] == "Pay 800 ?" and lines[3] == "auto limit: OK", lines
        assert out["result"] == "committed", out
        assert info(prov, acct["wallet"])["since_press"] == {"count": 0, "total": 0, "new": 0}
        out = pay_through_relay(board.pty, net.request(shop, 800, "three"))  # auto again after the press
        assert out["result"] == "committed", out
        i = info(prov, acct["wallet"])
        assert i["balance"] == 40000 - 2400 and i["since_press"] == {"count": 1, "total": 800, "new": 0}, i
        # the counters are on the wallet's flash: after a reboot the next one still needs a press
        board.power_cycle()
        board.wait_for_screen("ready", timeout=20)
        out, lines = pay_pressing(board, net.request(shop, 800, "four"), "cancel")
        assert lines[3] == "auto limit: OK" and out["result"] == "cancelled", (lines, out)
    finally:
        board.stop()


class PayeeLink:
    """This test as a payer speaking the payment link to a real payee node: Pay -> its signed Receipt."""

    def __init__(self, node, url):
        pid = url.split("/")[-1].split("?")[0]
        self.s = stream.connect_blocking("127.0.0.1", node.port, Identity.generate(),
                                         bytes.fromhex(url.split("key=")[1]), timeout=20)
        self.s.send_message(m.Message(m.PAY, id=pid))
        self.receipt = self.s.recv_message(timeout=20)
        assert self.receipt.type == m.RECEIPT and self.receipt.signature is not None

    def close(self):
        self.s.close()


def test_provider_refuses_auto_confirm_beyond_the_limits_from_a_compromised_wallet(net):
    prov, (shop, stranger) = network(net, ("shop", "stranger"))
    key = bytes(range(40, 72))  # the wallet's key, as a thief who read it off the wallet has it
    r = control(prov, "wallet_provision", {"wallet": "w-stolen", "key": key.hex(), "limit": 5000, "daily": 50000,
                                           "auto": 1000, "auto_count": 3, "auto_total": 2000, "auto_new": 1})
    assert (r["auto_count"], r["auto_total"], r["auto_new"]) == (3, 2000, 1)
    control(prov, "wallet_topup", {"wallet": "w-stolen", "amount": 40000})
    prov_key = bytes.fromhex(prov.rpc("info")["key"])
    counter = [0]
    links = []

    def route(payee, amount, confirm=wl.AUTO, tamper=None):
        link = PayeeLink(payee, net.request(payee, amount, "x"))
        links.append(link)
        rec = link.receipt
        fields = {"payee_key": rec.payee_key, "receipt_hash": wl.receipt_hash(rec), "receipt": m.encode(rec)}
        if tamper:
            fields.update(tamper(rec))
        counter[0] += 1
        msg = wl.auth(key, "w-stolen", counter[0], wl.ROUTE, rec.txid, rec.amount, rec.meeting_points[0],
                      fields["payee_key"], fields["receipt_hash"], confirm, receipt=fields["receipt"])
        s = stream.connect_blocking("127.0.0.1", prov.port, Identity.generate(), prov_key, timeout=20)
        try:
            s.send_message(msg)
            st = s.recv_message(timeout=20)
        finally:
            s.close()
        assert st.type == wl.STATUS and wl.verify(key, st), st
        return st

    try:
        # over the per-payment auto amount, claimed as auto-confirmed
        st = route(stranger, 1500)
        assert st.state == wl.REFUSED and "auto-confirm amount 1000" in st.reason, st
        # one auto-confirmed payment to a new payee is allowed, the second is not
        assert route(stranger, 900).state != wl.REFUSED
        st = route(stranger, 900)
        assert st.state == wl.REFUSED and "new payees" in st.reason, st
        # a receipt whose hash the Auth misstates, and a receipt from someone else: refused too
        st = route(stranger, 100, wl.BUTTON, tamper=lambda rec: {"receipt_hash": bytes(32)})
        assert st.state == wl.REFUSED and "hash does not match" in st.reason, st
        other = Identity.generate()
        st = route(stranger, 100, wl.BUTTON, tamper=lambda rec: {"payee_key": other.pubkey})
        assert st.state == wl.REFUSED and "another payee key" in st.reason, st
        # a press (as the wallet claims) resets; then the count and cumulative limits hold
        assert route(shop, 100, wl.BUTTON).state != wl.REFUSED
        assert route(shop, 900).state != wl.REFUSED
        assert route(shop, 900).state != wl.REFUSED
        st = route(shop, 900)
        assert st.state == wl.REFUSED and "would pass the limit 2000" in st.reason, st
        assert route(shop, 100).state != wl.REFUSED
        st = route(shop, 100)
        assert st.state == wl.REFUSED and "3 auto-confirmed payments since the last press" in st.reason, st
        i = info(prov, "w-stolen")
        assert i["since_press"] == {"count": 3, "total": 1900, "new": 0}, i
        refused = [p for p in i["payments"] if p["state"] == "cancelled"]
        assert len(refused) >= 6 and all(p["reason"] for p in refused)
    finally:
        for link in links:
            link.close()
