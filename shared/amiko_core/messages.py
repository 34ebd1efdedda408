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
                           9 payee           text <= 64 bytes: the payee's ?
                                             name (shown by a wallet)
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
                           4 nonce           bytes[16..32]                ?  (unused since BOLT 8)
                           5 signature       bytes[64]                    ?  (unused since BOLT 8)
                           6 invite          bytes[32]                    ?
      17 MakeRoute         1 txid            bytes[20]
                           2 side            uint <= 1 (0 = payer, 1 = payee)
                           3 amount          amount
                           4 meeting_point   meeting point
                           5 channel         uint
                           6 deadline        uint                         ?
      18 HaveNoRoute       1 txid, 2 side
      19 CancelRoute       1 txid, 2 side
      20 HaveRoute         1 txid, 2 side, 3 deadline (uint, ?),
                           4 signature (bytes[64], ?: the meeting point's, see
                           amiko.node.meetingpoints; the node refuses a HaveRoute without it)
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
- payment id / link name: 1..64 of [A-Za-z0-9._~-], not "." or ".." (ids.id_problem);
  meeting point: the same plus ":" and "@", 1..131 characters (NAME@KEY: the node checks
  that KEY is 66 hex digits of a public key, amiko.node.meetingpoints).
- bytes[n] / bytes[lo..hi]: a byte string of exactly n (or lo..hi) bytes.
- list: 1..max items of one scalar kind, no duplicates.
- amikolink URL: text that url.parse_link accepts.

Decoding is strict: the body must be one CBOR map (at most 4096 bytes, nesting 2, 64
items, strings of 1024 bytes), every key known for the type, every required field present,
every value of its kind. Every rejection is errors.DecodeError naming the message and the
field; building a Message with bad fields raises errors.EncodeError with the same rules.

Adding a message is one register(code, name, fields) call, fields being
(key, python name, kind, required) tuples with kinds made by the helpers uint, text,
ident, nbytes, listof and url (and the constants AMOUNT, BOOL, PAYMENT_ID, ...).

Only what a payment-link endpoint needs lives in this module: the payment-link types
(1..6), Message, encode/decode and the field checks. The node-link types (16..31),
register, name_of, SCHEMA, the kind helpers and the node-link type constants
(CONNECT_LINK ... ERROR) live in amiko_core.linkschema, which is
imported the first time one of them is used (messages.register, messages.SCHEMA, a
node-link type code...), so a wallet never loads it. They read as attributes of this
module all the same.

The payee signs receipt_signed_bytes(receipt): cbor.dumps([RECEIPT_SIGNING_TAG, map]) where
map is the receipt's body without the signature field (key 7).
"""

from amiko_core import cbor, frame
from amiko_core.errors import DecodeError, EncodeError
from amiko_core.ids import MAX_ID, MAX_MEETING_POINT, MP_EXTRA, id_problem

MAX_AMOUNT = 2100000000000000
UINT_MAX = 0xFFFFFFFFFFFFFFFF
RECEIPT_SIGNING_TAG = "amikopay receipt v1"

# Limits for cbor.loads: above anything a valid body needs, so that a field that is too
# long is reported by the field check, and small enough to bound work on hostile input.
BODY_MAX_SIZE = 4096
BODY_MAX_DEPTH = 2
BODY_MAX_ITEMS = 64
BODY_MAX_STR = 1024

PAY = 1
RECEIPT = 2
CONFIRM = 3
CANCEL = 4
HAVE_PAYEE_ROUTE = 5
COMMIT = 6
# The node-link type constants (CONNECT_LINK = 16 ... ERROR = 31) are in linkschema.

# code -> (name, fields); field = (key, python name, kind, required); kind = (kind name,
# parameters...) as the linkschema helpers make them: ("amount",), ("uint", max),
# ("bool",), ("text", max bytes), ("id", extra characters[, max length]), ("bytes", min, max),
# ("list", item kind, max items), ("url", scheme). Fields are found by a linear scan (at
# most a handful per message): cheaper in RAM than two dicts per type. The payment-link
# types are written out here; linkschema adds the node-link types and registered ones.
_ID = (1, "id", ("id", ""), True)
_MP = ("id", MP_EXTRA, MAX_MEETING_POINT)
_TXID = ("bytes", 20, 20)
_SCHEMA = {
    PAY: ("Pay", (_ID,)),
    RECEIPT: ("Receipt", (
        _ID,
        (2, "amount", ("amount",), True),
        (3, "receipt", ("text", 512), True),
        (4, "txid", _TXID, True),
        (5, "meeting_points", ("list", _MP, 8), True),
        (6, "payee_key", ("bytes", 33, 33), False),
        (7, "signature", ("bytes", 64, 64), False),
        (8, "expires", ("uint", UINT_MAX), False),
        (9, "payee", ("text", 64), False))),
    CONFIRM: ("Confirm", (_ID, (2, "meeting_point", _MP, True))),
    CANCEL: ("Cancel", (_ID, (2, "reason", ("text", 256), False))),
    HAVE_PAYEE_ROUTE: ("HavePayeeRoute", (_ID, (2, "txid", _TXID, True))),
    COMMIT: ("Commit", ((1, "id", _ID[2], False), (2, "token", ("bytes", 32, 32), True))),
}
del _ID, _MP, _TXID


def __getattr__(name):
    # register, name_of, SCHEMA, the kind helpers: see the module docstring.
    from amiko_core import linkschema

    try:
        return getattr(linkschema, name)
    except AttributeError:
        raise AttributeError("module amiko_core.messages has no attribute %r" % (name,))


def _entry(code):
    """(name, fields) of a known type code, else None; loads the node-link types on first use."""
    if type(code) is not int:
        return None
    if 16 <= code <= 31 and code not in _SCHEMA:
        from amiko_core import linkschema  # noqa: F401 (adds the node-link types to _SCHEMA)
    return _SCHEMA.get(code)


REASON_BYTES = 256  # the wire bound of every reason text


def cut_reason(text, limit=REASON_BYTES):
    """text cut to at most limit UTF-8 bytes, at a character boundary (the one way every
    reason is made to fit the wire)."""
    text = text or ""
    b = text.encode("utf-8")
    if len(b) <= limit:
        return text
    while limit > 0 and (b[limit] & 0xC0) == 0x80:  # inside a multi-byte character
        limit -= 1
    return b[:limit].decode("utf-8")


def _short(v):
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _text_problem(v, max_bytes):
    if type(v) is not str:
        return "must be text, got %s" % type(v).__name__
    try:
        b = v.encode("utf-8")
    except UnicodeError:
        return "is not encodable as UTF-8"
    n = len(b)
    if n > max_bytes:
        return "is %d bytes long, at most %d allowed" % (n, max_bytes)
    if not n or (min(b) >= 0x20 and max(b) < 0x7F):  # printable ASCII (min/max run in C)
        return None
    # Over the UTF-8 bytes, not the characters: see ids.safe_problem. C0 controls and DEL
    # are one byte, the C1 controls U+0080..U+009F are C2 80..C2 9F.
    for i in range(n):
        c = b[i]
        if (c < 0x20 and c != 0x0A and c != 0x09) or c == 0x7F or (c == 0xC2 and b[i + 1] <= 0x9F):
            return "contains control character %r" % b[i : i + 1 + (c == 0xC2)].decode()
    return None


def _problem(kind, v):
    """Why v is not a value of kind, or None if it is one."""
    k = kind[0]
    if k == "amount" or k == "uint":
        if type(v) is not int:
            return "must be an integer, got %s" % type(v).__name__
        lo, hi = (1, MAX_AMOUNT) if k == "amount" else (0, kind[1])
        if v < lo or v > hi:
            return "must be %d..%d, got %d" % (lo, hi, v)
        return None
    if k == "bool":
        return None if type(v) is bool else "must be a bool, got %s" % type(v).__name__
    if k == "text":
        return _text_problem(v, kind[1])
    if k == "id":
        return id_problem(v, kind[1], kind[2] if len(kind) > 2 else MAX_ID)
    if k == "bytes":
        if type(v) is not bytes:
            return "must be bytes, got %s" % type(v).__name__
        if not kind[1] <= len(v) <= kind[2]:
            want = "%d" % kind[1] if kind[1] == kind[2] else "%d..%d" % (kind[1], kind[2])
            return "must be %s bytes, got %d" % (want, len(v))
        return None
    if k == "list":
        if type(v) is not list:
            return "must be a list, got %s" % type(v).__name__
        if not 1 <= len(v) <= kind[2]:
            return "must have 1..%d items, got %d" % (kind[2], len(v))
        for i in range(len(v)):
            p = _problem(kind[1], v[i])
            if p:
                return "item %d %s" % (i, p)
            if v[i] in v[:i]:
                return "item %d repeats %s" % (i, _short(v[i]))
        return None
    # "url": only the node link has one (ConnectLink's callback)
    p = _text_problem(v, 512)
    if p:
        return p
    from amiko_core import linkschema

    return linkschema.url_problem(v, kind[1])


def _normalize(kind, v):
    """Construction accepts bytearray/memoryview for bytes and tuples for lists."""
    k = kind[0]
    if k == "bytes":
        return bytes(v) if isinstance(v, (bytearray, memoryview)) else v
    if k != "list":
        return v
    if isinstance(v, tuple):
        v = list(v)
    if type(v) is list:
        out = []
        for x in v:
            out.append(_normalize(kind[1], x))
        return out
    return v


def _find(fields, index, value):
    """The field whose entry at index (0 key, 1 python name) is value, or None."""
    for f in fields:
        if f[index] == value:
            return f
    return None


def _validate(entry, named, err):
    """Check a {python name: value} dict against a schema entry; raise err on a problem."""
    for f in entry[1]:
        if f[1] in named:
            p = _problem(f[2], named[f[1]])
        else:
            p = "is required but missing" if f[3] else None
        if p:
            raise err("message %s field %s (key %d) %s" % (entry[0], f[1], f[0], p))


_TRUSTED = object()


class Message:
    """One wire message: type (code), name, fields (python name -> value, present ones only).
    A field reads as an attribute; an absent optional field reads as None."""

    def __init__(self, mtype, fields=None, _trusted=None, **kw):
        entry = _entry(mtype)
        if _trusted is _TRUSTED:  # decode() has validated the fields already
            self.type = mtype
            self.name = entry[0]
            self.fields = fields
            return
        if entry is None:
            raise EncodeError("message type %s is unknown" % _short(mtype))
        if fields is None:
            fields = {}
        elif type(fields) is not dict:
            raise EncodeError("message %s: fields must be a dict, got %s" % (entry[0], type(fields).__name__))
        named = {}
        for src in (fields, kw):
            for k in src:
                f = _find(entry[1], 1, k) if type(k) is str else None
                if f is None:
                    raise EncodeError("message %s has no field %s" % (entry[0], _short(k)))
                v = src[k]
                if v is not None:
                    named[k] = _normalize(f[2], v)
        _validate(entry, named, EncodeError)
        self.type = mtype
        self.name = entry[0]
        self.fields = named

    def __getattr__(self, attr):
        if attr in ("type", "name", "fields") or attr[:1] == "_":
            raise AttributeError(attr)
        fields = self.fields
        if attr in fields:  # (only field names get in there)
            return fields[attr]
        entry = _entry(self.type)
        if entry is None or _find(entry[1], 1, attr) is None:
            raise AttributeError("message %s has no field %r" % (self.name, attr))
        return self.fields.get(attr)

    def __eq__(self, other):
        return isinstance(other, Message) and self.type == other.type and self.fields == other.fields

    def __repr__(self):
        parts = []
        for f in _entry(self.type)[1]:
            if f[1] in self.fields:
                parts.append("%s=%r" % (f[1], self.fields[f[1]]))
        return "%s(%s)" % (self.name, ", ".join(parts))


def _body_map(msg, skip=None):
    out = {}
    for f in _entry(msg.type)[1]:
        if f[1] in msg.fields and f[1] != skip:
            out[f[0]] = msg.fields[f[1]]
    return out


def encode(msg):
    """The deterministic CBOR body of msg."""
    if not isinstance(msg, Message):
        raise EncodeError("messages: can only encode a Message, got %s" % type(msg).__name__)
    return cbor.dumps(_body_map(msg))


def decode(code, body):
    """Strictly decode the body of a message of type code; raises DecodeError."""
    entry = _entry(code)
    if entry is None:
        raise DecodeError("message type %s is unknown" % _short(code))
    name = entry[0]
    try:
        value = cbor.loads(body, BODY_MAX_SIZE, BODY_MAX_DEPTH, BODY_MAX_ITEMS, BODY_MAX_STR)
    except DecodeError as e:
        raise DecodeError("message %s body: %s" % (name, e.reason))
    if type(value) is not dict:
        raise DecodeError("message %s body must be a CBOR map, got %s" % (name, type(value).__name__))
    named = {}
    for key in value:
        f = _find(entry[1], 0, key) if type(key) is int else None
        if f is None:
            raise DecodeError("message %s has unknown field key %s" % (name, _short(key)))
        named[f[1]] = value[key]
    _validate(entry, named, DecodeError)
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
