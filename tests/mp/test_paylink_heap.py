"""A complete payer+payee exchange through encoded frames, measuring the heap.

Run under a small heap by tests/core/test_paylink_heap.py (micropython -X heapsize=...,
from .mpy and from source); prints the peak heap the exchange needs above the baseline
after imports. Imports only the core and paylink_exchange, nothing else of the tests.
Start-up is a device's: the link buffers first, then the core one module at a time with a
collection after each; the exchange itself then runs without any explicit collection
except the measuring one after each input (on_step).
"""

import gc

from amiko_core.frame import FrameDecoder

# As a device does: the link's receive buffers (max_frame bytes each, one contiguous
# block) are allocated at start-up, while the heap is still in one piece; loading the
# rest of the core leaves free memory in small pieces between the modules' objects.
DECODERS = {"payer": FrameDecoder(512), "payee": FrameDecoder(512)}

# Then the rest of the core, one module at a time with a collection after each (the usual
# start-up of a MicroPython application): each import's garbage is freed before the next
# module loads, so the modules' objects pack into the low heap and leave the top free.
for _name in ("cbor", "hashing", "token", "messages", "paylink"):
    __import__("amiko_core." + _name)
    gc.collect()
del _name

import paylink_exchange  # noqa: E402

TOKEN = bytes(range(1, 33))


def test_exchange_in_small_heap():
    gc.collect()
    base = gc.mem_alloc()
    peak = [0]

    def measure():
        # Allocated since the last collect (live + garbage) is the high-water mark of the step.
        used = gc.mem_alloc() - base
        if used > peak[0]:
            peak[0] = used
        gc.collect()

    result = paylink_exchange.exchange_through_frames(TOKEN, on_step=measure, decoders=DECODERS)
    if result["outcomes"] != {"payer": "committed", "payee": "committed"}:
        raise AssertionError("outcomes %r" % result["outcomes"])
    if result["payer"].token != TOKEN:
        raise AssertionError("payer did not get the token")
    heap_total = gc.mem_alloc() + gc.mem_free()
    print("paylink exchange: %d frames, %d bytes on the wire" % (len(result["frames"]), result["bytes"]))
    print("paylink peak heap: %d bytes above baseline %d (gc.mem_alloc high-water per step), heap %d"
          % (peak[0], base, heap_total))
    try:
        import micropython

        micropython.mem_info()  # GC heap total / used / free at the end
    except ImportError:
        pass
