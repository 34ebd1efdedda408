"""amiko_core.url on CPython: the shared vectors, parse/format round trips, IPv4/IPv6
agreement with the ipaddress module, and fuzz (any text -> AmikoURL or URLError)."""

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amiko_core import url
from amiko_core.errors import URLError

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "url.json").read_text(encoding="utf-8"))
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- vectors ----

@pytest.mark.parametrize("vec", VECTORS["valid"], ids=lambda v: v["text"][:60])
def test_valid_vector(vec):
    u = url.parse(vec["text"])
    assert (u.scheme, u.host, u.port, u.path, u.query) == (
        vec["scheme"], vec["host"], vec["port"], vec["path"], vec["query"])
    assert str(u) == vec["canonical"]
    assert url.parse(vec["canonical"]) == u and hash(url.parse(vec["canonical"])) == hash(u)
    assert repr(u) == "AmikoURL(%r)" % vec["canonical"]
    strict = url.parse_pay if u.scheme == "amikopay" else url.parse_link
    assert strict(vec["text"]) == u
    if not u.query:
        fmt = url.format_pay if u.scheme == "amikopay" else url.format_link
        assert fmt(u.host, u.port, u.path) == vec["canonical"]


@pytest.mark.parametrize("vec", VECTORS["invalid"], ids=lambda v: v["text"][:60])
def test_invalid_vector(vec):
    with pytest.raises(URLError) as info:
        url.parse(vec["text"])
    assert vec["reason"] in info.value.reason
    assert info.value.reason.startswith("url: ")


@pytest.mark.parametrize("vec", VECTORS["wrong_scheme"], ids=lambda v: v["text"])
def test_wrong_scheme_vector(vec):
    fn = url.parse_pay if vec["parser"] == "pay" else url.parse_link
    with pytest.raises(URLError) as info:
        fn(vec["text"])
    assert vec["reason"] in info.value.reason


@pytest.mark.parametrize("vec", VECTORS["format"], ids=lambda v: v["url"])
def test_format_vector(vec):
    fn = url.format_pay if vec["scheme"] == "amikopay" else url.format_link
    extra = (vec["key"],) if "key" in vec else ()
    assert fn(vec["host"], vec["port"], vec["id"], *extra) == vec["url"]


@pytest.mark.parametrize("vec", VECTORS["format_invalid"], ids=lambda v: v["reason"])
def test_format_invalid_vector(vec):
    fn = url.format_pay if vec["scheme"] == "amikopay" else url.format_link
    with pytest.raises(URLError) as info:
        fn(vec["host"], vec["port"], vec["id"], *((vec["key"],) if "key" in vec else ()))
    assert vec["reason"] in info.value.reason


def test_length_limit_is_exact():
    base = "amikolink://" + ".".join(["a" * 63] * 3) + "." + "b" * 61 + "/" + "n" * 64 + "?key=" + "0" * 128 + "&z="
    exact = base + "z" * (512 - len(base))
    assert len(exact) == 512
    assert url.parse(exact).query["z"] == "z" * (512 - len(base))
    with pytest.raises(URLError, match="513 characters long, at most 512 allowed"):
        url.parse(exact + "z")


def test_api_edges():
    for bad in (b"amikopay://h/x", None, 5, ["amikopay://h/x"]):
        with pytest.raises(URLError, match="must be text"):
            url.parse(bad)
    with pytest.raises(URLError, match="unsupported scheme"):
        url.AmikoURL("http", "h", None, "x")
    with pytest.raises(URLError, match="query must be a dict"):
        url.AmikoURL("amikopay", "h", None, "x", [("k", "v")])
    with pytest.raises(URLError, match="host must be text"):
        url.AmikoURL("amikopay", b"h", None, "x")
    with pytest.raises(URLError, match="port must be an integer, got str"):
        url.format_pay("h", "80", "x")
    u = url.AmikoURL("amikolink", "H", 4321, "n", {"key": "abc"})
    assert str(u) == "amikolink://h/n?key=abc"
    assert u == url.parse("AMIKOLINK://h:4321/n?key=abc") and u != url.parse("amikolink://h/n")
    assert u != "amikolink://h/n?key=abc"
    assert len({u, url.parse(str(u))}) == 1
    assert url.id_problem("a:b", ":") is None and "illegal character ':'" in url.id_problem("a:b")


# ---- generated URLs ----

labels = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
dns_names = st.lists(labels, min_size=1, max_size=4).map(".".join).filter(
    lambda h: len(h) <= 253 and not h.split(".")[-1].isdigit())
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n))
ids = st.text(url.ID_CHARS, min_size=1, max_size=64).filter(lambda s: s not in (".", ".."))
queries = st.dictionaries(st.text(url.ID_CHARS, min_size=1, max_size=16), st.text(url.ID_CHARS, min_size=1, max_size=128), max_size=2)


@st.composite
def url_parts(draw):
    scheme = draw(st.sampled_from(url.SCHEMES))
    kind = draw(st.sampled_from(["dns", "v4", "v6"]))
    if kind == "dns":
        host = canonical = draw(dns_names)
    elif kind == "v4":
        host = canonical = draw(ipv4)
    else:
        a = draw(ipv6)
        canonical = a.compressed
        host = draw(st.sampled_from([a.compressed, a.exploded, a.exploded.upper(), "[%s]" % a.compressed]))
    port = draw(st.none() | st.integers(1, 65535))
    return scheme, host, canonical, port, draw(ids), draw(st.none() | queries)


@SETTINGS
@given(url_parts())
def test_round_trip(parts):
    scheme, host, canonical_host, port, ident, query = parts
    u = url.AmikoURL(scheme, host, port, ident, query)
    assert (u.scheme, u.host, u.port, u.path, u.query) == (scheme, canonical_host, port or 4321, ident, query or {})
    text = str(u)
    if len(text) <= url.MAX_URL:
        again = url.parse(text)
        assert again == u and str(again) == text
        assert url.parse(text.replace(scheme, scheme.upper(), 1)) == u
    if not query:
        fmt, strict = (url.format_pay, url.parse_pay) if scheme == url.PAY else (url.format_link, url.parse_link)
        assert fmt(host, port, ident) == text
        assert strict(text) == u
        authority = text.split("/")[2]
        assert authority.endswith(":%d" % u.port) == (u.port != url.DEFAULT_PORT)


@SETTINGS
@given(st.text("0123456789abcdefABCDEF:", max_size=45))
def test_ipv6_agrees_with_ipaddress(text):
    try:
        want = ipaddress.IPv6Address(text).compressed
    except ValueError:
        want = None
    try:
        got = url.parse("amikopay://[%s]/x" % text).host
    except URLError:
        got = None
    assert got == want


@SETTINGS
@given(st.text("0123456789.", max_size=20) | st.lists(st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join))
def test_ipv4_agrees_with_ipaddress(text):
    try:
        want = str(ipaddress.IPv4Address(text))
    except ValueError:
        want = None
    try:
        got = url.parse("amikopay://%s/x" % text).host
    except URLError:
        got = None
    assert got == want


# ---- hostile input ----

def _parse_or_error(text):
    try:
        u = url.parse(text)
    except URLError as e:
        assert e.reason.startswith("url: ")
        return None
    # whatever parses has a stable canonical form
    assert url.parse(str(u)) == u and str(url.parse(str(u))) == str(u)
    return u


@SETTINGS
@given(st.text(max_size=600))
def test_any_text(text):
    _parse_or_error(text)


URLISH = st.text("amikopaylnAZ09.-_~:/[]@?=&#% \t\u00e9\x00", max_size=40)


@SETTINGS
@given(st.sampled_from(["amikopay://", "amikolink://", "AmikoPay://", "amikopay:/", ""]), URLISH, URLISH)
def test_urlish_text(prefix, a, b):
    _parse_or_error(prefix + a + "/" + b)
    _parse_or_error(prefix + "[" + a + "]:" + b)


@SETTINGS
@given(st.sampled_from([v["text"] for v in VECTORS["valid"]]), st.integers(0, 600), st.text("/:@[]?=&#%.x9 ", max_size=3))
def test_spliced_valid_urls(text, pos, insert):
    _parse_or_error(text[:pos] + insert + text[pos:])
    _parse_or_error(text[:pos] + insert + text[pos + len(insert):])
