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
    import micropython

    import paylink_driver

    token = bytes(range(1, 33))
    gc.collect()
    before = micropython.mem_peak()
    result = paylink_driver.exchange_through_frames(token)
    assert result["outcomes"] == {"payer": "committed", "payee": "committed"}
    print(json.dumps({"kind": "exchange", "frames": len(result["frames"]), "wire_bytes": result["bytes"],
                      "mem_peak_before": before, "mem_peak_after": micropython.mem_peak()}))


bench_messages()
bench_hash160()
bench_exchange_heap()
