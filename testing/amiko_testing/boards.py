"""Helpers for the virtual-board tests: a started VirtualBoard, mpremote, the serial port."""

import subprocess
import sys
import time
from pathlib import Path

import serial

from amiko_testing import waits

BIN = Path(sys.executable).parent


def mpremote(pty, *args, timeout=30):
    return subprocess.run([str(BIN / "mpremote"), "connect", pty] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def amiko(*args, timeout=60):
    return subprocess.run([str(BIN / "amiko")] + list(args), capture_output=True, text=True, timeout=timeout)


def read_until(port, ending, timeout=5.0):
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(ending) and ending not in data:
        if time.monotonic() > deadline:
            raise AssertionError("timeout waiting for %r; got %r" % (ending, data))
        data += port.read(1)
    return data


def open_port(pty):
    return serial.Serial(pty, timeout=0.05, exclusive=True)


def wait_for(predicate, timeout=10.0, what="condition"):
    return waits.wait_for(predicate, timeout, what, max_delay=0.02)
