"""A minimal test runner that works under MicroPython and CPython.

MicroPython has no pytest, so tests of shared/ and firmware/ code that must
run on the device runtime are plain modules of `test_*` functions. They read
the same JSON vectors (tests/vectors/) that the CPython tests read.

Usage: micropython tests/mp/run.py [--vectors DIR] MODULE [MODULE ...]
"""

import sys

try:
    from binascii import unhexlify
except ImportError:  # pragma: no cover - both runtimes have binascii
    unhexlify = None

VECTORS_DIR = "tests/vectors"


def vectors(name):
    import json

    with open(VECTORS_DIR + "/" + name + ".json") as f:
        return json.load(f)


def unhex(s):
    return unhexlify(s)


def from_json(v):
    """Tagged CBOR vector value -> value: {"bytes": hex}, {"map": [[k, v], ...]}, else as is."""
    if isinstance(v, dict):
        if "bytes" in v:
            return unhex(v["bytes"])
        return {from_json(k): from_json(x) for k, x in v["map"]}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def untag(v):
    """Tagged message-field vector value -> value: {"hex": hex} is bytes, other dicts recurse."""
    if isinstance(v, dict):
        if "hex" in v:
            return unhex(v["hex"])
        return {k: untag(v[k]) for k in v}
    if isinstance(v, list):
        return [untag(x) for x in v]
    return v


def strict_eq(a, b):
    """Equality that tells 1 from True and bytes from str, also inside containers and map keys."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        if len(a) != len(b):
            return False
        for i in range(len(a)):
            if not strict_eq(a[i], b[i]):
                return False
        return True
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for k in a:
            if k not in b or not strict_eq(a[k], b[k]):
                return False
            for k2 in b:
                if k2 == k and type(k2) is not type(k):
                    return False
        return True
    return a == b


class XorShift32:
    """A seeded 32-bit xorshift: the same sequence on MicroPython and CPython (seed 0 acts as 1)."""

    def __init__(self, seed):
        self.state = (seed & 0xFFFFFFFF) or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        return self.next() % n

    def bytes(self, n):
        out = bytearray(n)
        for i in range(n):
            out[i] = self.next() & 0xFF
        return out


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it did not raise exc_type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("%s did not raise %s" % (fn, exc_type.__name__))


def eq(got, want, what=""):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def _print_exception(e):
    if hasattr(sys, "print_exception"):
        sys.print_exception(e)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)


def run(module_names):
    passed = 0
    failed = 0
    for name in module_names:
        mod = __import__(name)
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_"):
                continue
            fn = getattr(mod, attr)
            try:
                fn()
                passed += 1
            except Exception as e:
                failed += 1
                print("FAIL %s.%s" % (name, attr))
                _print_exception(e)
    print("%d passed, %d failed" % (passed, failed))
    return failed
