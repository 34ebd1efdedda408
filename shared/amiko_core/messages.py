"""Wire messages: a type code (carried in the frame header) and a CBOR map body.

A body is a deterministic CBOR map (amiko_core.cbor) from small unsigned integer
keys to field values. Keys are assigned per message type; key 0 is never used.
Optional fields are left out of the map when absent (null is never a value).

    code name            key field           kind                        ? = optional
    ---- --------------- --- --------------- --------------------------- ---
    Payment link (seeds/004)
       1 Pay               1 id              payment id
       2 Receipt           1 id              payment id
                           2 amount          amount
                           3 receipt         text <= 512 bytes
                           4 txid            bytes[20]
                           5 meeting_points  list of meeting point, 1..8
                           6 payee_key       bytes[33]                    ?
                           7 signature       bytes[64]                    ?
                           8 expires         uint                         ?
       3 Confirm           1 id              payment id
                           2 meeting_point   meeting point
       4 Cancel            1 id              payment id
                           2 reason          text <= 256 bytes            ?
       5 HavePayeeRoute    1 id              payment id
                           2 txid            bytes[20]
       6 Commit            1 id              payment id                   ?
                           2 token           bytes[32]
    Node link (reference/amiko-original.md)
      16 ConnectLink       1 link            link name
                           2 key             bytes[33]
                           3 callback        amikolink URL                ?
                           4 nonce           bytes[16..32]                ?
                           5 signature       bytes[64]                    ?
      17 MakeRoute         1 txid            bytes[20]
                           2 side            uint <= 1 (0 = payer, 1 = payee)
                           3 amount          amount
                           4 meeting_point   meeting point
                           5 channel         uint
                           6 deadline        uint                         ?
      18 HaveNoRoute       1 txid, 2 side
      19 CancelRoute       1 txid, 2 side
      20 HaveRoute         1 txid, 2 side, 3 deadline (uint, ?)
      21 Lock              1 txid, 2 side, 3 amount
      22 RequestCommit     1 txid, 2 side, 3 token (bytes[32])
      23 SettleCommit      1 txid, 2 side, 3 token (bytes[32])
      24 SettleRollback    1 txid, 2 side, 3 reason (text <= 256 bytes, ?)
      25 Deposit           1 channel (uint), 2 amount
      26 Withdraw          1 channel (uint)
      31 Error             1 code (uint), 2 reason (text <= 256 bytes),
                           3 ref_type (uint <= 255, ?), 4 ref_seq (uint, ?)

Kinds (a Python bool is never an integer):
- amount: int, 0 < amount <= MAX_AMOUNT.
- uint: int, 0 <= n <= max (default UINT_MAX = 2**64-1).
- bool: true or false.
- text: str of at most max UTF-8 bytes, no control characters except tab and newline.
- payment id / link name: 1..64 of [A-Za-z0-9._~-], not "." or ".." (url.id_problem);
  meeting point: the same plus ":".
- bytes[n] / bytes[lo..hi]: a byte string of exactly n (or lo..hi) bytes.
- list: 1..max items of one scalar kind, no duplicates.
- amikolink URL: text that url.parse_link accepts.

Decoding is strict: the body must be one CBOR map (at most 4096 bytes, nesting 2, 64
items, strings of 1024 bytes), every key known for the type, every required field present,
every value of its kind. Every rejection is errors.DecodeError naming the message and the
field; building a Message with bad fields raises errors.EncodeError with the same rules.

Adding a message is one register(code, name, fields) call, fields being
(key, python name, kind, required) tuples with kinds made by the helpers below.

The payee signs receipt_signed_bytes(receipt): cbor.dumps([RECEIPT_SIGNING_TAG, map]) where
map is the receipt's body without the signature field (key 7).
"""

from amiko_core import cbor, frame
from amiko_core.errors import DecodeError, EncodeError
from amiko_core.url import LINK, id_problem, parse

MAX_AMOUNT = 2100000000000000
UINT_MAX = 0xFFFFFFFFFFFFFFFF
RECEIPT_SIGNING_TAG = "amikopay receipt v1"

# Limits for cbor.loads: above anything a valid body needs, so that a field that is too
# long is reported by the field check, and small enough to bound work on hostile input.
BODY_MAX_SIZE = 4096
BODY_MAX_DEPTH = 2
BODY_MAX_ITEMS = 64
BODY_MAX_STR = 1024


# ---- field kinds ----

AMOUNT = ("amount",)
BOOL = ("bool",)


def uint(max=UINT_MAX):
    return ("uint", max)


def text(max_bytes):
    return ("text", max_bytes)


def ident(extra=""):
    """An id of URL-safe characters, plus the characters in extra."""
    return ("id", extra)


def nbytes(n, upto=None):
    """A byte string of exactly n bytes, or n..upto bytes."""
    return ("bytes", n, n if upto is None else upto)


def listof(item, max):
    return ("list", item, max)


def url(scheme):
    return ("url", scheme)


PAYMENT_ID = ident()
LINK_NAME = ident()
MEETING_POINT = ident(":")
TXID = nbytes(20)
TOKEN = nbytes(32)
PUBKEY = nbytes(33)
SIGNATURE = nbytes(64)
SIDE = uint(1)
REASON = text(256)

_KINDS = ("amount", "bool", "uint", "text", "id", "bytes", "list", "url")


def _type_name(v):
    return type(v).__name__


def _short(v):
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _text_problem(v, max_bytes):
    if type(v) is not str:
        return "must be text, got %s" % _type_name(v)
    try:
        n = len(v.encode("utf-8"))
    except UnicodeError:
        return "is not encodable as UTF-8"
    if n > max_bytes:
        return "is %d bytes long, at most %d allowed" % (n, max_bytes)
    for c in v:
        if (c < " " and c != "\n" and c != "\t") or "\x7f" <= c <= "\x9f":
            return "contains control character %r" % c
    return None


def _problem(kind, v):
    """Why v is not a value of kind, or None if it is one."""
    k = kind[0]
    if k == "amount" or k == "uint":
        if type(v) is not int:
            return "must be an integer, got %s" % _type_name(v)
        lo, hi = (1, MAX_AMOUNT) if k == "amount" else (0, kind[1])
        if v < lo or v > hi:
            return "must be %d..%d, got %d" % (lo, hi, v)
        return None
    if k == "bool":
        return None if type(v) is bool else "must be a bool, got %s" % _type_name(v)
    if k == "text":
        return _text_problem(v, kind[1])
    if k == "id":
        return id_problem(v, kind[1])
    if k == "bytes":
        if type(v) is not bytes:
            return "must be bytes, got %s" % _type_name(v)
        if not kind[1] <= len(v) <= kind[2]:
            want = "%d" % kind[1] if kind[1] == kind[2] else "%d..%d" % (kind[1], kind[2])
            return "must be %s bytes, got %d" % (want, len(v))
        return None
    if k == "list":
        if type(v) is not list:
            return "must be a list, got %s" % _type_name(v)
        if not 1 <= len(v) <= kind[2]:
            return "must have 1..%d items, got %d" % (kind[2], len(v))
        for i in range(len(v)):
            p = _problem(kind[1], v[i])
            if p:
                return "item %d %s" % (i, p)
            if v[i] in v[:i]:
                return "item %d repeats %s" % (i, _short(v[i]))
        return None
    # "url"
    p = _text_problem(v, 512)
    if p:
        return p
    try:
        u = parse(v)
    except ValueError as e:
        return "is not a valid URL (%s)" % e
    if u.scheme != kind[1]:
        return "must be an %s:// URL" % kind[1]
    return None


def _normalize(kind, v):
    """Construction accepts bytearray/memoryview for bytes and tuples for lists."""
    if kind[0] == "bytes" and isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if kind[0] == "list" and isinstance(v, tuple):
        v = list(v)
    if kind[0] == "list" and type(v) is list:
        return [_normalize(kind[1], x) for x in v]
    return v


# ---- the schema ----

# code -> (name, fields); field = (key, python name, kind, required). Fields are found by a
# linear scan (at most a handful per message): cheaper in RAM than two dicts per type.
SCHEMA = {}
_RESERVED = ("type", "name", "fields")


def _check_kind(kind, in_list=False):
    if type(kind) is not tuple or not kind or kind[0] not in _KINDS:
        raise ValueError("messages: unknown field kind %r" % (kind,))
    if kind[0] == "list":
        if in_list:
            raise ValueError("messages: lists of lists are not supported")
        _check_kind(kind[1], True)


def _find(fields, index, value):
    """The field whose entry at index (0 key, 1 python name) is value, or None."""
    for f in fields:
        if f[index] == value:
            return f
    return None


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
    for i in range(len(fields)):
        key, fname, kind, required = fields[i]
        if type(key) is not int or not 1 <= key <= 255 or _find(fields[:i], 0, key):
            raise ValueError("messages: %s: bad or repeated key %r" % (name, key))
        if type(fname) is not str or _find(fields[:i], 1, fname) or fname in _RESERVED or fname[:1] == "_":
            raise ValueError("messages: %s: bad or repeated field name %r" % (name, fname))
        if type(required) is not bool:
            raise ValueError("messages: %s.%s: required must be a bool" % (name, fname))
        _check_kind(kind)
    SCHEMA[code] = (name, fields)


PAY = 1
RECEIPT = 2
CONFIRM = 3
CANCEL = 4
HAVE_PAYEE_ROUTE = 5
COMMIT = 6
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

_TXID_SIDE = ((1, "txid", TXID, True), (2, "side", SIDE, True))

for _code, _name, _fields in (
    (PAY, "Pay", ((1, "id", PAYMENT_ID, True),)),
    (RECEIPT, "Receipt", (
        (1, "id", PAYMENT_ID, True),
        (2, "amount", AMOUNT, True),
        (3, "receipt", text(512), True),
        (4, "txid", TXID, True),
        (5, "meeting_points", listof(MEETING_POINT, 8), True),
        (6, "payee_key", PUBKEY, False),
        (7, "signature", SIGNATURE, False),
        (8, "expires", uint(), False))),
    (CONFIRM, "Confirm", ((1, "id", PAYMENT_ID, True), (2, "meeting_point", MEETING_POINT, True))),
    (CANCEL, "Cancel", ((1, "id", PAYMENT_ID, True), (2, "reason", REASON, False))),
    (HAVE_PAYEE_ROUTE, "HavePayeeRoute", ((1, "id", PAYMENT_ID, True), (2, "txid", TXID, True))),
    (COMMIT, "Commit", ((1, "id", PAYMENT_ID, False), (2, "token", TOKEN, True))),
    (CONNECT_LINK, "ConnectLink", (
        (1, "link", LINK_NAME, True),
        (2, "key", PUBKEY, True),
        (3, "callback", url(LINK), False),
        (4, "nonce", nbytes(16, 32), False),
        (5, "signature", SIGNATURE, False))),
    (MAKE_ROUTE, "MakeRoute", _TXID_SIDE + (
        (3, "amount", AMOUNT, True),
        (4, "meeting_point", MEETING_POINT, True),
        (5, "channel", uint(), True),
        (6, "deadline", uint(), False))),
    (HAVE_NO_ROUTE, "HaveNoRoute", _TXID_SIDE),
    (CANCEL_ROUTE, "CancelRoute", _TXID_SIDE),
    (HAVE_ROUTE, "HaveRoute", _TXID_SIDE + ((3, "deadline", uint(), False),)),
    (LOCK, "Lock", _TXID_SIDE + ((3, "amount", AMOUNT, True),)),
    (REQUEST_COMMIT, "RequestCommit", _TXID_SIDE + ((3, "token", TOKEN, True),)),
    (SETTLE_COMMIT, "SettleCommit", _TXID_SIDE + ((3, "token", TOKEN, True),)),
    (SETTLE_ROLLBACK, "SettleRollback", _TXID_SIDE + ((3, "reason", REASON, False),)),
    (DEPOSIT, "Deposit", ((1, "channel", uint(), True), (2, "amount", AMOUNT, True))),
    (WITHDRAW, "Withdraw", ((1, "channel", uint(), True),)),
    (ERROR, "Error", (
        (1, "code", uint(), True),
        (2, "reason", REASON, True),
        (3, "ref_type", uint(255), False),
        (4, "ref_seq", uint(), False))),
):
    register(_code, _name, _fields)


def name_of(code):
    """The message name of a type code, or None if the code is unknown."""
    entry = SCHEMA.get(code)
    return entry[0] if entry else None


def _field_error(err, name, f, problem):
    return err("message %s field %s (key %d) %s" % (name, f[1], f[0], problem))


def _validate(code, named, err):
    """Check a {python name: value} dict against the schema of code; raise err on a problem."""
    entry = SCHEMA[code]
    name = entry[0]
    for f in entry[1]:
        if f[1] in named:
            p = _problem(f[2], named[f[1]])
            if p:
                raise _field_error(err, name, f, p)
        elif f[3]:
            raise _field_error(err, name, f, "is required but missing")


_TRUSTED = object()


class Message:
    """One wire message: type (code), name, fields (python name -> value, present ones only).
    A field reads as an attribute; an absent optional field reads as None."""

    def __init__(self, mtype, fields=None, _trusted=None, **kw):
        if _trusted is _TRUSTED:  # decode() has validated the fields already
            self.type = mtype
            self.name = SCHEMA[mtype][0]
            self.fields = fields
            return
        if type(mtype) is not int or mtype not in SCHEMA:
            raise EncodeError("message type %s is unknown" % _short(mtype))
        entry = SCHEMA[mtype]
        if fields is None:
            fields = {}
        elif type(fields) is not dict:
            raise EncodeError("message %s: fields must be a dict, got %s" % (entry[0], _type_name(fields)))
        named = {}
        for src in (fields, kw):
            for k in src:
                f = _find(entry[1], 1, k) if type(k) is str else None
                if f is None:
                    raise EncodeError("message %s has no field %s" % (entry[0], _short(k)))
                v = src[k]
                if v is not None:
                    named[k] = _normalize(f[2], v)
        _validate(mtype, named, EncodeError)
        self.type = mtype
        self.name = entry[0]
        self.fields = named

    def __getattr__(self, attr):
        if attr in _RESERVED or attr[:1] == "_":
            raise AttributeError(attr)
        entry = SCHEMA.get(self.type)
        if entry is None or _find(entry[1], 1, attr) is None:
            raise AttributeError("message %s has no field %r" % (self.name, attr))
        return self.fields.get(attr)

    def __eq__(self, other):
        return isinstance(other, Message) and self.type == other.type and self.fields == other.fields

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        parts = []
        for f in SCHEMA[self.type][1]:
            if f[1] in self.fields:
                parts.append("%s=%r" % (f[1], self.fields[f[1]]))
        return "%s(%s)" % (self.name, ", ".join(parts))


def _body_map(msg, skip=None):
    out = {}
    for f in SCHEMA[msg.type][1]:
        if f[1] in msg.fields and f[1] != skip:
            out[f[0]] = msg.fields[f[1]]
    return out


def encode(msg):
    """The deterministic CBOR body of msg."""
    if not isinstance(msg, Message):
        raise EncodeError("messages: can only encode a Message, got %s" % _type_name(msg))
    return cbor.dumps(_body_map(msg))


def decode(code, body):
    """Strictly decode the body of a message of type code; raises DecodeError."""
    if type(code) is not int or code not in SCHEMA:
        raise DecodeError("message type %s is unknown" % _short(code))
    entry = SCHEMA[code]
    name = entry[0]
    try:
        value = cbor.loads(body, BODY_MAX_SIZE, BODY_MAX_DEPTH, BODY_MAX_ITEMS, BODY_MAX_STR)
    except DecodeError as e:
        raise DecodeError("message %s body: %s" % (name, e.reason))
    if type(value) is not dict:
        raise DecodeError("message %s body must be a CBOR map, got %s" % (name, _type_name(value)))
    named = {}
    for key in value:
        f = _find(entry[1], 0, key) if type(key) is int else None
        if f is None:
            raise DecodeError("message %s has unknown field key %s" % (name, _short(key)))
        named[f[1]] = value[key]
    _validate(code, named, DecodeError)
    return Message(code, named, _TRUSTED)


def to_frame(msg, max_frame=frame.DEFAULT_MAX_FRAME):
    """The complete frame bytes carrying msg."""
    return frame.encode(msg.type, encode(msg), frame.PROTOCOL_VERSION, max_frame)


def from_frame(fr):
    """The message in a decoded frame.Frame; refuses protocol versions other than ours."""
    if fr.version != frame.PROTOCOL_VERSION:
        raise DecodeError(
            "unsupported protocol version %d; this peer speaks %d" % (fr.version, frame.PROTOCOL_VERSION)
        )
    return decode(fr.type, fr.body)


def receipt_signed_bytes(receipt):
    """The bytes a payee signs for a Receipt: cbor [RECEIPT_SIGNING_TAG, body without signature]."""
    if not isinstance(receipt, Message) or receipt.type != RECEIPT:
        raise EncodeError("messages: receipt_signed_bytes needs a Receipt message")
    return cbor.dumps([RECEIPT_SIGNING_TAG, _body_map(receipt, "signature")])
