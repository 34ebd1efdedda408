"""Waiting for a condition: poll with a short, growing interval until it holds or a deadline passes.

The one implementation behind the demo, the benchmarks and the tests (amiko_testing.waits)."""

import time


def wait_for(condition, timeout, what, error=TimeoutError, ignore=(), delay=0.02, max_delay=0.5):
    """Return condition()'s first true value; raise error("timed out ... (last: ...)") after
    timeout seconds. Exceptions of the types in ignore count as a false value (e.g. a node
    still starting)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = condition()
        except ignore as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise error("timed out after %s s waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(delay)
        delay = min(delay * 1.5, max_delay)
