"""A complete payer+payee exchange through encoded frames, measuring the heap.

Run under a small heap by tests/core/test_paylink_heap.py (micropython -X heapsize=64k);
prints the peak heap the exchange needs above the baseline after imports.
"""

import gc

import paylink_driver

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

    result = paylink_driver.exchange_through_frames(TOKEN, on_step=measure)
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
