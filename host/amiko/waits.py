"""Waiting for a condition: poll with a short, growing interval until it holds or a deadline passes.

The one implementation behind the demo, the benchmarks and the tests (amiko_testing.waits)."""

import asyncio
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


async def wait_until(condition, timeout, what, error=TimeoutError, delay=0.002, max_delay=0.05):
    """wait_for inside an event loop: polls without blocking it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = condition()
        if last:
            return last
        if loop.time() > deadline:
            raise error("timed out after %s s waiting for %s (last: %r)" % (timeout, what, last))
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, max_delay)
