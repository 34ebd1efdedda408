"""The relay's sans-IO router: what crosses from which side, and nothing malformed crosses."""

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.token import new_token, transaction_id

from amiko.relay.core import Router

from amiko_testing.network import run_amiko

TXID = transaction_id(new_token())


def test_wallet_frames_go_where_their_type_says():
    r = Router()
    hello = m.Message(wl.HELLO, wallet="w-1", provider="amikolink://127.0.0.1:4000/w-1")
    pay = m.Message(m.PAY, id="p1")
    auth = wl.auth(bytes(32), "w-1", 1, wl.ROUTE, TXID, 5, "mp", b"\x02" + bytes(32), bytes(32), wl.AUTO)
    done = m.Message(wl.DONE, id="p1", state=wl.COMMITTED)
    data = b"junk" + m.to_frame(hello) + m.to_frame(pay) + m.to_frame(auth) + m.to_frame(done)
    actions = r.from_wallet(data[:7]) + r.from_wallet(data[7:])
    assert [a[0] for a in actions] == ["hello", "payee", "provider", "done"]
    assert actions[1][1] == m.to_frame(pay) and actions[2][1] == m.to_frame(auth)
    assert r.hello == hello and r.done == done
    # a Receipt or Status from the wallet goes nowhere
    st = wl.status(bytes(32), "w-1", 1, 1, TXID, wl.ROUTED, 5, "mp", 0, 0)
    assert r.from_wallet(m.to_frame(st)) == [] and r.dropped == 1


def test_only_the_right_types_reach_the_wallet():
    r = Router()
    receipt = m.Message(m.RECEIPT, id="p1", amount=5, receipt="x", txid=TXID, meeting_points=["mp"])
    st = wl.status(bytes(32), "w-1", 1, 1, TXID, wl.ROUTED, 5, "mp", 0, 0)
    assert r.from_payee(m.to_frame(receipt)) == [("wallet", m.to_frame(receipt))]
    assert r.from_payee(m.to_frame(st)) == []  # the payee cannot speak for the provider
    assert r.from_provider(m.to_frame(st)) == [("wallet", m.to_frame(st))]
    assert r.from_provider(m.to_frame(receipt)) == []  # nor the provider for the payee
    provision = m.Message(wl.PROVISION, wallet="w", key=bytes(32), provider="amikolink://x/w", limit=1, daily=1, auto=0,
                          auto_count=0, auto_total=0, auto_new=0)
    assert r.from_payee(m.to_frame(provision)) == [] and r.from_provider(m.to_frame(provision)) == []
    # malformed bodies and garbage never cross
    assert r.from_provider(frame.encode(wl.STATUS, b"\xa1\x01\x02") + b"\x00" * 50) == []
    err = m.Message(m.ERROR, code=1, reason="refused")
    assert r.from_provider(m.to_frame(err)) == []  # logged, not relayed
    assert r.dropped == 6


def test_settled_once_the_providers_final_status_for_the_authorised_payment_crossed():
    r = Router()
    key, other = bytes(32), transaction_id(new_token())
    done = m.Message(wl.DONE, id="p1", state=wl.COMMITTED)
    commit = wl.auth(key, "w-1", 3, wl.COMMIT, TXID, 5, "mp", b"\x02" + bytes(32), bytes(32), wl.AUTO)
    r.from_wallet(m.to_frame(commit))
    final = m.to_frame(wl.status(key, "w-1", 3, 3, TXID, wl.COMMITTED, 5, "mp", 0, 0))
    r.from_payee(final)  # the payee cannot settle the wallet's session
    assert not r.settled
    r.from_provider(m.to_frame(wl.status(key, "w-1", 3, 3, TXID, wl.LOCKED, 5, "mp", 0, 0)))
    r.from_provider(m.to_frame(wl.status(key, "w-1", 3, 3, other, wl.COMMITTED, 5, "mp", 0, 0)))
    assert not r.settled  # not final, or another payment's
    r.from_provider(final)
    assert not r.settled  # the wallet has not said Done yet
    r.from_wallet(m.to_frame(done))
    assert r.settled


def test_wallet_cli_errors_say_what_to_do(tmp_path):
    r = run_amiko(["wallet", "provision", "--port", "/dev/nonexistent", "--provider",
                   "amikolink://127.0.0.1:4000/w", "--json"])
    assert r.returncode == 2 and "--provider HOME" in r.json["error"]["message"]
    r = run_amiko(["wallet", "history", "--port", str(tmp_path / "no-such-port"), "--json"])
    assert r.returncode == 2 and "cannot open the wallet's port" in r.json["error"]["message"]
