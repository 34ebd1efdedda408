"""amiko_core.frame on MicroPython (and CPython): shared vectors, byte-at-a-time
feeding, a seeded random-mutation loop, the CRC-32 fallback, allocation bounds."""

import binascii
import gc

from mptest import XorShift32, eq, raises, unhex, vectors

from amiko_core import frame as fr
from amiko_core.errors import DecodeError, EncodeError

V = vectors("frame")


def _frame(d):
    return fr.Frame(d["version"], d["type"], unhex(d["body"]))


def _feed_all(decoder, chunks):
    out = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


def _check_accounting(decoder, fed, frames, what):
    delivered = 0
    for f in frames:
        if not isinstance(f, fr.Frame):
            raise AssertionError("%s: not a Frame: %r" % (what, f))
        delivered += fr.OVERHEAD + len(f.body)
    eq(delivered + decoder.dropped_bytes + decoder.pending(), fed, what + " accounting")
    if decoder.pending() > decoder.max_frame:
        raise AssertionError("%s: pending %d over max_frame" % (what, decoder.pending()))



def test_constants():
    eq(fr.PROTOCOL_VERSION, 1, "version")
    eq(fr.MAGIC, b"\xa5\x4b", "magic")
    eq(fr.OVERHEAD, 11, "overhead")
    eq(fr.DEFAULT_MAX_FRAME, 4096, "max frame")


def test_crc_vectors():
    for v in V["crc"]:
        data = unhex(v["data"])
        eq(fr.crc8(data), v["crc8"], "crc8 " + v["data"][:16])
        eq(fr.crc32(data) & 0xFFFFFFFF, v["crc32"], "crc32 " + v["data"][:16])
        eq(fr.crc32_py(data), v["crc32"], "crc32_py " + v["data"][:16])


def test_crc32_fallback_equals_binascii():
    rng = XorShift32(0xC0FFEE)
    for n in (0, 1, 2, 3, 7, 64, 255, 1000):
        data = rng.bytes(n)
        for start in (0, 1, 0xFFFFFFFF, rng.next()):
            eq(fr.crc32_py(data, start), binascii.crc32(data, start), "crc32_py len %d start %d" % (n, start))


def test_valid_vectors():
    for v in V["valid"]:
        data = unhex(v["frame"])
        body = unhex(v["body"])
        eq(fr.encode(v["type"], body, v["version"]), data, "encode " + v["name"])
        got = fr.decode_one(data)
        eq(got, fr.Frame(v["version"], v["type"], body), "decode_one " + v["name"])
        eq(fr.FrameDecoder().feed(data), [got], "decoder " + v["name"])


def _run_stream(v, one_byte):
    d = fr.FrameDecoder(v.get("max_frame", fr.DEFAULT_MAX_FRAME))
    chunks = [unhex(c) for c in v["chunks"]]
    if one_byte:
        data = b"".join(chunks)
        chunks = [data[i : i + 1] for i in range(len(data))]
    got = _feed_all(d, chunks)
    what = v["name"] + (" (1 byte at a time)" if one_byte else "")
    eq(got, [_frame(f) for f in v["frames"]], what + " frames")
    eq(d.dropped_bytes, v["dropped"], what + " dropped")
    eq(d.bad_frames, v["bad_frames"], what + " bad_frames")
    eq(d.pending(), v["pending"], what + " pending")
    if v["last_error"] is None:
        eq(d.last_error, None, what + " last_error")
    elif v["last_error"] not in d.last_error:
        raise AssertionError("%s: last_error %r" % (what, d.last_error))
    _check_accounting(d, sum(len(c) for c in chunks), got, what)


def test_stream_vectors():
    for v in V["streams"]:
        _run_stream(v, False)


def test_stream_vectors_one_byte_at_a_time():
    for v in V["streams"]:
        _run_stream(v, True)


def test_invalid_vectors():
    for v in V["invalid"]:
        e = raises(DecodeError, fr.decode_one, unhex(v["data"]), v.get("max_frame", fr.DEFAULT_MAX_FRAME))
        if v["reason"] not in e.reason:
            raise AssertionError("%s: reason %r" % (v["name"], e.reason))


def test_encode_invalid_vectors():
    for v in V["encode_invalid"]:
        args = (v["type"], bytes(v["body_len"]), v["version"], v.get("max_frame", fr.DEFAULT_MAX_FRAME))
        e = raises(EncodeError, fr.encode, *args)
        if v["reason"] not in e.reason:
            raise AssertionError("%s: reason %r" % (v["name"], e.reason))


def test_max_frame_must_be_sane():
    for bad in (0, 10, fr.MAX_FRAME_LIMIT + 1, None):
        raises(ValueError, fr.FrameDecoder, bad)
        raises(ValueError, fr.encode, 1, b"", 1, bad)


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(1 + rng.below(3)):
        op = rng.below(7)
        if op == 0 and data:  # flip one bit
            i = rng.below(len(data))
            data[i] ^= 1 << rng.below(8)
        elif op == 1 and data:  # overwrite one byte
            data[rng.below(len(data))] = rng.next() & 0xFF
        elif op == 2:  # insert random bytes, sometimes a magic
            i = rng.below(len(data) + 1)
            ins = fr.MAGIC if rng.below(2) else rng.bytes(1 + rng.below(8))
            data[i:i] = ins
        elif op == 3 and data:  # delete a range
            i = rng.below(len(data))
            data = data[:i] + data[i + 1 + rng.below(8) :]  # MicroPython bytearray has no del
        elif op == 4 and data:  # truncate
            data = data[: rng.below(len(data))]
        elif op == 5 and data:  # duplicate a range
            i = rng.below(len(data))
            data[i:i] = data[i : i + 1 + rng.below(16)]
        elif op == 6 and len(data) > 6:  # set the length field to something random
            data[4] = rng.next() & 0xFF
            data[5] = rng.next() & 0xFF
    return bytes(data)


def _bases(rng):
    out = []
    for t, n in ((0, 0), (1, 6), (21, 20), (255, 40), (16, 100)):
        out.append((t, bytes(rng.bytes(n))))
    return out


def test_random_mutations_give_frames_or_nothing():
    rng = XorShift32(20240611)
    bases = _bases(rng)
    for it in range(2500):
        max_frame = (fr.OVERHEAD, 32, 64, 4096)[rng.below(4)]
        parts = []
        for _ in range(1 + rng.below(3)):
            t, body = bases[rng.below(len(bases))]
            parts.append(fr.encode(t, body))
        stream = _mutate(rng, b"".join(parts))
        d = fr.FrameDecoder(max_frame)
        got = []
        pos = 0
        while pos < len(stream):
            n = 1 + rng.below(24)
            got += d.feed(stream[pos : pos + n])
            pos += n
        _check_accounting(d, len(stream), got, "iteration %d" % it)
        for f in got:
            if fr.OVERHEAD + len(f.body) > max_frame:
                raise AssertionError("iteration %d: frame over max_frame" % it)
        try:
            f = fr.decode_one(stream, max_frame)
            if not isinstance(f, fr.Frame):
                raise AssertionError("iteration %d: decode_one returned %r" % (it, f))
        except DecodeError:
            pass


def test_frames_between_random_garbage_are_all_found():
    rng = XorShift32(77)
    bases = _bases(rng)
    for it in range(300):
        want = []
        stream = bytearray()
        for _ in range(1 + rng.below(4)):
            garbage = rng.bytes(rng.below(40))
            if rng.below(2):  # plant magics so the garbage starts false candidates
                for _ in range(1 + rng.below(3)):
                    i = rng.below(len(garbage) + 1)
                    garbage[i:i] = fr.MAGIC
            t, body = bases[rng.below(len(bases))]
            stream += garbage
            stream += fr.encode(t, body)
            want.append(fr.Frame(1, t, body))
        stream += rng.bytes(rng.below(40))
        d = fr.FrameDecoder(256)
        got = []
        pos = 0
        while pos < len(stream):
            n = 1 + rng.below(64)
            got += d.feed(stream[pos : pos + n])
            pos += n
        got += d.feed(bytes(d.max_frame))  # no magic: resolves any pending candidate
        eq(got, want, "iteration %d frames" % it)
        eq(d.pending(), 0, "iteration %d pending" % it)


def test_pending_is_bounded_and_buffer_preallocated():
    d = fr.FrameDecoder(64)
    buf = d._buf
    header = bytearray(b"\xa5\x4b\x01\x01\x00\x35")  # 53-byte body: a 64-byte frame
    header.append(fr.crc8(header))
    d.feed(bytes(header) + bytes(56))
    eq(d.pending(), 63, "pending of an incomplete 64-byte frame")
    eq(d.feed(b"\x00"), [], "bad CRC-32 frame")
    eq(d.pending(), 0, "pending after refusal")
    for _ in range(50):
        d.feed(b"\xa5\x4b" * 40)
        if d.pending() > 64:
            raise AssertionError("pending %d over max_frame" % d.pending())
    if d._buf is not buf or len(buf) != 64:
        raise AssertionError("decoder buffer was replaced or resized")


def _allocated(fn, *args):
    """Bytes allocated while fn runs (MicroPython: gc.mem_alloc with gc off; CPython: tracemalloc peak)."""
    if hasattr(gc, "mem_alloc"):
        gc.collect()
        gc.disable()
        try:
            before = gc.mem_alloc()
            fn(*args)
            return gc.mem_alloc() - before
        finally:
            gc.enable()
    import tracemalloc

    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_no_per_byte_allocation():
    d = fr.FrameDecoder()
    garbage = bytes((i * 7) % 0xA0 for i in range(4000))  # no 0xA5: pure garbage
    used = _allocated(d.feed, garbage)
    if used > 1024:
        raise AssertionError("feeding 4000 garbage bytes allocated %d bytes" % used)
    partial = fr.encode(3, bytes(3000))[:-1]
    used = _allocated(d.feed, partial)
    if used > 1024:
        raise AssertionError("buffering a 3010-byte partial frame allocated %d bytes" % used)
    eq(d.pending(), len(partial), "pending partial frame")
