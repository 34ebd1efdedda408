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
