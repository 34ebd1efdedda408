"""Core benchmark under the MicroPython unix port. Prints one JSON object per line.

Run through bench/core.py (it sets MICROPYPATH). Timings use time.ticks_us;
each figure is the median of REPEAT runs of a batch of BATCH operations.
"""

import gc
import json
import time

from amiko_core import frame, hashing, messages
from messages_sample import samples

REPEAT = 15
BATCH = 50


def median_us(fn):
    runs = []
    for _ in range(REPEAT):
        t0 = time.ticks_us()
        for _ in range(BATCH):
            fn()
        runs.append(time.ticks_diff(time.ticks_us(), t0) / BATCH)
    runs.sort()
    return runs[len(runs) // 2]


def bench_messages():
    for name, msg, _ in samples():
        data = messages.to_frame(msg)

        def decode():
            dec = frame.FrameDecoder()
            for f in dec.feed(data):
                messages.from_frame(f)

        print(json.dumps({"kind": "message", "name": name,
                          "encode_us": median_us(lambda: messages.to_frame(msg)),
                          "decode_us": median_us(decode)}))


def bench_hash160():
    token = bytes(range(32))
    print(json.dumps({"kind": "hash160", "us": median_us(lambda: hashing.hash160(token))}))


def bench_exchange_heap():
    # micropython.mem_peak() is not a GC-heap figure on the unix port (it reports ~99 MB);
    # as tests/mp/test_paylink_heap.py: gc.mem_alloc() high-water above the heap in use
    # after the imports, sampled after every input (garbage included), collecting each time.
    import paylink_exchange

    token = bytes(range(1, 33))
    gc.collect()
    base = gc.mem_alloc()
    peak = [0]

    def measure():
        used = gc.mem_alloc() - base
        if used > peak[0]:
            peak[0] = used
        gc.collect()

    result = paylink_exchange.exchange_through_frames(token, on_step=measure)
    assert result["outcomes"] == {"payer": "committed", "payee": "committed"}
    gc.collect()
    print(json.dumps({"kind": "exchange", "frames": len(result["frames"]), "wire_bytes": result["bytes"],
                      "heap_after_imports": base, "exchange_peak": peak[0]}))


bench_messages()
bench_hash160()
bench_exchange_heap()
