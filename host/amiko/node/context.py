"""The narrow context the engine hands the payment modules (routing, settlement, timeouts,
claims, credit) instead of itself.

    Context(send, emit, clock, config, identity=None, refuse_settle=())
        send(db, link, msg) -> seq   enqueue a link message in the open transaction
        emit(db, event)              deliver an amiko.node.events event after commit
        clock() -> float seconds     the engine's clock (tests pass a fake one)
        config                       the engine's Config (amiko.node.engine.DEFAULTS)
        identity                     signs the HaveRoutes of this node's meeting points
        refuse_settle                links cheated on purpose (developer mode only)
    now(), deadline_in(seconds), increment(), deadline_acceptable(deadline): arithmetic on
    clock and config.
"""

import math


class Context:
    __slots__ = ("send", "emit", "clock", "config", "identity", "refuse_settle")

    def __init__(self, send, emit, clock, config, identity=None, refuse_settle=()):
        self.send, self.emit, self.clock = send, emit, clock
        self.config, self.identity, self.refuse_settle = config, identity, refuse_settle

    def now(self):
        return int(self.clock())

    def deadline_in(self, seconds):
        """A wire deadline (whole unix seconds) at least `seconds` from now."""
        return int(math.ceil(self.clock() + seconds))

    def increment(self):
        return int(math.ceil(self.config.timeout_increment))

    def deadline_acceptable(self, deadline):
        now = self.now()
        return now < deadline <= now + self.config.max_deadline_window
