"""What the engine tells its subscribers after a transaction commits (Engine.subscribe).

    Event(kind, txid, side, reason=None)   about this node's (txid, side) route entry:
        ROUTE_FOUND   an endpoint's half reached the meeting point
        ROUTE_FAILED  an endpoint's search is exhausted (reason)
        LOCKED        the lock reached the payee (side 1)
        SETTLED       every leg of this node's (txid, side) entry settled
        ROLLED_BACK   an endpoint's half was rolled back (reason)
        DISPUTE       a claim not settled by its deadline (reason; amiko.node.claims)
    PeerError(link, code, reason)          the peer refused one of our messages (an Error)

Subscribers read fields; `kind` names what happened on both classes, so a dispatcher can
switch on it, and isinstance(event, Event) tells a payment's events from a link's.
"""

ROUTE_FOUND = "route_found"
ROUTE_FAILED = "route_failed"
LOCKED = "locked"
SETTLED = "settled"
ROLLED_BACK = "rolled_back"
DISPUTE = "dispute"
PEER_ERROR = "peer_error"

KINDS = (ROUTE_FOUND, ROUTE_FAILED, LOCKED, SETTLED, ROLLED_BACK, DISPUTE)


class _Value:
    """Equal when of the same class with equal fields (tests compare events)."""

    __slots__ = ()

    def _fields(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return type(other) is type(self) and other._fields() == self._fields()

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((type(self).__name__,) + self._fields())

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(repr(v) for v in self._fields()))


class Event(_Value):
    __slots__ = ("kind", "txid", "side", "reason")

    def __init__(self, kind, txid, side, reason=None):
        if kind not in KINDS:
            raise ValueError("no engine event %r" % (kind,))
        self.kind = kind
        self.txid = bytes(txid)
        self.side = side
        self.reason = reason


class PeerError(_Value):
    __slots__ = ("link", "code", "reason")
    kind = PEER_ERROR

    def __init__(self, link, code, reason):
        self.link = link
        self.code = code
        self.reason = reason
