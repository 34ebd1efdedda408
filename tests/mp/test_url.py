"""amiko_core.url under MicroPython: the shared vectors and a seeded mutation fuzz
(AmikoURL or URLError, and whatever parses is stable under str/parse)."""

from mptest import XorShift32, eq, raises, vectors

from amiko_core import url
from amiko_core.errors import URLError


def check_reason(e, want, what):
    if want not in e.reason:
        raise AssertionError("%r: reason %r lacks %r" % (what, e.reason, want))


def test_valid_vectors():
    for vec in vectors("url")["valid"]:
        u = url.parse(vec["text"])
        what = vec["text"]
        eq(u.scheme, vec["scheme"], what)
        eq(u.host, vec["host"], what)
        eq(u.port, vec["port"], what)
        eq(u.path, vec["path"], what)
        eq(u.query, vec["query"], what)
        eq(str(u), vec["canonical"], what)
        eq(url.parse(vec["canonical"]), u, what + " canonical parses equal")
        eq(hash(url.parse(vec["canonical"])), hash(u), what + " hash")
        if u.scheme == "amikopay":
            eq(url.parse_pay(vec["text"]), u, what)
            if not u.query:
                eq(url.format_pay(u.host, u.port, u.path), vec["canonical"], what + " format")
        else:
            eq(url.parse_link(vec["text"]), u, what)
            if not u.query:
                eq(url.format_link(u.host, u.port, u.path), vec["canonical"], what + " format")


def test_invalid_vectors():
    for vec in vectors("url")["invalid"]:
        e = raises(URLError, url.parse, vec["text"])
        check_reason(e, vec["reason"], vec["text"])


def test_wrong_scheme():
    for vec in vectors("url")["wrong_scheme"]:
        fn = url.parse_pay if vec["parser"] == "pay" else url.parse_link
        check_reason(raises(URLError, fn, vec["text"]), vec["reason"], vec["text"])


def test_format_vectors():
    for vec in vectors("url")["format"]:
        fn = url.format_pay if vec["scheme"] == "amikopay" else url.format_link
        extra = (vec["key"],) if "key" in vec else ()
        eq(fn(vec["host"], vec["port"], vec["id"], *extra), vec["url"], vec["url"])
    for vec in vectors("url")["format_invalid"]:
        fn = url.format_pay if vec["scheme"] == "amikopay" else url.format_link
        extra = (vec["key"],) if "key" in vec else ()
        e = raises(URLError, fn, vec["host"], vec["port"], vec["id"], *extra)
        check_reason(e, vec["reason"], vec)


def test_api_edges():
    raises(URLError, url.parse, b"amikopay://h/x")
    raises(URLError, url.parse, None)
    raises(URLError, url.AmikoURL, "http", "h", None, "x")
    raises(URLError, url.AmikoURL, "amikopay", "h", None, "x", {"k": "a b"})
    raises(URLError, url.AmikoURL, "amikopay", "h", None, "x", [("k", "v")])
    raises(URLError, url.AmikoURL, "amikopay", 5, None, "x")
    raises(URLError, url.format_pay, "h", "80", "x")
    u = url.AmikoURL("amikolink", "H", 4321, "n", {"key": "abc"})
    eq(str(u), "amikolink://h/n?key=abc", "query formatting")
    eq(repr(u), "AmikoURL('amikolink://h/n?key=abc')", "repr")
    assert u == url.parse("amikolink://h:4321/n?key=abc")
    assert u != url.parse("amikolink://h/n")
    assert u != "amikolink://h/n?key=abc"
    eq(url.id_problem("ok"), None, "id ok")
    eq(url.id_problem("a:b", ":"), None, "extra chars")
    assert url.id_problem("a:b")


ALPHABET = "az09.-_~:/[]@?=&#% AZ\t\u00e9"


def test_mutation_fuzz():
    rng = XorShift32(4321)
    seeds = [v["text"] for v in vectors("url")["valid"]]
    accepted = 0
    rejected = 0
    for i in range(3000):
        s = seeds[rng.below(len(seeds))]
        for _ in range(1 + rng.below(3)):
            op = rng.below(4)
            pos = rng.below(len(s) + 1)
            c = ALPHABET[rng.below(len(ALPHABET))]
            if op == 0:
                s = s[:pos] + c + s[pos + 1 :]
            elif op == 1:
                s = s[:pos] + c + s[pos:]
            elif op == 2:
                s = s[:pos] + s[pos + 1 :]
            else:
                s = s[:pos]
        try:
            u = url.parse(s)
        except URLError as e:
            assert e.reason.startswith("url: ")
            rejected += 1
            continue
        eq(url.parse(str(u)), u, "canonical of " + s)
        eq(str(url.parse(str(u))), str(u), "canonical is stable")
        accepted += 1
    assert accepted > 300 and rejected > 300, (accepted, rejected)
