"""Wallet link: the messages between a wallet, the terminal that relays it, and its provider.

A wallet (firmware/) has no network address: a terminal relays its frames. Payment-link
messages (types 1..6) go between the wallet and the payee's node; the messages below go
between the wallet and the terminal (Hello, Tap, Done), the wallet and its provider node
(Auth, Status: authenticated), and the wallet and its owner's computer over USB
(Provision, ProvisionAck, GetHistory, HistoryEntry). Importing this module registers them
with amiko_core.messages (type codes 40..49) without loading
amiko_core.linkschema (see TABLE).

    code name          key field          kind                       ? = optional
    ---- ------------- --- -------------- -------------------------- ---
      40 Hello           1 wallet         id (the wallet's account at the provider)
         wallet->term    2 provider       URL text <= 512 bytes: amikolink URL (where the
                                          terminal relays Auth; parsed by the terminal)
                         3 pending        bytes[20] txid of a payment still to resolve  ?
      41 Tap             1 url            URL text <= 512 bytes: amikopay URL            ?
         term->wallet    (no url: "a terminal is here", the wallet answers Hello)
      42 Auth            1 wallet         id
         wallet->prov    2 counter        uint, strictly increasing per wallet
                         3 action         uint <= 4: 0 route, 1 lock, 2 commit, 3 cancel, 4 query
                         4 txid           bytes[20]
                         5 amount         amount
                         6 meeting_point  meeting point
                         7 token          bytes[32] (action commit)                      ?
                         8 mac            bytes[32]
                         9 payee_key      bytes[33]: the key the payee's Receipt names
                        10 receipt_hash   bytes[32]: sha256(messages.receipt_signed_bytes(
                                          Receipt)), the digest the payee signed
                        11 confirm        uint <= 1: 0 confirmed by the wallet itself (auto),
                                          1 by its button
                        12 receipt        bytes[1..1024]: the payee's Receipt, its body as    ?
                                          sent (messages.encode, with signature); sent with
                                          action route, so that the provider verifies the
                                          signature before any funds move
      43 Status          1 wallet         id
         prov->wallet    2 counter        uint, strictly increasing per wallet (provider's own)
                         3 ref            uint: the Auth counter this answers
                         4 txid           bytes[20]
                         5 state          uint <= 5: 0 routing, 1 routed, 2 locked,
                                          3 committed, 4 cancelled, 5 refused
                         6 amount         amount
                         7 meeting_point  meeting point
                         8 balance        uint: the wallet's balance after this state
                         9 time           uint: provider's unix time (the wallet's clock)
                        10 token          bytes[32] (state committed)                    ?
                        11 reason         text <= 256 bytes                              ?
                        12 mac            bytes[32]
      44 Done            1 id             payment id
         wallet->term    2 state          uint: 3 committed, 4 cancelled (as Status)
                         3 reason         text <= 256 bytes                              ?
      45 Provision       1 wallet         id
         host->wallet    2 key            bytes[32]
                         3 provider       URL text <= 512 bytes (amikolink URL)
                         4 limit          amount: most per payment
                         5 daily          amount: most per day
                         6 auto           uint: amounts up to this need no button press
                         7 auto_count     uint <= 65535: auto-confirmed payments allowed since
                                          the last button press
                         8 auto_total     uint: their cumulative amount since the last press
                         9 auto_new       uint <= 65535: of those, payments to payees never
                                          confirmed by the button (on this wallet)
      46 ProvisionAck    1 wallet         id
         wallet->host    2 mac            bytes[32]: proof of the key (see below)
      47 GetHistory      1 index          uint (0 = newest)
         host->wallet
      48 HistoryEntry    1 index          uint
         wallet->host    2 count          uint: entries stored
                         3 state          uint (as Status)
                         4 id             payment id
                         5 amount         amount
                         6 receipt        text <= 512 bytes
                         7 txid           bytes[20]
                         8 meeting_points list of meeting point, 1..8
                         9 payee_key      bytes[33]                                      ?
                        10 signature      bytes[64]                                      ?
                        11 expires        uint                                           ?
                        12 meeting_point  meeting point                                  ?
                        13 token          bytes[32]                                      ?
                        14 reason         text <= 256 bytes                              ?
                        15 payee          text <= 64 bytes (the Receipt's payee name)    ?
      49 Refused         1 code           uint <= 255 (the wallet's refusal codes)
         wallet->any     2 reason         text <= 256 bytes
                         3 ref_type       uint <= 255: type of the refused message        ?
         (the wallet's Error; messages.Error (31) is a node-link type the wallet never loads)

MAC: mac = HMAC-SHA256(key, signed_bytes(msg)), signed_bytes(msg) = cbor.dumps([TAG, map])
where map is the message's body (deterministic CBOR map, as messages.encode) without its
mac field, and TAG the domain tag of its type: AUTH_TAG for Auth, STATUS_TAG for Status,
ACK_TAG for ProvisionAck. The tags keep a MAC of one kind from being accepted as another
(a Status can never pass as an Auth), and every field of the message is bound: wallet,
counter, action, txid, amount, meeting point, token, payee key, receipt hash, confirm and
receipt; for Status also ref, state, balance, time, reason.

The payee: payee_key_of(Tap url) is the key the URL names (?key=HEX, or None); the wallet
pays only a signed Receipt whose payee_key is that key. It cannot check the signature
itself (no secp256k1 per tap): it binds payee_key and receipt_hash(Receipt) into every Auth
and hands the Receipt to the provider with the route Auth; the provider verifies the
signature against payee_key and that the Receipt is this payment (hash, txid, amount,
meeting point) before it routes. payee_tag(payee_key) (8 bytes of its sha256) names a
payee in the wallet's bounded set of payees confirmed by the button. key is the 32-byte key provisioned into the wallet and its provider.
verify(key, msg) compares in constant time and never raises for a well-formed message.
"""

from binascii import unhexlify

from amiko_core import cbor
from amiko_core import messages as m
from amiko_core.errors import DecodeError, EncodeError
from amiko_core.ids import MAX_MEETING_POINT, MP_EXTRA, id_problem
from amiko_core.hashing import hmac_sha256, sha256
from amiko_core.token import constant_time_equal

HELLO = 40
TAP = 41
AUTH = 42
STATUS = 43
DONE = 44
PROVISION = 45
PROVISION_ACK = 46
GET_HISTORY = 47
HISTORY_ENTRY = 48
REFUSED_MSG = 49

WALLET_TYPES = (HELLO, TAP, DONE, PROVISION, PROVISION_ACK, GET_HISTORY, HISTORY_ENTRY, REFUSED_MSG)
PROVIDER_TYPES = (AUTH, STATUS)

# Auth actions
ROUTE = 0
LOCK = 1
COMMIT = 2
CANCEL = 3
QUERY = 4
ACTION_NAMES = ("route", "lock", "commit", "cancel", "query")

# Status states
ROUTING = 0
ROUTED = 1
LOCKED = 2
COMMITTED = 3
CANCELLED = 4
REFUSED = 5
STATE_NAMES = ("routing", "routed", "locked", "committed", "cancelled", "refused")
FINAL_STATES = (COMMITTED, CANCELLED, REFUSED)

# Refused{code}: why the wallet refuses a frame (codes.py has the node-side Error codes)
ERR_REFUSED = 10  # it does not take that message now (not provisioned, no such payment, ...)
ERR_BUSY = 11  # a payment is in progress or unresolved
ERR_UNPROVISIONED = 12
ERR_BAD_FRAME = 13  # the frame does not decode
ERR_INTERNAL = 14

# How a terminal finds the wallet over the air: the BLE GATT service (RX: terminal -> wallet,
# write; TX: wallet -> terminal, notify) and the NFC (ISO-DEP) application id: proprietary
# RID F0 + "AMIKO" + version 1.
SERVICE_UUID = "6a4e0001-7c3b-4d6e-9a15-616d696b6f01"
RX_UUID = "6a4e0002-7c3b-4d6e-9a15-616d696b6f01"
TX_UUID = "6a4e0003-7c3b-4d6e-9a15-616d696b6f01"
NFC_AID = b"\xf0\x41\x4d\x49\x4b\x4f\x01"

KEY_SIZE = 32
MAC_SIZE = 32
PAYEE_KEY_SIZE = 33
MAX_RECEIPT = 1024  # the Receipt body an Auth carries (messages.BODY_MAX_STR)
PAYEE_TAG_SIZE = 8

# Auth confirm
AUTO = 0
BUTTON = 1
AUTH_TAG = "amikopay walletlink v1 auth"
STATUS_TAG = "amikopay walletlink v1 status"
ACK_TAG = "amikopay walletlink v1 provisioned"

# Field kinds as amiko_core.messages writes them (see its _SCHEMA comment). They are written
# out, not made with the messages.uint/ident/... helpers, because those live in
# amiko_core.linkschema, which a wallet must not load (heap): this module is imported by
# the wallet. tests/core/test_walletlink.py checks this table against linkschema's rules.
_WALLET = ("id", "")
_MP = ("id", MP_EXTRA, MAX_MEETING_POINT)
_TXID = ("bytes", 20, 20)
_B32 = ("bytes", 32, 32)
_UINT = ("uint", 0xFFFFFFFFFFFFFFFF)
_STATE = ("uint", 5)
_AMOUNT = ("amount",)
_PAYEE_KEY = ("bytes", 33, 33)
_REASON = ("text", 256)
# URLs are carried as text: the wallet only needs the payment id of a Tap (payment_id_of) and
# echoes its provider URL; hosts parse them fully (amiko_core.url). This keeps the URL parser
# (about 10 KB of heap) off the device.
_URL = ("text", 512)

TABLE = (
    (HELLO, "Hello", ((1, "wallet", _WALLET, True), (2, "provider", _URL, True), (3, "pending", _TXID, False))),
    (TAP, "Tap", ((1, "url", _URL, False),)),
    (AUTH, "Auth", (
        (1, "wallet", _WALLET, True),
        (2, "counter", _UINT, True),
        (3, "action", ("uint", 4), True),
        (4, "txid", _TXID, True),
        (5, "amount", _AMOUNT, True),
        (6, "meeting_point", _MP, True),
        (7, "token", _B32, False),
        (8, "mac", _B32, True),
        (9, "payee_key", _PAYEE_KEY, True),
        (10, "receipt_hash", _B32, True),
        (11, "confirm", ("uint", 1), True),
        (12, "receipt", ("bytes", 1, MAX_RECEIPT), False))),
    (STATUS, "Status", (
        (1, "wallet", _WALLET, True),
        (2, "counter", _UINT, True),
        (3, "ref", _UINT, True),
        (4, "txid", _TXID, True),
        (5, "state", _STATE, True),
        (6, "amount", _AMOUNT, True),
        (7, "meeting_point", _MP, True),
        (8, "balance", _UINT, True),
        (9, "time", _UINT, True),
        (10, "token", _B32, False),
        (11, "reason", _REASON, False),
        (12, "mac", _B32, True))),
    (DONE, "Done", ((1, "id", _WALLET, True), (2, "state", _STATE, True), (3, "reason", _REASON, False))),
    (PROVISION, "Provision", (
        (1, "wallet", _WALLET, True),
        (2, "key", _B32, True),
        (3, "provider", _URL, True),
        (4, "limit", _AMOUNT, True),
        (5, "daily", _AMOUNT, True),
        (6, "auto", ("uint", 2100000000000000), True),
        (7, "auto_count", ("uint", 0xFFFF), True),
        (8, "auto_total", ("uint", 2100000000000000), True),
        (9, "auto_new", ("uint", 0xFFFF), True))),
    (PROVISION_ACK, "ProvisionAck", ((1, "wallet", _WALLET, True), (2, "mac", _B32, True))),
    (GET_HISTORY, "GetHistory", ((1, "index", _UINT, True),)),
    (HISTORY_ENTRY, "HistoryEntry", (
        (1, "index", _UINT, True),
        (2, "count", _UINT, True),
        (3, "state", _STATE, True),
        (4, "id", _WALLET, True),
        (5, "amount", _AMOUNT, True),
        (6, "receipt", ("text", 512), True),
        (7, "txid", _TXID, True),
        (8, "meeting_points", ("list", _MP, 8), True),
        (9, "payee_key", _PAYEE_KEY, False),
        (10, "signature", ("bytes", 64, 64), False),
        (11, "expires", _UINT, False),
        (12, "meeting_point", _MP, False),
        (13, "token", _B32, False),
        (14, "reason", _REASON, False),
        (15, "payee", ("text", 64), False))),
    (REFUSED_MSG, "Refused", ((1, "code", ("uint", 255), True), (2, "reason", _REASON, True),
                              (3, "ref_type", ("uint", 255), False))),
)

_SCHEMA = m._SCHEMA  # the dict messages decodes with (shared with linkschema.SCHEMA)
for _code, _name, _fields in TABLE:
    if _code not in _SCHEMA:  # (imported twice under two names, e.g. .mpy and source)
        _SCHEMA[_code] = (_name, _fields)
del _code, _name, _fields

_TAGS = {AUTH: AUTH_TAG, STATUS: STATUS_TAG, PROVISION_ACK: ACK_TAG}


def signed_bytes(msg):
    """cbor [tag of msg's type, msg's body map without the mac field]."""
    tag = _TAGS.get(getattr(msg, "type", None))
    if tag is None or not isinstance(msg, m.Message):
        raise EncodeError("walletlink: only Auth, Status and ProvisionAck carry a MAC")
    body = {}
    for f in _SCHEMA[msg.type][1]:
        name = f[1]
        if name != "mac" and name in msg.fields:
            body[f[0]] = msg.fields[name]
    return cbor.dumps([tag, body])


def _check_key(key):
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        raise EncodeError("walletlink: key must be %d bytes" % KEY_SIZE)


def mac(key, msg):
    """The MAC of msg under key (msg's own mac field, if any, is not covered)."""
    _check_key(key)
    return hmac_sha256(key, signed_bytes(msg))


def sign(key, code, fields):
    """A Message of type code with fields and its mac filled in."""
    fields = dict(fields)
    fields["mac"] = bytes(MAC_SIZE)  # placeholder: the mac is not covered by itself
    unsigned = m.Message(code, fields)  # validates every field once
    named = unsigned.fields
    named["mac"] = mac(key, unsigned)  # 32 bytes, as the placeholder was: nothing to check again
    return m.Message(code, named, m._TRUSTED)


def verify(key, msg):
    """True if msg carries the right MAC under key."""
    got = msg.fields.get("mac")
    if got is None:
        return False
    return constant_time_equal(mac(key, msg), got)


def auth(key, wallet, counter, action, txid, amount, meeting_point, payee_key, receipt_hash, confirm,
         token=None, receipt=None):
    return sign(key, AUTH, {"wallet": wallet, "counter": counter, "action": action, "txid": txid,
                            "amount": amount, "meeting_point": meeting_point, "token": token,
                            "payee_key": payee_key, "receipt_hash": receipt_hash, "confirm": confirm,
                            "receipt": receipt})


def receipt_hash(receipt):
    """sha256 of the bytes the payee signs for a Receipt message (the digest ECDSA signs)."""
    return sha256(m.receipt_signed_bytes(receipt))


def payee_tag(payee_key):
    """The short name of a payee in a wallet's set of payees confirmed by the button."""
    return sha256(payee_key)[:PAYEE_TAG_SIZE]


def status(key, wallet, counter, ref, txid, state, amount, meeting_point, balance, time,
           token=None, reason=None):
    return sign(key, STATUS, {"wallet": wallet, "counter": counter, "ref": ref, "txid": txid,
                              "state": state, "amount": amount, "meeting_point": meeting_point,
                              "balance": balance, "time": time, "token": token, "reason": reason})


def provision_ack(key, wallet):
    return sign(key, PROVISION_ACK, {"wallet": wallet})


def payment_id_of(url_text):
    """The payment id of an amikopay://host[:port]/ID[?query] URL, without the URL parser:
    DecodeError unless the scheme is amikopay and ID is a valid id (ids.id_problem)."""
    if type(url_text) is not str or url_text[:11].lower() != "amikopay://":
        raise DecodeError("walletlink: Tap url must be an amikopay:// URL")
    rest = url_text[11:]
    slash = rest.find("/")
    if slash <= 0:
        raise DecodeError("walletlink: Tap url has no host or no /ID")
    pid = rest[slash + 1:]
    q = pid.find("?")
    if q >= 0:
        pid = pid[:q]
    problem = id_problem(pid)
    if problem:
        raise DecodeError("walletlink: Tap url payment id %s" % problem)
    return pid


def payee_key_of(url_text):
    """The 33-byte key an amikopay URL names in its query (key=HEX), or None without one;
    DecodeError if it is not 66 hex digits of a compressed key (02/03 prefix). Call it on a
    URL payment_id_of accepted."""
    q = url_text.find("?")
    if q < 0:
        return None
    found = None
    for part in url_text[q + 1:].split("&"):
        if part[:4].lower() != "key=":
            continue
        if found is not None:
            raise DecodeError("walletlink: Tap url names key= twice")
        text = part[4:]
        if len(text) != 2 * PAYEE_KEY_SIZE or text[:2] not in ("02", "03"):
            raise DecodeError("walletlink: Tap url key must be 66 hex digits of a compressed public key")
        try:
            found = unhexlify(text)
        except ValueError:
            raise DecodeError("walletlink: Tap url key is not hex")
    return found


def is_walletlink(code):
    return HELLO <= code <= REFUSED_MSG
