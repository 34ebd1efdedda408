"""Runs the scripted payment-link scenarios of tests/vectors/paylink.json.

Shared by tests/core/test_paylink.py (CPython) and tests/mp/test_paylink.py
(MicroPython): no pytest, no CPython-only modules.

Vector format: {"defaults": {...}, "scenarios": [scenario, ...]}.
A scenario has "name", optional "payer"/"payee" settings that override the
defaults, and "steps". Settings: payment_id, amount, receipt, token (hex),
meeting_points, acceptable (list or null), timeouts (dict or null), signer_key
(hex: the payee's key; it signs with a fake sign(data) returning sha256(data) * 2).

A step: {"at": "payer"|"payee", "do": ACTION, ...} with ACTION one of
  deliver            the oldest message the other endpoint sent and not yet delivered
  redeliver          the message last delivered to this endpoint, again
  receive            "msg": {"type": NAME, "fields": {...}} (bytes fields in hex)
  any local input    session.handle(ACTION, *args) with "args" (a list of at most one,
                     default []; {"hex": "..."} stands for bytes)
Expected: "effects" (list, compared exactly: ["send", NAME, fields] for a send,
[kind, value, ...] (the kind's FIELDS) otherwise), or "error" (a substring of the
ProtocolError's reason; the endpoint's state must be unchanged), "state"
(the endpoint's state after the step) and "expect" (attribute -> value; bytes
attributes in hex).
"""

from binascii import hexlify, unhexlify

from amiko_core import messages as m
from amiko_core.errors import ProtocolError
from amiko_core.hashing import sha256
from amiko_core.paylink import FIELDS, SEND, PayeeSession, PayerSession
from paylink_exchange import exchange_through_frames  # noqa: F401 (kept here for callers)

TYPES = {
    "Pay": m.PAY,
    "Receipt": m.RECEIPT,
    "Confirm": m.CONFIRM,
    "Cancel": m.CANCEL,
    "HavePayeeRoute": m.HAVE_PAYEE_ROUTE,
    "Commit": m.COMMIT,
}
BYTES_FIELDS = ("txid", "token", "payee_key", "signature")
BYTES_ATTRS = ("txid", "token")


def hexs(b):
    return hexlify(b).decode()


def message_from_json(spec):
    fields = {}
    for name in spec["fields"]:
        value = spec["fields"][name]
        fields[name] = unhexlify(value) if name in BYTES_FIELDS and value is not None else value
    return m.Message(TYPES[spec["type"]], fields)


def message_to_json(msg):
    fields = {}
    for name in msg.fields:
        value = msg.fields[name]
        fields[name] = hexs(value) if isinstance(value, (bytes, bytearray)) else value
    return fields


def effect_to_json(effect):
    if effect.kind == SEND:
        return ["send", effect.message.name, message_to_json(effect.message)]
    out = [effect.kind]
    for name in FIELDS[effect.kind]:
        item = getattr(effect, name)
        out.append(hexs(item) if isinstance(item, (bytes, bytearray)) else item)
    return out


def fake_sign(data):
    digest = sha256(data)
    return digest + digest


def make_sessions(defaults, scenario):
    payer_cfg = dict(defaults)
    payer_cfg.update(scenario.get("payer", {}))
    payee_cfg = dict(defaults)
    payee_cfg.update(scenario.get("payee", {}))
    payer = PayerSession(payer_cfg["payment_id"], payer_cfg.get("acceptable"), payer_cfg.get("timeouts"))
    payee_key = sign = None
    if payee_cfg.get("signer_key"):
        payee_key, sign = unhexlify(payee_cfg["signer_key"]), fake_sign
    payee = PayeeSession(
        payee_cfg["payment_id"],
        payee_cfg["amount"],
        payee_cfg["receipt"],
        unhexlify(payee_cfg["token"]),
        payee_cfg["meeting_points"],
        payee_cfg.get("timeouts"),
        payee_key,
        sign,
    )
    return payer, payee


class Wire:
    """The two endpoints and the messages in flight between them."""

    def __init__(self, payer, payee):
        self.sessions = {"payer": payer, "payee": payee}
        self.inbox = {"payer": [], "payee": []}
        self.last_delivered = {"payer": None, "payee": None}

    def post(self, sender, effects):
        other = "payee" if sender == "payer" else "payer"
        for effect in effects:
            if effect.kind == SEND:
                self.inbox[other].append(effect.message)

    def message_for(self, at, step):
        action = step["do"]
        if action == "deliver":
            if not self.inbox[at]:
                raise AssertionError("no message in flight to the %s" % at)
            msg = self.inbox[at].pop(0)
        elif action == "redeliver":
            msg = self.last_delivered[at]
        else:
            msg = message_from_json(step["msg"])
        self.last_delivered[at] = msg
        return msg


def _input(wire, at, step):
    """Returns a zero-argument callable performing the step's input."""
    session = wire.sessions[at]
    action = step["do"]
    if action in ("deliver", "redeliver", "receive"):
        msg = wire.message_for(at, step)
        return lambda: session.receive(msg)
    args = [unhexlify(a["hex"]) if isinstance(a, dict) else a for a in step.get("args", [])]
    return lambda: session.handle(action, *args)


def _check_attrs(session, expect, where):
    for name in expect:
        got = getattr(session, name)
        if name in BYTES_ATTRS and got is not None:
            got = hexs(got)
        if got != expect[name]:
            raise AssertionError("%s: %s is %r, want %r" % (where, name, got, expect[name]))


def run_step(wire, step, where):
    at = step["at"]
    session = wire.sessions[at]
    before = session.state
    call = _input(wire, at, step)
    if "error" in step:
        try:
            call()
        except ProtocolError as e:
            if step["error"] not in e.reason:
                raise AssertionError("%s: error %r does not contain %r" % (where, e.reason, step["error"]))
        else:
            raise AssertionError("%s: no ProtocolError (want %r)" % (where, step["error"]))
        if session.state != before:
            raise AssertionError("%s: state changed from %s to %s on error" % (where, before, session.state))
    else:
        effects = call()
        wire.post(at, effects)
        got = [effect_to_json(e) for e in effects]
        if got != step["effects"]:
            raise AssertionError("%s: effects\n  got  %r\n  want %r" % (where, got, step["effects"]))
    if "state" in step and session.state != step["state"]:
        raise AssertionError("%s: state %s, want %s" % (where, session.state, step["state"]))
    _check_attrs(session, step.get("expect", {}), where)


def run_scenario(defaults, scenario):
    wire = Wire(*make_sessions(defaults, scenario))
    steps = scenario["steps"]
    for i in range(len(steps)):
        step = steps[i]
        run_step(wire, step, "%s step %d (%s %s)" % (scenario["name"], i, step["at"], step["do"]))
    return wire


def run_all(vectors):
    """Runs every scenario; returns the list of failure descriptions (empty when all pass)."""
    failures = []
    for scenario in vectors["scenarios"]:
        try:
            run_scenario(vectors["defaults"], scenario)
        except Exception as e:  # collect every failing scenario, not just the first
            failures.append("%s: %s: %s" % (scenario["name"], type(e).__name__, e))
    return failures
