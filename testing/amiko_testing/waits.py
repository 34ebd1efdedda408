"""Waits for tests: amiko.waits.wait_for failing the test (AssertionError) when time runs out."""

from amiko.waits import wait_for as _wait_for


def wait_for(condition, timeout=30, what="condition", ignore=(), delay=0.02, max_delay=0.5):
    return _wait_for(condition, timeout, what, error=AssertionError, ignore=ignore, delay=delay,
                     max_delay=max_delay)
