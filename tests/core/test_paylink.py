"""Payment-link state machines (amiko_core.paylink) on CPython: the shared scenario
vectors, constructor checks, random event sequences (hypothesis) and complete
exchanges through encoded frames."""

import hashlib
import json

import ecdsa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amiko_core import messages as m
from amiko_core.errors import AmikoError, DecodeError, EncodeError, ProtocolError
from amiko_core.frame import FrameDecoder
from amiko_core.paylink import DEFAULT_TIMEOUTS, Effect, PayeeSession, PayerSession
from amiko_core.token import token_matches, transaction_id

from amiko_testing.micropython import ROOT

import paylink_driver  # noqa: E402  (shared with the MicroPython runner)

VECTORS = json.loads((ROOT / "tests" / "vectors" / "paylink.json").read_text())
PID = VECTORS["defaults"]["payment_id"]
TOKEN = bytes.fromhex(VECTORS["defaults"]["token"])
TXID = transaction_id(TOKEN)
BAD_TOKEN = b"\xff" * 32
OTHER_TXID = b"\xee" * 20
MPS = ["mp-a", "mp:b"]
EFFECT_KINDS = ("send", "state", "ask_user", "route", "lock", "cancel_route", "timer", "done")


# ---- the shared scenarios


@pytest.mark.parametrize("scenario", VECTORS["scenarios"], ids=lambda s: s["name"])
def test_scenario(scenario):
    paylink_driver.run_scenario(VECTORS["defaults"], scenario)


def test_vectors_cover_the_required_cases():
    names = {s["name"] for s in VECTORS["scenarios"]}
    for required in (
        "success_payee_route_first",
        "success_own_route_first",
        "payer_declines",
        "payee_cancels_while_routing",
        "cancel_after_lock_refused",
        "payer_route_failed",
        "payee_route_failed",
        "payer_timeout_receipt",
        "payer_timeout_confirm",
        "payer_timeout_routing",
        "payee_timeout_confirm",
        "payee_timeout_routing",
        "payee_timeout_lock_before_payer_locks",
        "lock_timeout_then_commit",
        "bad_token_refused_then_good_token_commits",
        "duplicates_ignored",
        "out_of_order_refused",
        "wrong_payment_id",
        "wrong_meeting_point",
        "settled_before_commit",
    ):
        assert required in names
    # The vector txid really is the transaction id of the vector token.
    receipt = VECTORS["scenarios"][0]["steps"][1]["effects"][0]
    assert receipt[:2] == ["send", "Receipt"] and bytes.fromhex(receipt[2]["txid"]) == TXID


def test_driver_reports_a_wrong_expectation():
    scenario = json.loads(json.dumps(VECTORS["scenarios"][0]))
    scenario["steps"][2]["effects"][0][1] += 1  # ask_user amount
    with pytest.raises(AssertionError, match="effects"):
        paylink_driver.run_scenario(VECTORS["defaults"], scenario)


# ---- construction


def test_default_timeouts_and_overrides():
    payer = PayerSession(PID, timeouts={"receipt": 2.5})
    assert payer.timeouts == dict(DEFAULT_TIMEOUTS, receipt=2.5)
    assert payer.handle("start")[-1].seconds == 2.5


@pytest.mark.parametrize("timeouts", [{"recipt": 5}, {"routing": 0}, {"locking": -1}, {"confirm": "5"}, {"receipt": True}])
def test_bad_timeouts_refused(timeouts):
    with pytest.raises(AmikoError, match="timeout"):
        PayerSession(PID, timeouts=timeouts)
    with pytest.raises(AmikoError, match="timeout"):
        PayeeSession(PID, 1, "r", TOKEN, MPS, timeouts=timeouts)


def test_payee_request_is_validated_at_construction():
    with pytest.raises(DecodeError):
        PayeeSession(PID, 1, "r", TOKEN[:31], MPS)
    with pytest.raises(EncodeError):
        PayeeSession(PID, 0, "r", TOKEN, MPS)
    with pytest.raises(EncodeError):
        PayeeSession(PID, 1, "r", TOKEN, [])
    with pytest.raises(EncodeError):
        PayeeSession("bad id/", 1, "r", TOKEN, MPS)


def test_long_reason_is_cut_to_a_valid_cancel():
    payer = PayerSession(PID)
    payer.handle("start")
    effects = payer.handle("decline", "é" * 300)
    cancel = effects[0].message
    assert cancel.name == "Cancel" and len(cancel.reason.encode()) <= 256
    assert m.decode(m.CANCEL, m.encode(cancel)) == cancel
    assert payer.reason == "é" * 300


def test_signed_receipt_verifies_with_ecdsa_over_the_final_receipt():
    key = ecdsa.SigningKey.from_string(hashlib.sha256(b"payee key").digest(), curve=ecdsa.SECP256k1)
    pub = key.get_verifying_key().to_string("compressed")
    calls = []

    def sign(data):
        calls.append(data)
        return key.sign_deterministic(data, hashfunc=hashlib.sha256)

    payee = PayeeSession(PID, 500, "tea", TOKEN, MPS, payee_key=pub, sign=sign)
    sent = payee.receive(m.Message(m.PAY, {"id": PID}))[0].message
    received = m.from_frame(FrameDecoder().feed(m.to_frame(sent))[0])
    # signed once, over the bytes of the receipt as received (payee_key included)
    assert received.payee_key == pub and calls == [m.receipt_signed_bytes(received)]
    verifying = ecdsa.VerifyingKey.from_string(received.payee_key, curve=ecdsa.SECP256k1)
    assert verifying.verify(received.signature, m.receipt_signed_bytes(received), hashfunc=hashlib.sha256)


def test_payee_key_and_sign_come_together():
    with pytest.raises(AmikoError, match="together"):
        PayeeSession(PID, 1, "r", TOKEN, MPS, payee_key=b"\x02" * 33)
    with pytest.raises(AmikoError, match="together"):
        PayeeSession(PID, 1, "r", TOKEN, MPS, sign=lambda data: b"\x00" * 64)


def test_bad_payee_key_or_signature_is_refused():
    with pytest.raises(EncodeError, match="payee_key"):
        PayeeSession(PID, 1, "r", TOKEN, MPS, payee_key=b"\x02" * 32, sign=lambda data: b"\x00" * 64)
    with pytest.raises(EncodeError, match="signature"):
        PayeeSession(PID, 1, "r", TOKEN, MPS, payee_key=b"\x02" * 33, sign=lambda data: b"\x00" * 63)


# ---- random event sequences

PAYER_CALLS = [
    ("start",),
    ("confirm",),
    ("confirm", "mp-a"),
    ("confirm", "mp:b"),
    ("confirm", "mp-x"),
    ("decline",),
    ("decline", "no thanks " * 40),
    ("route_found",),
    ("route_failed",),
    ("route_failed", "no route"),
    ("settled",),
    ("settled", TOKEN),
    ("settled", BAD_TOKEN),
    ("rolled_back",),
    ("rolled_back", "lock returned"),
    ("abandon",),
    ("abort", "provider refused"),
    ("timeout",),
]
PAYEE_CALLS = [("cancel",), ("cancel", "out of stock"), ("route_found",), ("route_failed",), ("locked",), ("timeout",),
               ("rolled_back",), ("abandon", "payer disconnected"), ("abort",)]


def _messages_to_payer():
    receipt = {"id": PID, "amount": 700, "receipt": "r", "txid": TXID, "meeting_points": MPS}
    return [
        m.Message(m.RECEIPT, receipt),
        m.Message(m.RECEIPT, dict(receipt, id="other")),
        m.Message(m.RECEIPT, dict(receipt, meeting_points=["mp-z"])),
        m.Message(m.RECEIPT, dict(receipt, txid=OTHER_TXID)),
        m.Message(m.CANCEL, {"id": PID}),
        m.Message(m.CANCEL, {"id": PID, "reason": "stop"}),
        m.Message(m.CANCEL, {"id": "other"}),
        m.Message(m.HAVE_PAYEE_ROUTE, {"id": PID, "txid": TXID}),
        m.Message(m.HAVE_PAYEE_ROUTE, {"id": PID, "txid": OTHER_TXID}),
        m.Message(m.COMMIT, {"id": PID, "token": TOKEN}),
        m.Message(m.COMMIT, {"token": TOKEN}),
        m.Message(m.COMMIT, {"id": PID, "token": BAD_TOKEN}),
        m.Message(m.PAY, {"id": PID}),
        m.Message(m.LOCK, {"txid": TXID, "side": 0, "amount": 700}),
    ]


def _messages_to_payee():
    return [
        m.Message(m.PAY, {"id": PID}),
        m.Message(m.PAY, {"id": "other"}),
        m.Message(m.CONFIRM, {"id": PID, "meeting_point": "mp-a"}),
        m.Message(m.CONFIRM, {"id": PID, "meeting_point": "mp:b"}),
        m.Message(m.CONFIRM, {"id": PID, "meeting_point": "mp-x"}),
        m.Message(m.CANCEL, {"id": PID}),
        m.Message(m.CANCEL, {"id": PID, "reason": "changed my mind"}),
        m.Message(m.COMMIT, {"id": PID, "token": TOKEN}),
        m.Message(m.HAVE_PAYEE_ROUTE, {"id": PID, "txid": TXID}),
    ]


TO_PAYER = _messages_to_payer()
TO_PAYEE = _messages_to_payee()

INJECT_TO_PAYER = st.tuples(st.just("payer"), st.just("inject"), st.sampled_from(TO_PAYER))
INJECT_TO_PAYEE = st.tuples(st.just("payee"), st.just("inject"), st.sampled_from(TO_PAYEE))
EVENTS = st.one_of(
    st.tuples(st.just("payer"), st.just("call"), st.sampled_from(PAYER_CALLS)),
    st.tuples(st.just("payee"), st.just("call"), st.sampled_from(PAYEE_CALLS)),
    INJECT_TO_PAYER,
    INJECT_TO_PAYER,
    INJECT_TO_PAYER,
    INJECT_TO_PAYEE,
    INJECT_TO_PAYEE,
    st.tuples(st.sampled_from(["payer", "payee"]), st.just("deliver"), st.just(None)),
)


def _snapshot(s):
    return (s.state, s.outcome, s.reason, s.token, s.txid, s.amount, s.meeting_point)


class Checker:
    """Applies events to a payer and a payee joined by a wire and checks every invariant."""

    def __init__(self, acceptable):
        self.sessions = {
            "payer": PayerSession(PID, acceptable),
            "payee": PayeeSession(PID, 700, "r", TOKEN, MPS),
        }
        self.inbox = {"payer": [], "payee": []}
        self.done = {"payer": 0, "payee": 0}
        self.locks = 0

    def apply(self, side, kind, arg):
        session = self.sessions[side]
        if kind == "call":
            call = lambda: session.handle(*arg)  # noqa: E731
        else:
            if kind == "deliver":
                if not self.inbox[side]:
                    return
                arg = self.inbox[side].pop(0)
            call = lambda: session.receive(arg)  # noqa: E731
        before = _snapshot(session)
        try:
            effects = call()
        except ProtocolError as e:
            assert e.reason
            assert _snapshot(session) == before, "a refused input changed the session"
            return
        self.check(side, kind, arg, before, effects)

    def check(self, side, kind, arg, before, effects):
        session = self.sessions[side]
        other = "payee" if side == "payer" else "payer"
        assert isinstance(effects, list)
        states = []
        for effect in effects:
            assert isinstance(effect, Effect) and effect.kind in EFFECT_KINDS
            if effect.kind == "send":
                self.inbox[other].append(effect.message)
                if side == "payee" and effect.message.type == m.COMMIT:
                    assert arg == ("locked",) and effect.message.token == TOKEN
            elif effect.kind == "state":
                states.append(effect.state)
            elif effect.kind == "timer":
                assert effect.seconds is None or effect.seconds > 0
            elif effect.kind == "lock":
                assert side == "payer"
                self.locks += 1
                assert self.locks == 1
            elif effect.kind == "done":
                self.done[side] += 1
                assert self.done[side] == 1, "done emitted twice"
                assert effect.outcome == session.outcome and effect.reason == session.reason
                self.check_outcome(side, kind, arg, before)
        if states:
            assert states[-1] == session.state
        else:
            assert session.state == before[0]

    def check_outcome(self, side, kind, arg, before):
        session = self.sessions[side]
        if session.outcome == "cancelled":
            if side == "payee":
                assert session.token is None
            return
        if side == "payee":
            assert kind == "call" and arg == ("locked",) and session.token == TOKEN
            return
        # A payer commits only after locking, and only with a token of its transaction id
        # (or on the network's word, settled() without a token).
        assert before[0] in ("locking", "lock_timeout")
        if kind == "call" and arg == ("settled",):
            assert session.token is None
        else:
            assert token_matches(session.token, session.txid) and session.txid == TXID


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    acceptable=st.sampled_from([None, ["mp-a"], ["mp:b", "mp-a"], ["mp-z"]]),
    events=st.lists(EVENTS, max_size=40),
)
def test_random_event_sequences(acceptable, events):
    checker = Checker(acceptable)
    for side, kind, arg in events:
        checker.apply(side, kind, arg)


def _productive(checker):
    """The inputs that move the payment forward from here (the I/O layer's normal calls)."""
    payer, payee = checker.sessions["payer"], checker.sessions["payee"]
    out = [(side, "deliver", None) for side in ("payer", "payee") if checker.inbox[side]]
    if payer.state == "new":
        out.append(("payer", "call", ("start",)))
    if payer.state == "confirming":
        out.append(("payer", "call", ("confirm",)))
    if payer.state == "routing" and not payer._own_route:
        out.append(("payer", "call", ("route_found",)))
    if payee.state == "routing":
        out.append(("payee", "call", ("route_found",)))
    if payee.state == "waiting_lock" and payer.state in ("locking", "lock_timeout"):
        out.append(("payee", "call", ("locked",)))
    return out


# Protocol-following walks with random interference (`noise` percent of the inputs are
# random events) reach the late states (locking, lock_timeout, commit) often.
@settings(max_examples=300, deadline=None)
@given(
    noise=st.integers(min_value=0, max_value=40),
    steps=st.lists(st.tuples(st.integers(0, 99), st.integers(0, 5), EVENTS), min_size=12, max_size=50),
)
def test_random_mostly_valid_sequences(noise, steps):
    checker = Checker(None)
    for roll, pick, event in steps:
        if roll >= noise:
            choices = _productive(checker)
            if not choices:
                continue
            event = choices[pick % len(choices)]
        checker.apply(*event)


def test_random_walk_reaches_commit():
    # The happy walk above is able to commit: the checker is exercised on commits too.
    checker = Checker(None)
    for event in [
        ("payer", "call", ("start",)),
        ("payee", "deliver", None),
        ("payer", "deliver", None),
        ("payer", "call", ("confirm",)),
        ("payee", "deliver", None),
        ("payee", "call", ("route_found",)),
        ("payer", "call", ("route_found",)),
        ("payer", "deliver", None),
        ("payee", "call", ("locked",)),
        ("payer", "deliver", None),
    ]:
        checker.apply(*event)
    assert checker.done == {"payer": 1, "payee": 1}
    assert checker.sessions["payer"].outcome == "committed" and checker.sessions["payer"].token == TOKEN


# ---- complete exchanges through encoded frames


@settings(max_examples=30, deadline=None)
@given(chunk=st.integers(min_value=1, max_value=300))
def test_exchange_through_frames(chunk):
    result = paylink_driver.exchange_through_frames(TOKEN, chunk=chunk)
    assert result["outcomes"] == {"payer": "committed", "payee": "committed"}
    assert result["frames"] == ["Pay", "Receipt", "Confirm", "HavePayeeRoute", "Commit"]
    assert result["payer"].token == TOKEN and result["payee"].token == TOKEN
    assert result["payer"].meeting_point == result["payee"].meeting_point == "mp-a"


def test_exchange_through_frames_with_wrong_token_never_commits():
    # A payee whose Commit carries another token: the payer refuses it and stays locked.
    payer = PayerSession(PID)
    payee = PayeeSession(PID, 900, "bread", TOKEN, MPS)
    decoder = {"payer": FrameDecoder(), "payee": FrameDecoder()}

    def carry(to, msg):
        (fr,) = decoder[to].feed(m.to_frame(msg))
        return m.from_frame(fr)

    receipt = payee.receive(carry("payee", payer.handle("start")[0].message))[0].message
    payer.receive(carry("payer", receipt))
    confirm = payer.handle("confirm")[0].message
    payee.receive(carry("payee", confirm))
    payer.receive(carry("payer", payee.handle("route_found")[0].message))
    lock = payer.handle("route_found")[0]
    assert (lock.kind, lock.txid) == ("lock", TXID)
    commit = payee.handle("locked")[0].message
    forged = m.Message(m.COMMIT, {"id": PID, "token": BAD_TOKEN})
    with pytest.raises(ProtocolError, match="does not hash"):
        payer.receive(carry("payer", forged))
    assert payer.state == "locking" and payer.outcome is None and payer.token is None
    done = payer.receive(carry("payer", commit))[-1]
    assert (done.kind, done.outcome, done.reason) == ("done", "committed", None)


def table(cls):
    """The machine's RULES by state: state -> {input: handler}; no input has two rules in one state."""
    from amiko_core.paylink import LIVE_STATES

    rules = cls.RULES
    assert len(rules) % 3 == 0
    out = {state: {} for state in cls.STATES}
    for name, handler, mask in zip(rules[::3], rules[1::3], rules[2::3]):
        assert mask and mask < 1 << len(LIVE_STATES), (name, handler, mask)
        for bit, state in enumerate(LIVE_STATES):
            if mask & (1 << bit):
                assert state in cls.STATES, "%s: rule %r names state %s of the other role" % (cls.ROLE, name, state)
                assert name not in out[state], "two rules for %r in state %s" % (name, state)
                out[state][name] = handler
    return out


LOCAL_INPUTS = {"payer": ("start", "confirm", "decline", "route_found", "route_failed", "settled", "rolled_back",
                          "abandon", "abort", "timeout"),
                "payee": ("cancel", "route_found", "route_failed", "locked", "rolled_back", "abandon", "abort",
                          "timeout")}


def _walk_payer(to):
    """A payer (and its payee) driven to state `to` along the happy path or its cancel."""
    payer, payee = PayerSession(PID), PayeeSession(PID, 700, "r", TOKEN, MPS)
    if to == "new":
        return payer
    payee_effects = payee.receive(payer.handle("start")[0].message)
    if to == "waiting_receipt":
        return payer
    payer.receive(payee_effects[0].message)
    if to == "confirming":
        return payer
    payer.handle("confirm")
    if to == "routing":
        return payer
    payer.receive(m.Message(m.HAVE_PAYEE_ROUTE, {"id": PID, "txid": TXID}))
    payer.handle("route_found")
    if to == "locking":
        return payer
    payer.handle("timeout")
    if to == "lock_timeout":
        return payer
    if to == "committed":
        payer.handle("settled", TOKEN)
    else:
        payer = _walk_payer("confirming")
        payer.handle("decline")
    return payer


def _walk_payee(to):
    payee = PayeeSession(PID, 700, "r", TOKEN, MPS)
    steps = {"waiting_confirm": [lambda: payee.receive(m.Message(m.PAY, {"id": PID}))]}
    steps["routing"] = steps["waiting_confirm"] + [
        lambda: payee.receive(m.Message(m.CONFIRM, {"id": PID, "meeting_point": "mp-a"}))]
    steps["waiting_lock"] = steps["routing"] + [lambda: payee.handle("route_found")]
    steps["committed"] = steps["waiting_lock"] + [lambda: payee.handle("locked")]
    steps["cancelled"] = [lambda: payee.handle("cancel")]
    for step in steps.get(to, []):
        step()
    return payee


@pytest.mark.parametrize("role", ["payer", "payee"])
def test_the_table_names_every_state_and_only_real_handlers(role):
    cls = PayerSession if role == "payer" else PayeeSession
    walk = _walk_payer if role == "payer" else _walk_payee
    for state, rules in table(cls).items():
        assert walk(state).state == state
        for name, handler in rules.items():
            assert callable(getattr(cls, handler)), (state, name, handler)
            if isinstance(name, str):
                assert name in LOCAL_INPUTS[role], (state, name)
            else:
                assert name in cls.HANDLERS, (state, name)


@pytest.mark.parametrize("role", ["payer", "payee"])
def test_every_local_input_is_accepted_in_every_state(role):
    """The drivers call local inputs without looking at the state: in every state each one
    either follows its rule or returns no effects and changes nothing; accepts() says which."""
    cls = PayerSession if role == "payer" else PayeeSession
    walk = _walk_payer if role == "payer" else _walk_payee
    for state in table(cls):
        for name in LOCAL_INPUTS[role]:
            session = walk(state)
            before = _snapshot(session)
            ruled = session.accepts(name)
            assert ruled == (session.outcome is None and name in table(cls)[state]), (state, name)
            args = (TOKEN,) if name == "settled" else ()
            effects = session.handle(name, *args)
            assert isinstance(effects, list)
            if not ruled:
                assert effects == [] and _snapshot(session) == before, (state, name)


def test_abort_ends_a_payment_the_way_its_state_allows():
    """abort: the provider or the engine cannot go on; one input, the right ending per state."""
    confirming = _walk_payer("confirming")
    sent = [e.message.type for e in confirming.handle("abort", "provider refused") if e.kind == "send"]
    assert confirming.outcome == "cancelled" and sent == [m.CANCEL]
    routing = _walk_payer("routing")
    kinds = [e.kind for e in routing.handle("abort", "no route")]
    assert routing.outcome == "cancelled" and "cancel_route" in kinds and routing.reason == "no route"
    locking = _walk_payer("locking")
    kinds = [e.kind for e in locking.handle("abort", "lock refused")]
    assert locking.outcome == "cancelled" and "send" not in kinds  # locked: nothing to tell the payee
    assert _walk_payer("committed").handle("abort", "late") == []


def test_cut_reason_keeps_whole_characters():
    assert m.cut_reason("abc") == "abc" and m.cut_reason(None) == ""
    cut = m.cut_reason("é" * 200)
    assert len(cut.encode()) == 256 and cut == "é" * 128
    cut = m.cut_reason("a" + "€" * 100)  # 3-byte characters after one byte
    assert len(cut.encode()) <= 256 and cut.startswith("a€") and cut == "a" + "€" * 85


def test_an_unknown_local_input_does_nothing():
    payer = _walk_payer("confirming")
    assert payer.handle("no_such_input") == [] and payer.state == "confirming"
    assert not payer.accepts("no_such_input")

