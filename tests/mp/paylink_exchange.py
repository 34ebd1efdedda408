"""A complete payer+payee exchange through encoded frames, with no test scaffolding.

Kept apart from paylink_driver (the vector scenario runner) so that the small-heap
test (tests/mp/test_paylink_heap.py) and the benchmark load only what the exchange
needs: the core modules and this file.
"""

from amiko_core import messages as m
from amiko_core.frame import FrameDecoder
from amiko_core import paylink as pl
from amiko_core.paylink import PayeeSession, PayerSession


def exchange_through_frames(token, payment_id="shop-42", amount=125000, receipt="1x espresso",
                            meeting_points=("mp-a", "mp:b"), chunk=5, max_frame=512, on_step=None, decoders=None):
    """A complete payment: every message goes through m.to_frame, is fed to the other
    side's FrameDecoder in `chunk`-byte pieces and decoded with m.from_frame (decoders:
    {"payer": FrameDecoder, "payee": FrameDecoder} made by the caller, else made here
    with max_frame). The
    "network" answers at once: every ("route", ...) is found, ("lock", ...) reaches the
    payee. on_step() is called after each input. Returns a dict with both sessions,
    the outcomes, the frames sent and the bytes sent."""
    payer = PayerSession(payment_id)
    payee = PayeeSession(payment_id, amount, receipt, token, list(meeting_points))
    sessions = {"payer": payer, "payee": payee}
    if decoders is None:
        decoders = {"payer": FrameDecoder(max_frame), "payee": FrameDecoder(max_frame)}
    result = {"payer": payer, "payee": payee, "outcomes": {}, "frames": [], "bytes": 0}
    queue = []  # (side, zero-argument input)

    def handle(side, effects):
        other = "payee" if side == "payer" else "payer"
        for effect in effects:
            kind = effect.kind
            if kind == pl.SEND:
                data = m.to_frame(effect.message)
                result["frames"].append(effect.message.name)
                result["bytes"] += len(data)
                for i in range(0, len(data), chunk):
                    for fr in decoders[other].feed(data[i : i + chunk]):
                        msg = m.from_frame(fr)
                        queue.append((other, lambda s=sessions[other], msg=msg: s.receive(msg)))
            elif kind == pl.ASK_USER:
                queue.append(("payer", lambda: payer.handle("confirm")))
            elif kind == pl.ROUTE:
                queue.append((side, lambda s=sessions[side]: s.handle("route_found")))
            elif kind == pl.LOCK:
                queue.append(("payee", lambda: payee.handle("locked")))
            elif kind == pl.DONE:
                if side in result["outcomes"]:
                    raise AssertionError("%s: done emitted twice" % side)
                result["outcomes"][side] = effect.outcome

    handle("payer", payer.handle("start"))
    while queue:
        side, fn = queue.pop(0)
        handle(side, fn())
        if on_step is not None:
            on_step()
    return result
