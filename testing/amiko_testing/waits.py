"""Waits for tests: amiko.waits failing the test (AssertionError) when time runs out, and
run(coro) for the tests of asyncio code."""

import asyncio

from amiko import waits


def wait_for(condition, timeout=30, what="condition", ignore=(), delay=0.02, max_delay=0.5):
    return waits.wait_for(condition, timeout, what, error=AssertionError, ignore=ignore, delay=delay,
                          max_delay=max_delay)


async def wait_until(condition, what="condition", timeout=10.0):
    return await waits.wait_until(condition, timeout, what, error=AssertionError)


def run(coro, timeout=45):
    """Run coro on a fresh event loop; fail if it takes longer than timeout seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
