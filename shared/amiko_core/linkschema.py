"""The node-link message types, register() and the field kind helpers of amiko_core.messages.

A payment-link endpoint (a wallet) never needs any of this, so amiko_core.messages keeps
only the payment-link types in RAM and imports this module the first time it is asked
for one of the names below or for a node-link type code (16..31). Importing it adds the
node-link types (the table in the messages docstring) to the schema; every name here
also reads as an attribute of amiko_core.messages (messages.register, messages.SCHEMA,
messages.uint, ...), which is how callers should use them.

- The node-link type codes CONNECT_LINK (16) ... ERROR (31).
- SCHEMA: code -> (name, fields), every known type (the dict messages itself uses).
- register(code, name, fields): add a message type; fields is a sequence of
  (key, python name, kind, required). Codes 1..255, keys 1..255, names unique, field
  names not "type", "name", "fields" nor starting with "_"; ValueError otherwise.
- name_of(code): the message name of a type code, or None if the code is unknown.
- Kinds: AMOUNT, BOOL, uint(max=UINT_MAX), text(max_bytes), ident(extra="", max_len=None),
  nbytes(n, upto=None), listof(item, max), url(scheme), and the named kinds
  PAYMENT_ID, LINK_NAME, MEETING_POINT, TXID, TOKEN, PUBKEY, SIGNATURE, SIDE, REASON, UINT.
- url_problem(text, scheme): why text is not an amikolink/amikopay URL of that scheme, or None.
"""

from amiko_core import messages as _m
from amiko_core.ids import MAX_MEETING_POINT, MP_EXTRA

SCHEMA = _m._SCHEMA

CONNECT_LINK = 16
MAKE_ROUTE = 17
HAVE_NO_ROUTE = 18
CANCEL_ROUTE = 19
HAVE_ROUTE = 20
LOCK = 21
REQUEST_COMMIT = 22
SETTLE_COMMIT = 23
SETTLE_ROLLBACK = 24
DEPOSIT = 25
WITHDRAW = 26
ERROR = 31

AMOUNT = ("amount",)
BOOL = ("bool",)


def uint(max=_m.UINT_MAX):
    return ("uint", max)


def text(max_bytes):
    return ("text", max_bytes)


def ident(extra="", max_len=None):
    """An id of URL-safe characters, plus the characters in extra; 1..max_len (default 64)."""
    return ("id", extra) if max_len is None else ("id", extra, max_len)


def nbytes(n, upto=None):
    """A byte string of exactly n bytes, or n..upto bytes."""
    return ("bytes", n, n if upto is None else upto)


def listof(item, max):
    return ("list", item, max)


def url(scheme):
    return ("url", scheme)


PAYMENT_ID = ident()
LINK_NAME = ident()
MEETING_POINT = ident(MP_EXTRA, MAX_MEETING_POINT)
TXID = nbytes(20)
TOKEN = nbytes(32)
PUBKEY = nbytes(33)
SIGNATURE = nbytes(64)
SIDE = uint(1)
REASON = text(256)
UINT = uint()

_KINDS = ("amount", "bool", "uint", "text", "id", "bytes", "list", "url")
_RESERVED = ("type", "name", "fields")


def url_problem(v, scheme):
    from amiko_core.url import parse

    try:
        u = parse(v)
    except ValueError as e:
        return "is not a valid URL (%s)" % e
    if u.scheme != scheme:
        return "must be an %s:// URL" % scheme
    return None


def _check_kind(kind, in_list=False):
    if type(kind) is not tuple or not kind or kind[0] not in _KINDS:
        raise ValueError("messages: unknown field kind %r" % (kind,))
    if kind[0] == "list":
        if in_list:
            raise ValueError("messages: lists of lists are not supported")
        _check_kind(kind[1], True)


def register(code, name, fields):
    """Add a message type: fields is a sequence of (key, python name, kind, required)."""
    if type(code) is not int or not 1 <= code <= 255:
        raise ValueError("messages: type code must be 1..255, got %r" % (code,))
    if code in SCHEMA:
        raise ValueError("messages: type code %d is already %s" % (code, SCHEMA[code][0]))
    for c in SCHEMA:
        if SCHEMA[c][0] == name:
            raise ValueError("messages: name %s already has type code %d" % (name, c))
    fields = tuple(fields)
    find = _m._find
    for i in range(len(fields)):
        key, fname, kind, required = fields[i]
        if type(key) is not int or not 1 <= key <= 255 or find(fields[:i], 0, key):
            raise ValueError("messages: %s: bad or repeated key %r" % (name, key))
        if type(fname) is not str or find(fields[:i], 1, fname) or fname in _RESERVED or fname[:1] == "_":
            raise ValueError("messages: %s: bad or repeated field name %r" % (name, fname))
        if type(required) is not bool:
            raise ValueError("messages: %s.%s: required must be a bool" % (name, fname))
        _check_kind(kind)
    SCHEMA[code] = (name, fields)


def name_of(code):
    """The message name of a type code, or None if the code is unknown."""
    entry = _m._entry(code)
    return entry[0] if entry else None


_TXID_SIDE = ((1, "txid", TXID, True), (2, "side", SIDE, True))
_AMOUNT3 = (3, "amount", AMOUNT, True)
_TOKEN3 = (3, "token", TOKEN, True)
_CHANNEL = (1, "channel", UINT, True)

for _code, _name, _fields in (
    (CONNECT_LINK, "ConnectLink", (
        (1, "link", LINK_NAME, True),
        (2, "key", PUBKEY, True),
        (3, "callback", url("amikolink"), False),
        (4, "nonce", nbytes(16, 32), False),
        (5, "signature", SIGNATURE, False),
        (6, "invite", nbytes(32), False))),
    (MAKE_ROUTE, "MakeRoute", _TXID_SIDE + (
        _AMOUNT3,
        (4, "meeting_point", MEETING_POINT, True),
        (5, "channel", UINT, True),
        (6, "deadline", UINT, False))),
    (HAVE_NO_ROUTE, "HaveNoRoute", _TXID_SIDE),
    (CANCEL_ROUTE, "CancelRoute", _TXID_SIDE),
    (HAVE_ROUTE, "HaveRoute", _TXID_SIDE + ((3, "deadline", UINT, False), (4, "signature", SIGNATURE, False))),
    (LOCK, "Lock", _TXID_SIDE + (_AMOUNT3,)),
    (REQUEST_COMMIT, "RequestCommit", _TXID_SIDE + (_TOKEN3,)),
    (SETTLE_COMMIT, "SettleCommit", _TXID_SIDE + (_TOKEN3,)),
    (SETTLE_ROLLBACK, "SettleRollback", _TXID_SIDE + ((3, "reason", REASON, False),)),
    (DEPOSIT, "Deposit", (_CHANNEL, (2, "amount", AMOUNT, True))),
    (WITHDRAW, "Withdraw", (_CHANNEL,)),
    (ERROR, "Error", (
        (1, "code", UINT, True),
        (2, "reason", REASON, True),
        (3, "ref_type", uint(255), False),
        (4, "ref_seq", UINT, False))),
):
    if _code not in SCHEMA:  # not re-added after a reload
        register(_code, _name, _fields)
del _code, _name, _fields, _TXID_SIDE, _AMOUNT3, _TOKEN3, _CHANNEL
