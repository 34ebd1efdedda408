"""The one condition wait (amiko.waits) behind the demo, the benchmarks and the tests."""

import itertools

import pytest

from amiko.waits import wait_for
from amiko_testing import leaks


def test_returns_the_first_true_value():
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 3 and "ready", 5, "three polls", delay=0.001) == "ready"


def test_times_out_with_what_and_the_last_value():
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the moon \(last: 0\)"):
        wait_for(lambda: 0, 0.05, "the moon", error=AssertionError, delay=0.01)


def test_ignored_exceptions_count_as_not_yet():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not up yet")
        return True

    assert wait_for(flaky, 5, "a node", ignore=(ConnectionError,), delay=0.001) is True
    with pytest.raises(ValueError):
        wait_for(lambda: int("x"), 5, "a number", ignore=(ConnectionError,))


def test_leak_check_flags_routes_past_their_deadlines_only():
    now = 1000.0
    status = {"pending": [
        {"txid": "aa", "up_deadline": 980.0, "down_deadline": 985.0},   # ended 15 s ago: leaked
        {"txid": "bb", "up_deadline": 995.0, "down_deadline": None},    # within the grace
        {"txid": "cc", "up_deadline": 980.0, "down_deadline": 1100.0},  # one leg still has time
        {"txid": "dd", "up_deadline": None, "down_deadline": None},     # routing: no deadline yet
    ]}
    assert [r["txid"] for r in leaks.stale_routes(status, now=now, grace=10)] == ["aa"]
