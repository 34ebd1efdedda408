"""Amiko URLs: where a payer finds a payment, and where a node finds a link.

Grammar (ASCII only, at most 512 characters, no whitespace or control characters)::

    url     = scheme "://" host [":" port] "/" id ["?" query]
    scheme  = "amikopay" | "amikolink"          (case-insensitive; canonical lower case)
    host    = dns-name | ipv4 | "[" ipv6 "]"
    port    = 1..65535, decimal digits without leading zero; default 4321
    id      = 1..64 of [A-Za-z0-9._~-], not "." or ".."   (amiko_core.ids)
    query   = pair *("&" pair), at most 8 pairs, keys unique
    pair    = 1..16 of [A-Za-z0-9._~-] "=" 1..128 of [A-Za-z0-9._~-]

- amikopay://host[:port]/ID?key=HEX: the payment ID a payee's node assigned (seeds/004);
  key is the payee node's public key (33 bytes compressed secp256k1, 66 hex digits): the
  payer's BOLT 8 connection is pinned to it and the receipt must be signed by it.
- amikolink://host[:port]/NAME: the name of a link on a node (the callback of ConnectLink).
- dns-name: labels of 1..63 characters [a-z0-9-], not starting or ending with "-",
  at most 253 characters, no empty label (so no trailing dot); the last label is not
  all digits (a dotted-digits host must be a valid IPv4 address). Lower-cased.
- ipv4: four decimal octets 0..255 without leading zeros.
- ipv6: RFC 4291 text form of eight 16-bit groups, "::" at most once; no zone id and no
  embedded IPv4 part. Canonical form is RFC 5952 (lower case, longest zero run as "::").
- Rejected: userinfo ("user@"), fragments ("#"), percent-encoding, empty port, empty id,
  empty query.

The canonical form (str(url)) lower-cases scheme and host, compresses IPv6, omits the
default port and sorts query pairs by key. parse(str(u)) == u for every valid u.
Every rejection is errors.URLError whose reason says what was wrong.
"""

from amiko_core.errors import URLError
from amiko_core.ids import ID_CHARS, MAX_ID, id_problem  # noqa: F401 (re-exported: url.id_problem)
from amiko_core.ids import safe_problem as _safe_problem

DEFAULT_PORT = 4321
MAX_URL = 512
MAX_QUERY_PAIRS = 8
MAX_QUERY_KEY = 16
MAX_QUERY_VALUE = 128

PAY = "amikopay"
LINK = "amikolink"
SCHEMES = (PAY, LINK)

_DIGITS = "0123456789"
_HEX = "0123456789abcdef"
_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def _fail(what, problem):
    raise URLError("url: %s %s" % (what, problem))


def _check_id(text, what):
    problem = id_problem(text)
    if problem:
        _fail(what, problem)
    return text


def _is_digits(s):
    if not s:
        return False
    for c in s:
        if c not in _DIGITS:
            return False
    return True


def _port_text(text):
    if not text:
        raise URLError("url: empty port after ':'")
    if not _is_digits(text):
        raise URLError("url: port %r is not a decimal number" % text)
    if len(text) > 1 and text[0] == "0":
        raise URLError("url: port %r has a leading zero" % text)
    if len(text) > 5:
        raise URLError("url: port %s out of range 1..65535" % text)
    return int(text)


def _port(value):
    if value is None:
        return DEFAULT_PORT
    if type(value) is not int:
        raise URLError("url: port must be an integer, got %s" % type(value).__name__)
    if value < 1 or value > 65535:
        raise URLError("url: port %d out of range 1..65535" % value)
    return value


def _ipv4(host):
    parts = host.split(".")
    if len(parts) != 4:
        raise URLError("url: host %r is not a valid IPv4 address (need 4 octets)" % host)
    for p in parts:
        if not _is_digits(p) or len(p) > 3 or (len(p) > 1 and p[0] == "0") or int(p) > 255:
            raise URLError("url: host %r is not a valid IPv4 address (bad octet %r)" % (host, p))
    return host


def _ipv6_groups(text):
    if not text:
        raise URLError("url: empty IPv6 address in []")
    if "." in text:
        raise URLError("url: IPv6 address %r with an embedded IPv4 part is not supported" % text)
    halves = text.split("::")
    if len(halves) > 2:
        raise URLError("url: IPv6 address %r has more than one '::'" % text)
    if len(halves) == 2:
        head = halves[0].split(":") if halves[0] else []
        tail = halves[1].split(":") if halves[1] else []
        if len(head) + len(tail) > 7:
            raise URLError("url: IPv6 address %r has too many groups" % text)
        groups = head + ["0"] * (8 - len(head) - len(tail)) + tail
    else:
        groups = text.split(":")
        if len(groups) != 8:
            raise URLError("url: IPv6 address %r needs 8 groups or '::'" % text)
    values = []
    for g in groups:
        g = g.lower()
        if not g or len(g) > 4:
            raise URLError("url: IPv6 address %r has a bad group %r" % (text, g))
        for c in g:
            if c not in _HEX:
                raise URLError("url: IPv6 address %r has a bad group %r" % (text, g))
        values.append(int(g, 16))
    return values


def _ipv6(text):
    """RFC 5952 canonical text of an IPv6 address."""
    values = _ipv6_groups(text)
    best_start, best_len, i = -1, 1, 0
    while i < 8:
        if values[i] == 0:
            j = i
            while j < 8 and values[j] == 0:
                j += 1
            if j - i > best_len:
                best_start, best_len = i, j - i
            i = j
        else:
            i += 1
    hexes = ["%x" % v for v in values]
    if best_start < 0:
        return ":".join(hexes)
    return ":".join(hexes[:best_start]) + "::" + ":".join(hexes[best_start + best_len :])


def _dns(host):
    if len(host) > 253:
        raise URLError("url: host name is %d characters long, at most 253 allowed" % len(host))
    labels = host.split(".")
    for label in labels:
        if not label:
            raise URLError("url: host %r has an empty label" % host)
        if len(label) > 63:
            raise URLError("url: host label %r is longer than 63 characters" % label)
        for c in label:
            if c not in _LABEL_CHARS:
                raise URLError("url: host %r contains illegal character %r" % (host, c))
        if label[0] == "-" or label[-1] == "-":
            raise URLError("url: host label %r starts or ends with '-'" % label)
    if _is_digits(labels[-1]):
        raise URLError("url: host %r ends in a number but is not an IPv4 address" % host)
    return host


def _host(host):
    """Canonical host (IPv6 without brackets) from a host as written or passed in."""
    if type(host) is not str:
        raise URLError("url: host must be text, got %s" % type(host).__name__)
    if host[:1] == "[" and host[-1:] == "]":
        return _ipv6(host[1:-1])
    if not host:
        raise URLError("url: missing host")
    if ":" in host:
        return _ipv6(host)
    host = host.lower()
    digits_and_dots = True
    for c in host:
        if c != "." and c not in _DIGITS:
            digits_and_dots = False
            break
    if digits_and_dots:
        return _ipv4(host)
    return _dns(host)


def _query(query):
    if query is None:
        return {}
    if type(query) is not dict:
        raise URLError("url: query must be a dict, got %s" % type(query).__name__)
    if len(query) > MAX_QUERY_PAIRS:
        raise URLError("url: query has %d pairs, at most %d allowed" % (len(query), MAX_QUERY_PAIRS))
    out = {}
    for k in query:
        v = query[k]
        problem = _safe_problem(k, "", MAX_QUERY_KEY)
        if problem:
            _fail("query key %r" % (k,), problem)
        problem = _safe_problem(v, "", MAX_QUERY_VALUE)
        if problem:
            _fail("query value of %r" % k, problem)
        out[k] = v
    return out


def _parse_query(text):
    if not text:
        raise URLError("url: empty query after '?'")
    query = {}
    for pair in text.split("&"):
        kv = pair.split("=")
        if len(kv) != 2:
            raise URLError("url: query part %r is not key=value" % pair)
        if kv[0] in query:
            raise URLError("url: query key %r repeated" % kv[0])
        query[kv[0]] = kv[1]
        if len(query) > MAX_QUERY_PAIRS:
            break  # _query reports it
    return query


class AmikoURL:
    """A parsed, validated amikopay:// or amikolink:// URL (host without IPv6 brackets)."""

    def __init__(self, scheme, host, port=None, path="", query=None):
        if scheme not in SCHEMES:
            raise URLError("url: unsupported scheme %r (expected amikopay or amikolink)" % (scheme,))
        self.scheme = scheme
        self.host = _host(host)
        self.port = _port(port)
        self.path = _check_id(path, "payment id" if scheme == PAY else "link name")
        self.query = _query(query)

    def __str__(self):
        host = "[" + self.host + "]" if ":" in self.host else self.host
        out = self.scheme + "://" + host
        if self.port != DEFAULT_PORT:
            out += ":%d" % self.port
        out += "/" + self.path
        if self.query:
            out += "?" + "&".join(k + "=" + self.query[k] for k in sorted(self.query))
        return out

    def __repr__(self):
        return "AmikoURL(%r)" % str(self)

    def __eq__(self, other):
        return isinstance(other, AmikoURL) and str(self) == str(other)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(str(self))


def parse(text):
    """Parse an amikopay:// or amikolink:// URL; raises URLError with the reason."""
    if type(text) is not str:
        raise URLError("url: must be text, got %s" % type(text).__name__)
    if len(text) > MAX_URL:
        raise URLError("url: %d characters long, at most %d allowed" % (len(text), MAX_URL))
    i = 0
    for c in text:
        if c <= " " or c == "\x7f":
            raise URLError("url: whitespace or control character %r at position %d" % (c, i))
        if ord(c) > 0x7E:
            raise URLError("url: non-ASCII character %r at position %d" % (c, i))
        i += 1
    sep = text.find("://")
    if sep < 0:
        raise URLError("url: missing scheme (expected amikopay:// or amikolink://)")
    scheme = text[:sep].lower()
    if scheme not in SCHEMES:
        raise URLError("url: unsupported scheme %r (expected amikopay or amikolink)" % text[:sep])
    rest = text[sep + 3 :]
    if "#" in rest:
        raise URLError("url: fragment ('#') is not allowed")
    query = None
    q = rest.find("?")
    if q >= 0:
        query = _parse_query(rest[q + 1 :])
        rest = rest[:q]
    slash = rest.find("/")
    if slash < 0:
        raise URLError("url: missing '/%s' after the host" % ("ID" if scheme == PAY else "NAME"))
    authority, path = rest[:slash], rest[slash + 1 :]
    if "@" in authority:
        raise URLError("url: userinfo ('user@') is not allowed")
    port = None
    if authority[:1] == "[":
        close = authority.find("]")
        if close < 0:
            raise URLError("url: '[' without closing ']' in host")
        host, after = authority[: close + 1], authority[close + 1 :]
        if after:
            if after[0] != ":":
                raise URLError("url: unexpected %r after ']'" % after)
            port = after[1:]
    else:
        if "]" in authority:
            raise URLError("url: ']' without opening '[' in host")
        colon = authority.find(":")
        if colon >= 0:
            if authority.find(":", colon + 1) >= 0:
                raise URLError("url: IPv6 host must be in brackets, e.g. [::1]")
            authority, port = authority[:colon], authority[colon + 1 :]
        host = authority
        if not host:
            raise URLError("url: missing host")
    return AmikoURL(scheme, host, None if port is None else _port_text(port), path, query)


def parse_pay(text):
    """Parse an amikopay://host[:port]/ID URL."""
    u = parse(text)
    if u.scheme != PAY:
        raise URLError("url: expected an amikopay:// URL, got %s://" % u.scheme)
    return u


def parse_link(text):
    """Parse an amikolink://host[:port]/NAME URL."""
    u = parse(text)
    if u.scheme != LINK:
        raise URLError("url: expected an amikolink:// URL, got %s://" % u.scheme)
    return u


def format_pay(host, port, payment_id, key=None):
    """Canonical amikopay URL; port None means the default; key (hex text) is the payee's
    public key, carried as ?key=. Raises URLError on bad parts."""
    return str(AmikoURL(PAY, host, port, payment_id, None if key is None else {"key": key}))


def format_link(host, port, name):
    """Canonical amikolink URL; port None means the default. Raises URLError on bad parts."""
    return str(AmikoURL(LINK, host, port, name))
