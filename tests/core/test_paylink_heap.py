"""A complete payer+payee exchange through encoded frames in a small MicroPython heap.

The core is compiled with mpy-cross, as it would be loaded on a device. HEAPSIZE is not
64k: after gc, the imported core alone (cbor, url, frame, messages, hashing, token,
paylink) keeps about 75 KiB of bytecode and tables on the heap even from .mpy files, so
no exchange can run in 64k on the unix port. On a device the modules are frozen into
flash and that part does not count. The exchange itself must stay under EXCHANGE_BUDGET
bytes above the heap in use after the imports.
"""

import re

from micropython_runner import compile_to_mpy, run_mp_tests, ROOT

HEAPSIZE = "128k"
EXCHANGE_BUDGET = 32 * 1024


def test_exchange_in_small_heap(tmp_path):
    assert compile_to_mpy(ROOT / "shared" / "amiko_core", tmp_path)
    result = run_mp_tests(["test_paylink_heap"], path=[tmp_path], heapsize=HEAPSIZE)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1 passed, 0 failed", result.stdout
    peak = re.search(r"paylink peak heap: (\d+) bytes", result.stdout)
    assert peak, result.stdout
    assert 0 < int(peak.group(1)) <= EXCHANGE_BUDGET, result.stdout
