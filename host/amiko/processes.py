"""Stopping a child process the way every amiko process expects: SIGTERM, then SIGKILL."""

import signal
import subprocess


def stop(proc, timeout=10):
    """SIGTERM proc and wait up to timeout seconds, SIGKILL it if it is still running then.
    True when it ended by itself (or had already), False when it had to be killed."""
    if proc is None or proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
