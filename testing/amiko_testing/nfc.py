"""Simulated PN532 (its own process) and firmware NFC cards on it, for the NFC end-to-end tests."""

import json
import os
import socket
import subprocess
import sys

from amiko_testing.paths import ROOT
from amiko_testing.waits import wait_for

CARD_ECHO = ROOT / "tests" / "nfc" / "card_echo.py"  # a MicroPython script: stays with the NFC tests

MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(cond, timeout=20, what="condition", step=0.02):
    return wait_for(cond, timeout, what, delay=step, max_delay=step)


class Sim:
    """`python -m amiko.emulate.pn532_sim` on a free udp port; leave()/enter()/stats()."""

    def __init__(self, port=None):
        self.port = port or free_udp_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = "%s:%s" % (ROOT / "host", ROOT / "shared")
        self.proc = subprocess.Popen([sys.executable, "-m", "amiko.emulate.pn532_sim", "--udp",
                                      "127.0.0.1:%d" % self.port], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        info = json.loads(self.proc.stdout.readline())
        self.uart = info["uart"]
        self.spec = "nfc:udp:127.0.0.1:%d" % self.port

    def _cmd(self, word):
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def leave(self):
        return self._cmd("leave")

    def enter(self):
        return self._cmd("enter")

    def stats(self):
        return self._cmd("stats")

    def stop(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class EchoCard:
    """tests/nfc/card_echo.py on MicroPython: the firmware's card, echoing."""

    def __init__(self, sim, aid_hex=None):
        argv = [str(MICROPYTHON), str(CARD_ECHO), sim.uart] + ([aid_hex] if aid_hex else [])
        self.proc = subprocess.Popen(argv, env={"MICROPYPATH": "%s:%s" % (ROOT / "firmware", ROOT / "shared")},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", line + self.proc.stdout.read()

    def stop(self):
        self.proc.kill()
        self.proc.wait()
