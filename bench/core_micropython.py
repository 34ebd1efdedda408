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
    import micropython  # noqa: F401  (unix port: gc.mem_alloc is the live heap)
    import paylink_exchange

    gc.collect()
    base = gc.mem_alloc()
    peak = paylink_exchange.run_exchange(track_peak=True)
    print(json.dumps({"kind": "exchange_heap", "baseline_bytes": base, "peak_bytes": peak,
                      "peak_above_baseline": peak - base}))


bench_messages()
bench_hash160()
bench_exchange_heap()
