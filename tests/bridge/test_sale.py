"""The sale state machine (amiko.bridge.sale): every transition, every time-out on a fake clock."""

import pytest

from amiko.bridge import sale as s
from amiko.bridge.sale import SaleError, SaleMachine

URL = "amikopay://127.0.0.1:4000/abc"
TXID = "11" * 20


def kinds(effects):
    return [e[0] for e in effects]


def started(now=0.0, amount=100, receipt="coffee"):
    m = SaleMachine()
    eff = m.start(amount, receipt, now)
    assert eff[0] == ("create_request", 1, amount, receipt)
    assert m.phase == s.PREPARING
    return m


def waiting(now=1.0):
    m = started()
    eff = m.request_created(1, URL, "abc", TXID, now)
    assert ("watch", 1, TXID) in eff and ("offer", 1, URL) in eff and ("changed",) in eff
    assert m.phase == s.WAITING
    return m


def connected(now=2.0):
    m = waiting()
    m.wallet_arrived("serial:/dev/ttyACM0", now)
    assert m.phase == s.CONNECTED
    return m


def test_happy_path_every_phase_and_timeline():
    m = connected(2.0)
    assert kinds(m.wallet_confirming(2.5)) == ["changed"] and m.phase == s.CONFIRMING
    assert m.node_state(1, "requested", 2.6) == []
    assert kinds(m.node_state(1, "confirmed", 3.0)) == ["changed"] and m.phase == s.ROUTING
    assert kinds(m.node_state(1, "locked", 3.5)) == ["changed"] and m.phase == s.LOCKED
    eff = m.node_state(1, "committed", 4.0)
    assert m.phase == s.PAID
    assert ("unwatch", 1) in eff and ("rearm",) in eff and ("changed",) in eff
    snap = m.snapshot(4.0)
    assert snap["sale"]["tap_to_paid_ms"] == 2000
    assert snap["sale"]["timeline_ms"] == {"preparing": 0, "waiting": 1000, "connected": 2000, "confirming": 2500,
                                           "routing": 3000, "locked": 3500, "paid": 4000}
    assert snap["dismissable"] and not snap["cancellable"] and snap["seconds_left"] is None
    # paid stays until dismissed
    assert m.tick(10 ** 6) == [] and m.phase == s.PAID
    assert kinds(m.dismiss(5.0)) == ["changed"] and m.phase == s.IDLE


def test_wallet_marks_in_the_timeline_first_time_counts_current_sale_only():
    m = connected(2.0)
    assert m.wallet_mark(1, "hello", 2.1) == [] and m.phase == s.CONNECTED  # not a phase: no change on the page
    m.wallet_confirming(2.2)
    assert m.wallet_mark(1, "confirm", 2.3) == []
    assert m.wallet_mark(1, "confirm", 2.9) == []  # the first time counts
    assert m.wallet_mark(2, "token", 2.4) == []  # another sale's: ignored
    assert m.wallet_mark(1, "no_such_mark", 2.4) == []
    m.node_state(1, "committed", 3.0)
    assert m.phase == s.PAID
    # the wallet's Done comes after paid: still recorded on the (final) sale, with its state
    assert kinds(m.wallet_mark(1, "wallet_done", 3.1, "committed")) == ["changed"]
    sale = m.snapshot(3.1)["sale"]
    assert sale["wallet_state"] == "committed"
    assert sale["timeline_ms"] == {"preparing": 0, "waiting": 1000, "connected": 2000, "hello": 2100,
                                   "confirming": 2200, "confirm": 2300, "paid": 3000, "wallet_done": 3100}
    assert m.tick(10 ** 6) == [] and m.phase == s.PAID


def test_node_can_jump_ahead_and_never_goes_back():
    m = waiting()
    m.node_state(1, "locked", 2.0)  # a payer paying the URL directly: no wallet events here
    assert m.phase == s.LOCKED
    assert m.node_state(1, "confirmed", 2.1) == [] and m.phase == s.LOCKED
    m.node_state(1, "committed", 2.2)
    assert m.phase == s.PAID and m.snapshot(3)["sale"]["tap_to_paid_ms"] is None


def test_node_state_ignored_while_preparing_and_for_other_sales():
    m = started()
    assert m.node_state(1, "committed", 1.0) == [] and m.phase == s.PREPARING
    m.request_created(1, URL, "abc", TXID, 1.0)
    assert m.node_state(99, "committed", 1.0) == [] and m.phase == s.WAITING
    with pytest.raises(SaleError, match="unknown node payment state"):
        m.node_state(1, "exploded", 1.0)


def test_node_cancels():
    m = connected()
    m.wallet_confirming(2.1)
    m.node_state(1, "confirmed", 2.2)
    eff = m.node_state(1, "cancelled", 3.0, reason="no route to the meeting point")
    assert m.phase == s.CANCELLED
    assert "cancel_request" not in kinds(eff)  # the node cancelled it itself
    assert m.sale.reason == "the shop node cancelled the payment: no route to the meeting point"


def test_request_failed():
    m = started()
    eff = m.request_failed(1, "this node offers no meeting point", 0.5)
    assert m.phase == s.CANCELLED and "cancel_request" not in kinds(eff) and ("rearm",) in eff
    assert "this node offers no meeting point" in m.sale.reason
    assert m.request_failed(1, "again", 0.6) == [] and m.request_created(1, URL, "abc", TXID, 0.7) == []


def test_two_sales_at_once_refused_clearly():
    for phase_maker in (started, waiting, connected):
        m = phase_maker()
        before = m.snapshot(5)
        with pytest.raises(SaleError, match="a sale of 100 is in progress .*cancel it before starting another"):
            m.start(5, "tea", 5)
        assert m.snapshot(5) == before


def test_new_sale_replaces_a_final_one():
    m = waiting()
    m.cancel(2.0)
    eff = m.start(7, "", 3.0)
    assert m.phase == s.PREPARING and m.sale.id == 2 and m.sale.amount == 7 and m.sale.reason is None
    assert ("create_request", 2, 7, "") in eff


def test_cashier_cancel_in_each_cancellable_phase():
    for maker, has_request in ((started, False), (waiting, True), (connected, True)):
        m = maker()
        eff = m.cancel(3.0)
        assert m.phase == s.CANCELLED and m.sale.reason == "cancelled by the cashier"
        assert ("rearm",) in eff and ("unwatch", 1) in eff
        cancel = [e for e in eff if e[0] == "cancel_request"]
        assert cancel == [("cancel_request", 1, "abc" if has_request else None, "cancelled by the cashier")]
    m = connected()
    m.wallet_confirming(2.1)
    m.cancel(2.2)
    assert m.phase == s.CANCELLED


def test_cancel_refused_once_the_network_has_it_and_when_nothing_runs():
    m = waiting()
    m.node_state(1, "confirmed", 2.0)
    with pytest.raises(SaleError, match="already on its way through the network .*within 40 s"):
        m.cancel(2.0)
    assert m.phase == s.ROUTING
    for phase_maker in (SaleMachine,):
        idle = phase_maker()
        with pytest.raises(SaleError, match="no sale in progress"):
            idle.cancel(0)
    m.node_state(1, "committed", 3.0)
    with pytest.raises(SaleError, match="no sale in progress"):
        m.cancel(4.0)


def test_dismiss_only_final():
    m = waiting()
    with pytest.raises(SaleError, match="nothing to dismiss: the sale is waiting"):
        m.dismiss(2.0)
    with pytest.raises(SaleError, match="nothing to dismiss: the sale is idle"):
        SaleMachine().dismiss(0)


@pytest.mark.parametrize("phase,timeout,reason", [
    (s.PREPARING, 10, "the shop node did not answer within 10 s (is `amiko node` running?)"),
    (s.WAITING, 120, "no wallet connected within 120 s"),
    (s.CONNECTED, 10, "the wallet did not get the receipt within 10 s"),
    (s.CONFIRMING, 60, "the customer did not confirm on the wallet within 60 s"),
    (s.ROUTING, 40, "no route through the network within 40 s"),
    (s.LOCKED, 40, "the locked payment did not complete within 40 s"),
])
def test_every_phase_times_out_with_a_reason(phase, timeout, reason):
    m = SaleMachine()
    t = 100.0
    m.start(10, "x", t)
    steps = [lambda: m.request_created(1, URL, "abc", TXID, t), lambda: m.wallet_arrived("serial:x", t),
             lambda: m.wallet_confirming(t), lambda: m.node_state(1, "confirmed", t),
             lambda: m.node_state(1, "locked", t)]
    order = [s.PREPARING, s.WAITING, s.CONNECTED, s.CONFIRMING, s.ROUTING, s.LOCKED]
    for step in steps[:order.index(phase)]:
        step()
    assert m.phase == phase
    assert m.snapshot(t)["seconds_left"] == timeout
    assert m.tick(t + timeout - 0.01) == [] and m.phase == phase
    eff = m.tick(t + timeout)
    assert m.phase == s.CANCELLED and m.sale.reason == "timed out: " + reason
    assert ("rearm",) in eff
    if phase in s.CANCELLABLE:
        assert "cancel_request" in kinds(eff) and ("unwatch", 1) in eff
    else:
        # the network may still finish it: keep watching, no cancel (the node owns it now)
        assert "cancel_request" not in kinds(eff) and ("unwatch", 1) not in eff
    assert m.tick(t + 10 ** 6) == []  # final: no more time-outs


def test_late_commit_after_a_routing_time_out_is_reported():
    m = waiting()
    m.node_state(1, "confirmed", 2.0)
    m.tick(2.0 + 40)
    assert m.phase == s.CANCELLED
    eff = m.node_state(1, "committed", 50.0)
    assert ("unwatch", 1) in eff and m.sale.late == "committed"
    assert "PAID" in m.notice and m.snapshot(50)["sale"]["late"] == "committed"
    assert m.node_state(1, "committed", 51.0) == []


def test_custom_timeouts_and_bad_ones():
    m = SaleMachine({"waiting": 5, "routing": 0.5})
    m.start(1, "", 0)
    m.request_created(1, URL, "abc", TXID, 0)
    assert m.tick(5)[0] == ("cancel_request", 1, "abc", "timed out: no wallet connected within 5 s")
    for bad in ({"paid": 1}, {"waiting": 0}, {"waiting": "5"}, {"waiting": 10 ** 9}, {"nope": 1}):
        with pytest.raises(ValueError):
            SaleMachine(bad)


def test_wallet_with_no_sale_pending_gets_a_clear_state():
    m = SaleMachine()
    eff = m.wallet_arrived("serial:/dev/ttyACM0", 0)
    assert m.phase == s.IDLE and kinds(eff) == ["changed"]
    assert "no sale is pending" in m.snapshot(0)["notice"] and m.snapshot(0)["wallet_present"] == "serial:/dev/ttyACM0"
    # the sale started while it is there goes to it as soon as the request exists
    m.start(10, "", 1)
    assert m.notice is None
    eff = m.request_created(1, URL, "abc", TXID, 2)
    assert m.phase == s.CONNECTED and m.sale.transport == "serial:/dev/ttyACM0" and ("offer", 1, URL) in eff


def test_wallet_leaving_with_no_sale_clears_the_notice():
    m = SaleMachine()
    m.wallet_arrived("serial:a", 0)
    assert kinds(m.wallet_left("serial:a", 1)) == ["changed"] and m.notice is None and m.wallet_present is None


def test_wallet_leaves_before_confirming_the_node_decides():
    # the node cancels (its payee session lost the payer): cancelled, saying the wallet left
    for confirm in (False, True):
        m = connected()
        if confirm:
            m.wallet_confirming(2.1)
        phase = m.phase
        assert kinds(m.wallet_left("serial:/dev/ttyACM0", 3.0)) == ["changed"]
        assert m.phase == phase and "wallet left before the payment was confirmed" in m.notice
        assert m.wallet_present is None
        m.node_state(1, "cancelled", 3.1, reason="payer disconnected")
        assert m.phase == s.CANCELLED
        assert m.sale.reason == ("the wallet left before the payment was confirmed "
                                 "(the shop node cancelled the payment: payer disconnected)")
    # the confirmation got out just before the contact ended: the payment goes on
    m = connected()
    m.wallet_confirming(2.1)
    m.wallet_left("serial:/dev/ttyACM0", 3.0)
    m.node_state(1, "confirmed", 3.1)
    assert m.phase == s.ROUTING
    m.node_state(1, "committed", 3.2)
    assert m.phase == s.PAID
    # and if the node says nothing, the phase's time-out ends it
    m = connected()
    m.wallet_left("serial:/dev/ttyACM0", 3.0)
    m.tick(2.0 + 10)
    assert m.phase == s.CANCELLED and "did not get the receipt" in m.sale.reason


def test_wallet_leaves_after_confirmation_payment_goes_on():
    m = connected()
    m.node_state(1, "confirmed", 3.0)
    assert kinds(m.wallet_left("serial:/dev/ttyACM0", 3.1)) == ["changed"]
    assert m.phase == s.ROUTING and "still completes or times out" in m.notice
    m.node_state(1, "committed", 4.0)
    assert m.phase == s.PAID


def test_second_wallet_during_a_sale_is_ignored_with_a_notice():
    m = connected()
    m.wallet_arrived("serial:/dev/ttyACM1", 2.5)
    assert m.phase == s.CONNECTED and m.sale.transport == "serial:/dev/ttyACM0" and "ignored" in m.notice
    m.wallet_left("serial:/dev/ttyACM1", 2.6)
    assert m.phase == s.CONNECTED


def test_wallet_declines():
    m = connected()
    m.wallet_confirming(2.1)
    eff = m.wallet_declined(2.2)
    assert m.phase == s.CANCELLED and m.sale.reason == "the customer declined on the wallet"
    assert "cancel_request" in kinds(eff)
    assert m.wallet_declined(2.3) == [] and m.wallet_confirming(2.3) == []


def test_stray_wallet_events_outside_their_phase_do_nothing():
    m = SaleMachine()
    assert m.wallet_confirming(0) == [] and m.wallet_declined(0) == [] and m.wallet_left("serial:x", 0) == []
    assert m.phase == s.IDLE
    m = waiting()
    assert m.wallet_confirming(1) == [] and m.phase == s.WAITING


@pytest.mark.parametrize("amount", [0, -1, 1.5, "10", None, True, s.MAX_AMOUNT + 1, 10 ** 30])
def test_bad_amounts_refused(amount):
    m = SaleMachine()
    with pytest.raises(SaleError, match="amount must be a whole number"):
        m.start(amount, "", 0)
    assert m.phase == s.IDLE and m.sale is None


@pytest.mark.parametrize("receipt,msg", [("x" * 513, "at most 512"), ("a\x00b", "control character"),
                                         ("\x1b[2J", "control character"), (5, "must be text"),
                                         ("é" * 257, "at most 512")])
def test_bad_receipts_refused(receipt, msg):
    m = SaleMachine()
    with pytest.raises(SaleError, match=msg):
        m.start(1, receipt, 0)
    assert m.phase == s.IDLE


def test_long_reason_is_cut_and_snapshot_is_json():
    import json

    m = started()
    m.request_failed(1, "x" * 1000, 1)
    assert len(m.sale.reason) <= s.MAX_REASON
    json.dumps(m.snapshot(1))


def test_a_cancel_the_node_refused_is_told_and_followed_to_a_late_outcome():
    m = waiting()
    eff = m.cancel(5.0)
    assert ("cancel_request", 1, "abc", "cancelled by the cashier") in eff and ("unwatch", 1) in eff
    assert m.cancel_failed(2, "nope", 6.0) == []  # another sale: nothing
    eff = m.cancel_failed(1, "payment abc is locked: it can no longer be cancelled", 6.0)
    assert eff == [("watch", 1, TXID), ("changed",)]
    assert m.phase == s.CANCELLED and "did not cancel the payment request" in m.notice and "may still be paid" in m.notice
    eff = m.node_state(1, "committed", 7.0)
    assert m.sale.late == "committed" and ("unwatch", 1) in eff and "PAID" in m.notice
    # without a failed cancel, a cancelled sale ignores later node states
    m = waiting()
    m.cancel(5.0)
    assert m.node_state(1, "committed", 7.0) == [] and m.sale.late is None
