"""The wallet firmware (firmware/wallet) on MicroPython with a fake board and a scripted world."""

import os
import sys

if "firmware" not in sys.path:
    sys.path.append("firmware")

from mptest import eq

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl
from amiko_core.token import transaction_id
from wallet.app import App
from wallet_world import OTHER_PAYEE_KEY, PAYEE_KEY, FakeBoard, Provider, World, fake_sign, provision_msg, rmtree

_n = [0]
PAY_URL = "amikopay://127.0.0.1:4001/pay-1"
FAST = {"receipt": 2, "confirm": 5, "routing": 6, "locking": 3}


def _root():
    _n[0] += 1
    root = "/tmp/amiko-mp-wallet-%d-%s" % (_n[0], "".join("%02x" % b for b in os.urandom(4)))
    return root


class H:
    def __init__(self, world=None, limit=5000, daily=20000, auto=1000, display=True, root=None, **auto_rules):
        self.root = root or _root()
        self.board = FakeBoard(self.root, display=display)
        self.app = App(self.board, timeouts=FAST)
        self.w = self.app.wallet
        self.world = None
        if root is None:
            self.give(m.to_frame(provision_msg(limit, daily, auto, **auto_rules)))
            self.pump(3)
            acks = [x for x in self.drain() if x.type == wl.PROVISION_ACK]
            eq(len(acks), 1, "provision ack")
        self.world = world

    def give(self, data):
        self.board.serial.inbox.extend(data)

    def drain(self):
        out = []
        dec = frame.FrameDecoder(4096)
        for data in self.board.serial.sent:
            for fr in dec.feed(data):
                out.append(m.from_frame(fr))
        self.board.serial.sent = []
        return out

    def pump(self, rounds=400, step_ms=50):
        for _ in range(rounds):
            self.app.step()
            if self.world is not None:
                for data in self.board.serial.sent:
                    self.world.from_wallet(data)
                self.board.serial.sent = []
                for data in self.world.take():
                    self.give(data)
            self.board.ms += step_ms

    def tap(self, url=PAY_URL):
        self.give(m.to_frame(m.Message(wl.TAP, url=url)))

    def reboot(self):
        self.app = App(FakeBoard(self.root), timeouts=FAST)
        self.app.board.ms = self.board.ms
        self.board = self.app.board
        self.w = self.app.wallet
        return self

    def state(self):
        return self.w.state

    def close(self):
        rmtree(self.root)


def _tapped(world, rounds=400, tamper_to_wallet=None, tamper_from_wallet=None, **wallet):
    """A provisioned wallet (H(world, **wallet)) tapped and pumped for rounds steps."""
    if tamper_to_wallet is not None:
        world.tamper_to_wallet = tamper_to_wallet
    if tamper_from_wallet is not None:
        world.tamper_from_wallet = tamper_from_wallet
    h = H(world, **wallet)
    h.tap()
    h.pump(rounds)
    return h


def _committed(h, world, amount):
    eq([d.state for d in world.done], [wl.COMMITTED], "done")
    st = h.state()
    eq(st["pay"], None, "no payment pending")
    eq(st["balance"], 10000 - amount, "balance after")
    eq(world.provider.balance, 10000 - amount, "provider balance")
    h.give(m.to_frame(m.Message(wl.GET_HISTORY, index=0)))
    world_saved, h.world = h.world, None
    h.pump(3)
    h.world = world_saved
    entries = [x for x in h.drain() if x.type == wl.HISTORY_ENTRY]
    eq(len(entries), 1, "history entry")
    e = entries[0]
    eq(e.state, wl.COMMITTED, "history state")
    eq(transaction_id(e.token), e.txid, "proof token")
    eq(e.amount, amount, "history amount")
    return e


def test_happy_path_auto_confirm():
    world = World(amount=500)
    h = _tapped(world)
    e = _committed(h, world, 500)
    eq(e.signature is not None and e.payee_key == PAYEE_KEY, True, "signed receipt kept")
    eq(e.payee, "Corner cafe", "payee name kept")
    eq(h.state()["spent"], 500, "spent today")
    eq(h.board.led.state, "ok", "led")
    h.close()


def test_button_confirm_and_display():
    world = World(amount=1500, receipt="big coffee")
    h = _tapped(world, auto=100, rounds=40)
    eq(h.board.display.lines[0], "Pay 1500 ?", "display asks")
    eq(world.provider.counter, 0, "nothing authorised before the button")
    h.board.buttons.events.append("confirm")
    h.pump()
    _committed(h, world, 1500)
    h.close()


def test_button_cancel_declines():
    world = World(amount=1500)
    h = _tapped(world, auto=100, rounds=40)
    h.board.buttons.events.append("cancel")
    h.pump()
    eq([d.state for d in world.done], [wl.CANCELLED], "done")
    eq(world.payee.outcome, "cancelled", "payee told")
    eq(h.state()["counter"], 0, "no authorisation")
    eq(world.provider.balance, 10000, "provider untouched")
    h.close()


def test_confirm_timeout_declines():
    world = World(amount=1500)
    h = _tapped(world, auto=100, rounds=200)
    eq(world.payee.outcome, "cancelled", "payee told")
    eq(h.state()["pay"], None, "nothing pending")
    h.close()


def test_per_payment_limit():
    world = World(amount=6000)
    h = _tapped(world, limit=5000)
    eq(world.payee.outcome, "cancelled", "payee told")
    eq(world.provider.counter, 0, "provider never asked")
    eq("per-payment limit" in world.done[0].reason, True, world.done[0].reason)
    h.close()


def test_daily_limit():
    provider = Provider()
    w1 = World(amount=500, provider=provider)
    h = H(w1, daily=800)
    h.tap()
    h.pump()
    eq(provider.balance, 9500, "first paid")
    token2 = bytes([5]) * 32
    w2 = World(amount=500, provider=provider, token=token2, payment_id="pay-2")
    h.world = w2
    h.tap("amikopay://127.0.0.1:4001/pay-2")
    h.pump()
    eq(w2.payee.outcome, "cancelled", "second refused")
    eq("remaining limit" in w2.done[0].reason, True, w2.done[0].reason)
    eq(provider.balance, 9500, "second not paid")
    h.close()


def test_provider_refuses_over_balance():
    world = World(amount=900, provider=Provider(balance=800))
    h = _tapped(world)
    eq(world.payee.outcome, "cancelled", "payee told")
    eq(h.state()["pay"], None, "resolved")
    eq(h.state()["spent"], 0, "spent restored")
    h.close()


def test_forged_status_refused_then_genuine_one_accepted():
    world = World(amount=500)
    forged = []

    def tamper(msg):
        if msg.type == wl.STATUS and not forged:
            f = dict(msg.fields)
            f["balance"] = 999999
            forged.append(1)
            return m.Message(wl.STATUS, f)
        return msg

    h = _tapped(world, tamper_to_wallet=tamper)
    eq(len(forged), 1, "forged once")
    eq(any("not authenticated" in e for e in world.errors if isinstance(e, str)), True, "refused")
    _committed(h, world, 500)
    h.close()


def test_replayed_status_refused():
    world = World(amount=500)
    seen = []

    def keep(msg):
        if msg.type == wl.STATUS:
            seen.append(msg)
        return msg

    h = _tapped(world, tamper_to_wallet=keep)
    before = dict(h.state())
    world.errors = []
    for st in seen:
        h.give(m.to_frame(st))
    h.pump(5)
    eq(len([e for e in world.errors if "Status refused" in e]), len(seen), "every replay refused")
    eq(h.state(), before, "state intact")
    h.close()


def test_replayed_and_altered_auth_refused_by_provider():
    world = World(amount=500)
    auths = []

    def alter(msg):
        if msg.type == wl.AUTH:
            auths.append(msg)
            if len(auths) == 1:
                f = dict(msg.fields)
                f["amount"] = 400  # the terminal tries to change the amount
                return m.Message(wl.AUTH, f)
            if len(auths) == 2:
                f = dict(msg.fields)
                f["meeting_point"] = "mp-evil"  # ... or redirect to its meeting point
                return m.Message(wl.AUTH, f)
        return msg

    h = _tapped(world, tamper_from_wallet=alter)
    eq(world.provider.refusals[:2], ["mac", "mac"], "altered auths refused")
    _committed(h, world, 500)
    n = len(world.provider.refusals)
    world.tamper_from_wallet = None
    world.from_wallet(m.to_frame(auths[0]))  # replay an old genuine authorisation
    eq(world.provider.refusals[n:], ["counter"], "replay refused")
    h.close()


def test_forged_status_wrong_meeting_point():
    world = World(amount=500)
    h = _tapped(world, rounds=3)
    pay = h.state()["pay"]
    eq(pay is not None, True, "payment started")
    c = h.state()["counter"]
    st = wl.status(bytes(32), "w-test", 99, c, pay["txid"], wl.ROUTED, 500, "mp-evil", 1, 1)
    before = h.state()["pcounter"]
    h.give(m.to_frame(st))
    h.app.step()
    eq(h.state()["pcounter"], before, "not accepted")
    h.pump()
    _committed(h, world, 500)
    h.close()


def test_token_that_does_not_hash_to_txid():
    world = World(amount=500, settle=False)

    def bad_token(msg):
        if msg.type == m.COMMIT:
            return m.Message(m.COMMIT, id=msg.id, token=bytes(32))
        return msg

    h = _tapped(world, rounds=30, tamper_to_wallet=bad_token)
    eq(any("does not hash" in e for e in world.errors if isinstance(e, str)), True, "refused")
    pay = h.state()["pay"]
    eq(pay["phase"], "lock", "still waiting, not paid")
    eq(pay["token"], None, "no token stored")
    world.provider.settle(world.payee.txid, world.payee.token)  # the network brings the token back
    h.pump()  # lock timeout -> query -> Status{committed, token}
    e = _committed(h, world, 500)
    eq(e.token, world.payee.token, "the real token is the proof")
    h.close()


def test_garbage_and_oversized_frames():
    world = World(amount=500)
    h = H(world)
    before = dict(h.state())
    h.give(b"\x00\xff garbage \xa5\x4b\x01")
    big = bytearray(frame.encode(m.PAY, bytes(3000), max_frame=4096))
    h.give(big)
    h.give(frame.encode(200, b"\xa0"))  # unknown type
    h.give(frame.encode(wl.STATUS, b"\xff\xff"))  # bad body
    h.pump(20)
    errs = [e for e in world.errors if isinstance(e, str)]
    eq(len(errs) >= 3, True, "refusals: %r" % errs)
    eq(h.state(), before, "state intact")
    h.tap()
    h.pump()
    _committed(h, world, 500)
    h.close()


def test_unprovisioned_and_reprovision_refused():
    world = World()
    root = _root()
    h = _tapped(world, root=root, rounds=3)
    eq(any("not provisioned" in e for e in world.errors if isinstance(e, str)), True, "unprovisioned")
    h.world = None
    h.give(m.to_frame(provision_msg()))
    h.pump(3)
    h.give(m.to_frame(m.Message(wl.PROVISION, wallet="w-evil", key=bytes(32), provider="amikolink://evil/w", limit=1,
                                daily=1, auto=1, auto_count=1, auto_total=1, auto_new=1)))
    h.pump(3)
    msgs = h.drain()
    eq([x.type for x in msgs], [wl.PROVISION_ACK, wl.REFUSED_MSG], "second provision refused")
    eq(h.w.config["wallet"], "w-test", "config kept")
    h.close()


def test_contact_lost_after_route_resumes_and_cancels():
    world = World(amount=500, payee_routes=False)
    h = _tapped(world, rounds=4)
    eq(h.state()["pay"]["phase"], "route", "route authorised")
    eq(h.state()["spent"], 500, "counted")
    h.reboot()
    eq(h.state()["pay"]["phase"], "route", "persisted")
    h.world = world
    h.give(m.to_frame(m.Message(wl.TAP)))
    h.pump()
    eq(h.state()["pay"], None, "resolved")
    eq(h.state()["spent"], 0, "limit restored")
    eq(world.provider.pays[world.payee.txid]["state"], wl.CANCELLED, "provider cancelled")
    h.give(m.to_frame(m.Message(wl.GET_HISTORY, index=0)))
    h.world = None
    h.pump(2)
    e = [x for x in h.drain() if x.type == wl.HISTORY_ENTRY][0]
    eq(e.state, wl.CANCELLED, "history says cancelled")
    h.close()


def test_contact_lost_after_lock_resumes_and_commits():
    world = World(amount=500, release=False, settle=False)
    h = _tapped(world, rounds=6)
    eq(h.state()["pay"]["phase"], "lock", "lock authorised")
    h.reboot()
    world.provider.settle(world.payee.txid, world.payee.token)
    h.world = world
    h.give(m.to_frame(m.Message(wl.TAP, url=PAY_URL)))  # a new payment while one is pending
    h.pump()
    eq(any("busy" in e for e in world.errors if isinstance(e, str)), True, "busy")
    _committed(h, world, 500)
    h.close()


def test_internal_error_keeps_the_wallet_running_with_flash_state():
    world = World(amount=500)
    h = H(world)
    before = dict(h.state())

    def broken(msg):
        h.w.state["counter"] = 999  # a bug that half-changed the state in RAM ...
        raise KeyError("bug")

    h.w._on_tap = broken
    h.tap()
    h.pump(3)
    eq(any("internal error" in e for e in world.errors if isinstance(e, str)), True, "reported")
    eq(h.state(), before, "... is undone: state as on flash")
    del h.w._on_tap
    h.tap()
    h.pump()
    _committed(h, world, 500)
    h.close()


def test_unknown_and_node_link_types_refused_by_type():
    world = World()
    h = H(world)
    h.give(frame.encode(m.ERROR, b"\xa0"))
    h.give(frame.encode(m.MAKE_ROUTE, b"\xa0"))
    h.pump(3)
    eq(len([e for e in world.errors if "does not accept message type" in e]), 2, "refused unread")
    h.close()


# ---------------------------------------------------------------- the payee the wallet vouches for

def _key_url(key, pid="pay-1"):
    return "amikopay://127.0.0.1:4001/%s?key=%s" % (pid, "".join("%02x" % b for b in key))


def _tap_world(h, provider, n, amount=900, **kw):
    """Tap n: a fresh payment (its own token and id) from the world's payee."""
    pid = "pay-%d" % n
    world = World(amount=amount, provider=provider, token=bytes([n + 20]) * 32, payment_id=pid, **kw)
    h.world = world
    h.tap(kw.get("url") or "amikopay://127.0.0.1:4001/" + pid)
    return world


def test_auth_binds_the_receipt_and_carries_it_on_route_only():
    world = World(amount=500)
    h = H(world)
    h.tap(_key_url(PAYEE_KEY))
    h.pump()
    _committed(h, world, 500)
    auths = [msg for d, msg in world.log if d == "out" and msg.type == wl.AUTH]
    eq([a.action for a in auths], [wl.ROUTE, wl.LOCK, wl.COMMIT], "actions")
    rhash = wl.receipt_hash(world.payee.receipt_message)
    for a in auths:
        eq((a.payee_key, a.receipt_hash, a.confirm), (PAYEE_KEY, rhash, wl.AUTO), "bound in %d" % a.action)
    eq(m.decode(m.RECEIPT, auths[0].receipt), world.payee.receipt_message, "the Receipt as the payee sent it")
    eq([a.receipt for a in auths[1:]], [None, None], "only the route Auth carries it")
    h.close()


def test_unsigned_receipt_is_not_paid():
    world = World(amount=500, payee_key=None)
    h = _tapped(world)
    eq(world.payee.outcome, "cancelled", "payee told")
    eq("did not sign" in world.done[0].reason, True, world.done[0].reason)
    eq(world.provider.counter, 0, "provider never asked")
    h.close()


def test_receipt_from_another_key_than_the_url_names():
    # URL names key A; the receipt comes (honestly signed) from key B: the wallet refuses
    world = World(amount=500, payee_key=OTHER_PAYEE_KEY)
    h = H(world)
    h.tap(_key_url(PAYEE_KEY))
    h.pump()
    eq(world.payee.outcome, "cancelled", "payee told")
    eq("another key" in world.done[0].reason, True, world.done[0].reason)
    eq(world.provider.counter, 0, "provider never asked")
    eq(h.state()["acount"], 0, "nothing counted")
    h.close()


def test_bad_key_in_url_refused():
    world = World(amount=500)
    h = H(world)
    h.tap("amikopay://127.0.0.1:4001/pay-1?key=02zz")
    h.pump(5)
    eq(any("key" in e for e in world.errors if isinstance(e, str)), True, world.errors)
    eq(h.w.session, None, "no payment started")
    h.close()


def test_forged_signature_refused_by_the_provider():
    # the key in the receipt is the URL's, the signature is someone else's
    world = World(amount=500, sign=fake_sign(OTHER_PAYEE_KEY))
    h = H(world)
    h.tap(_key_url(PAYEE_KEY))
    h.pump()
    eq(world.payee.outcome, "cancelled", "payee told")
    eq(world.provider.refusals, ["receipt signature does not verify"], "refused")
    eq(world.provider.balance, 10000, "nothing moved")
    eq(h.state()["pay"], None, "resolved")
    h.close()


def test_new_payee_limit_then_a_press_trusts_the_payee():
    provider = Provider()
    h = H(None, auto=1000, auto_count=5, auto_total=50000, auto_new=2)
    for n in range(2):
        w = _tap_world(h, provider, n)
        h.pump()
        eq(w.payee.outcome, "committed", "auto %d" % n)
    w = _tap_world(h, provider, 2)
    h.pump(40)
    eq(h.board.display.lines[0], "Pay 900 ?", "third asks")
    eq(h.board.display.lines[1], "to Corner cafe", "payee name shown")
    eq(h.board.display.lines[3], "new payee: OK", "why")
    eq(provider.counter, 6, "two payments (3 Auths each), nothing authorised for the third yet")
    h.reboot()  # the counters are on flash
    h.world = w
    eq((h.state()["acount"], h.state()["atotal"], h.state()["anew"]), (2, 1800, 2), "counted")
    w = _tap_world(h, provider, 3)
    h.pump(40)
    eq(h.board.display.lines[0], "Pay 900 ?", "still asks after reboot")
    h.board.buttons.events.append("confirm")
    h.pump()
    eq(w.payee.outcome, "committed", "pressed")
    route = [msg for d, msg in w.log if d == "out" and msg.type == wl.AUTH][0]
    eq(route.confirm, wl.BUTTON, "the Auth says: button")
    eq((h.state()["acount"], h.state()["anew"]), (0, 0), "reset by the press")
    eq(h.state()["payees"], [wl.payee_tag(PAYEE_KEY)], "payee trusted")
    for n in range(4, 9):  # a confirmed payee: the general count limit (5) applies
        w = _tap_world(h, provider, n)
        h.pump()
        eq(w.payee.outcome, "committed", "auto %d" % n)
    w = _tap_world(h, provider, 9)
    h.pump(40)
    eq(h.board.display.lines[3], "auto limit: OK", "count limit")
    h.close()


def test_cumulative_limit_then_a_press_resets_it():
    provider = Provider(balance=100000)
    h = H(None, auto=1000, auto_count=10, auto_total=2000, auto_new=10)
    for n in range(2):
        w = _tap_world(h, provider, n)
        h.pump()
        eq(w.payee.outcome, "committed", "auto %d" % n)
    w = _tap_world(h, provider, 2)
    h.pump(40)
    eq(h.board.display.lines[3], "auto limit: OK", "cumulative limit")
    h.board.buttons.events.append("confirm")
    h.pump()
    eq(w.payee.outcome, "committed", "pressed")
    w = _tap_world(h, provider, 3)
    h.pump()
    eq(w.payee.outcome, "committed", "auto again after the press")
    eq(h.state()["atotal"], 900, "since the press")
    h.close()


def test_payee_name_is_sanitised_and_truncated():
    world = World(amount=1500, payee_name="Cafe\u0421orner\tbar and a much longer tail")
    h = _tapped(world, auto=100, rounds=40)
    eq(h.board.display.lines[1], "to Cafe?orner?bar and", "shown")
    h.board.buttons.events.append("cancel")
    h.pump()
    h.close()


def test_confirmed_payee_set_is_bounded():
    h = H(None)
    st = h.state()
    for i in range(20):
        h.w.pressed = True
        h.w._count_confirmation({"payee_key": bytes([2, i]) + bytes(31)}, 10)
    eq(len(st["payees"]), 16, "bounded")
    eq(st["payees"][-1], wl.payee_tag(bytes([2, 19]) + bytes(31)), "newest kept")
    eq(wl.payee_tag(bytes([2, 0]) + bytes(31)) in st["payees"], False, "oldest dropped")
    h.close()


# ---------------------------------------------------------------- flash writes

MAX_WRITES_PER_PAYMENT = 2  # the point of no return, the proof (firmware/wallet/core.py)
MAX_BYTES_PER_PAYMENT = 1280  # measured 1024 (bench/RESULTS.md, "Wallet flash writes per payment")


def test_two_flash_writes_per_payment():
    provider = Provider(balance=100000)
    h = H(None, auto=1000, auto_count=100, auto_total=100000, auto_new=100)
    store = h.w.store
    for n in range(4):
        if n == 2:  # a wallet that boots at each tap (powered by the reader's field) writes no more
            h.reboot()
            store = h.w.store
        writes, written = store.writes, store.bytes_written
        w = _tap_world(h, provider, n, amount=500)
        h.pump()
        eq(w.payee.outcome, "committed", "paid %d" % n)
        eq(h.state()["pay"], None, "resolved %d" % n)
        eq(store.writes - writes <= MAX_WRITES_PER_PAYMENT, True, "writes of payment %d: %d" % (n, store.writes - writes))
        eq(store.bytes_written - written <= MAX_BYTES_PER_PAYMENT, True,
           "bytes of payment %d: %d" % (n, store.bytes_written - written))
    h.close()


def test_cbor_passes_and_pure_hash_blocks_per_payment():
    # A non-timed guard on the wallet's CPU per payment (issue 13): how many times its steps
    # (not the world's) enter cbor.dumps (nested calls included: one per text map key before
    # issue 13) and the pure-Python RIPEMD-160 compression (none where viper is available).
    from amiko_core import cbor, hashing

    world = World(amount=500)
    h = H(world)
    counts = {"dumps": 0, "compress": 0}
    active = [False]
    real_dumps, real_compress, real_step = cbor.dumps, hashing._compress, h.app.step

    def dumps(obj):
        if active[0]:
            counts["dumps"] += 1
        return real_dumps(obj)

    def compress(state, block):
        if active[0]:
            counts["compress"] += 1
        return real_compress(state, block)

    def step():
        active[0] = True
        try:
            return real_step()
        finally:
            active[0] = False

    cbor.dumps, hashing._compress, h.app.step = dumps, compress, step
    try:
        h.tap()
        h.pump()
    finally:
        cbor.dumps, hashing._compress = real_dumps, real_compress
    _committed(h, world, 500)
    h.close()
    # 26 in this tree (about 190 before issue 13): storage records, Auth and Status MACs, frames out,
    # the Receipt checks
    if counts["dumps"] > 30:
        raise AssertionError("cbor.dumps entered %d times in one payment (at most 30)" % counts["dumps"])
    if hashing.RIPEMD160_BACKEND == "viper":
        eq(counts["compress"], 0, "pure RIPEMD-160 blocks with viper available")
