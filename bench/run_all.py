"""Runs every benchmark in turn (`make bench`); each writes its own section of bench/RESULTS.md.

Usage: .venv/bin/python bench/run_all.py [NAME ...]   (names: core, wallet, node, terminal, chaos)
Benchmarks take minutes each on a 2-core machine; run them on a quiet machine.
"""

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["core", "node", "wallet", "terminal", "chaos"]


def main(argv):
    names = argv or [n for n in ORDER if (HERE / (n + ".py")).exists()]
    failed = []
    for name in names:
        script = HERE / (name + ".py")
        if not script.exists():
            raise SystemExit("no benchmark %s (have: %s)" % (name, ", ".join(n for n in ORDER if (HERE / (n + ".py")).exists())))
        print("== bench/%s.py" % name, flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)])
        print("== bench/%s.py exit %d after %.0f s" % (name, rc, time.monotonic() - t0), flush=True)
        if rc:
            failed.append(name)
    if failed:
        raise SystemExit("failed: " + ", ".join(failed))


if __name__ == "__main__":
    main(sys.argv[1:])
