"""amiko_core.frame on CPython: shared vectors plus property tests."""

import binascii
import json
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amiko_core import frame as fr
from amiko_core.errors import DecodeError, EncodeError

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "frame.json").read_text())
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def as_frame(d):
    return fr.Frame(d["version"], d["type"], bytes.fromhex(d["body"]))


def feed_all(decoder, chunks):
    out = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


def flush(decoder):
    """Feed max_frame zero bytes (no magic): every pending candidate is resolved."""
    return decoder.feed(bytes(decoder.max_frame))


def check_accounting(decoder, fed, frames):
    delivered = sum(fr.OVERHEAD + len(f.body) for f in frames)
    assert fed == delivered + decoder.dropped_bytes + decoder.pending()
    assert 0 <= decoder.pending() <= decoder.max_frame


# --- vectors ---------------------------------------------------------------


def test_constants():
    assert fr.PROTOCOL_VERSION == 1
    assert fr.MAGIC == b"\xa5\x4b"
    assert fr.OVERHEAD == 11
    assert fr.DEFAULT_MAX_FRAME == 4096


@pytest.mark.parametrize("v", VECTORS["crc"], ids=lambda v: v["data"][:16] or "empty")
def test_crc_vectors(v):
    data = bytes.fromhex(v["data"])
    assert fr.crc8(data) == v["crc8"]
    assert fr.crc32(data) & 0xFFFFFFFF == v["crc32"]
    assert fr.crc32_py(data) == v["crc32"]


@pytest.mark.parametrize("v", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vectors(v):
    data = bytes.fromhex(v["frame"])
    body = bytes.fromhex(v["body"])
    assert fr.encode(v["type"], body, v["version"]) == data
    got = fr.decode_one(data)
    assert got == fr.Frame(v["version"], v["type"], body)
    assert isinstance(got.body, bytes)
    assert fr.FrameDecoder().feed(data) == [got]


@pytest.mark.parametrize("v", VECTORS["streams"], ids=lambda v: v["name"])
def test_stream_vectors(v):
    d = fr.FrameDecoder(v.get("max_frame", fr.DEFAULT_MAX_FRAME))
    chunks = [bytes.fromhex(c) for c in v["chunks"]]
    got = feed_all(d, chunks)
    assert got == [as_frame(f) for f in v["frames"]]
    assert d.dropped_bytes == v["dropped"]
    assert d.bad_frames == v["bad_frames"]
    assert d.pending() == v["pending"]
    if v["last_error"] is None:
        assert d.last_error is None
    else:
        assert v["last_error"] in d.last_error
    check_accounting(d, sum(len(c) for c in chunks), got)


@pytest.mark.parametrize("v", VECTORS["streams"], ids=lambda v: v["name"])
def test_stream_vectors_one_byte_at_a_time(v):
    d = fr.FrameDecoder(v.get("max_frame", fr.DEFAULT_MAX_FRAME))
    data = b"".join(bytes.fromhex(c) for c in v["chunks"])
    got = feed_all(d, [data[i : i + 1] for i in range(len(data))])
    assert got == [as_frame(f) for f in v["frames"]]
    assert (d.dropped_bytes, d.bad_frames, d.pending()) == (v["dropped"], v["bad_frames"], v["pending"])


@pytest.mark.parametrize("v", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vectors(v):
    with pytest.raises(DecodeError) as e:
        fr.decode_one(bytes.fromhex(v["data"]), v.get("max_frame", fr.DEFAULT_MAX_FRAME))
    assert v["reason"] in e.value.reason


@pytest.mark.parametrize("v", VECTORS["encode_invalid"], ids=lambda v: v["name"])
def test_encode_invalid_vectors(v):
    with pytest.raises(EncodeError) as e:
        fr.encode(v["type"], bytes(v["body_len"]), v["version"], v.get("max_frame", fr.DEFAULT_MAX_FRAME))
    assert v["reason"] in e.value.reason


# --- unit ------------------------------------------------------------------


def test_encode_refuses_bool_type_and_non_bytes_body():
    with pytest.raises(EncodeError):
        fr.encode(True, b"")
    with pytest.raises(EncodeError, match="body must be bytes"):
        fr.encode(1, "text")
    assert fr.encode(1, bytearray(b"ab")) == fr.encode(1, memoryview(b"ab")) == fr.encode(1, b"ab")


@pytest.mark.parametrize("bad", [0, 10, fr.MAX_FRAME_LIMIT + 1, "4096", None])
def test_max_frame_must_be_sane(bad):
    with pytest.raises(ValueError):
        fr.FrameDecoder(bad)
    with pytest.raises(ValueError):
        fr.encode(1, b"", max_frame=bad)
    with pytest.raises(ValueError):
        fr.decode_one(fr.encode(1, b""), max_frame=bad)


def test_max_frame_limits_and_largest_body():
    assert len(fr.encode(1, b"", max_frame=fr.OVERHEAD)) == fr.OVERHEAD
    body = bytes(0xFFFF)
    data = fr.encode(1, body, max_frame=fr.MAX_FRAME_LIMIT)
    assert len(data) == fr.MAX_FRAME_LIMIT
    assert fr.decode_one(data, fr.MAX_FRAME_LIMIT).body == body
    with pytest.raises(DecodeError, match="over max frame"):
        fr.decode_one(data)
    d = fr.FrameDecoder(fr.MAX_FRAME_LIMIT)
    assert d.feed(data) == [fr.Frame(1, 1, body)]


def test_max_frame_is_per_decoder():
    data = fr.encode(1, bytes(100))
    small, default = fr.FrameDecoder(110), fr.FrameDecoder()
    assert small.feed(data) == [] and small.bad_frames == 1 and "over max frame" in small.last_error
    assert default.feed(data) == [fr.Frame(1, 1, bytes(100))]
    assert fr.FrameDecoder(111).feed(data) == [fr.Frame(1, 1, bytes(100))]


def test_frame_equality_and_repr():
    a = fr.Frame(1, 2, b"\x01")
    assert a == fr.Frame(1, 2, b"\x01")
    assert a != fr.Frame(1, 3, b"\x01") and a != fr.Frame(2, 2, b"\x01") and a != fr.Frame(1, 2, b"")
    assert a != (1, 2, b"\x01")
    assert repr(a) == "Frame(version=1, type=2, body=01)"


def test_crc32_py_matches_zlib_with_start_value():
    for data in (b"", b"a", b"abc" * 100, bytes(range(256))):
        for start in (0, 1, 0xFFFFFFFF, 0x12345678):
            assert fr.crc32_py(data, start) == zlib.crc32(data, start) == binascii.crc32(data, start)


def test_decoder_buffer_is_preallocated():
    d = fr.FrameDecoder(64)
    buf = d._buf
    d.feed(bytes(range(256)) * 10 + fr.encode(1, b"x" * 40) * 3)
    assert d._buf is buf and len(buf) == 64


# --- properties ------------------------------------------------------------

frames_st = st.lists(
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300)), min_size=1, max_size=6
)


@SETTINGS
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=fr.DEFAULT_MAX_FRAME - fr.OVERHEAD))
def test_round_trip(mtype, version, body):
    data = fr.encode(mtype, body, version)
    assert len(data) == fr.OVERHEAD + len(body)
    assert fr.decode_one(data) == fr.Frame(version, mtype, body)
    assert fr.FrameDecoder().feed(data) == [fr.Frame(version, mtype, body)]


@SETTINGS
@given(frames_st, st.data())
def test_any_chunking_gives_the_same_frames(items, data):
    stream = b"".join(fr.encode(t, b, v) for t, v, b in items)
    want = [fr.Frame(v, t, b) for t, v, b in items]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    d = fr.FrameDecoder()
    assert feed_all(d, chunks) == want
    assert (d.dropped_bytes, d.bad_frames, d.pending()) == (0, 0, 0)


@SETTINGS
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), max_size=10), st.integers(fr.OVERHEAD, 600))
def test_any_bytes_give_frames_or_nothing(data, sizes, max_frame):
    d = fr.FrameDecoder(max_frame)
    got, pos = [], 0
    for size in sizes + [len(data)]:
        got += d.feed(data[pos : pos + size])
        pos += size
        assert d.pending() <= max_frame
    assert all(isinstance(f, fr.Frame) for f in got)
    check_accounting(d, len(data), got)
    try:
        fr.decode_one(data, max_frame)
    except DecodeError:
        pass


@SETTINGS
@given(st.binary(max_size=600), st.integers(0, 255), st.binary(max_size=200), st.binary(max_size=600), st.data())
def test_valid_frame_is_found_between_garbage(before, mtype, body, after, data):
    stream = before + fr.encode(mtype, body) + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    d = fr.FrameDecoder()
    got = feed_all(d, [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])])
    got += flush(d)
    assert fr.Frame(1, mtype, body) in got
    check_accounting(d, len(stream) + d.max_frame, got)


@SETTINGS
@given(st.binary(min_size=1, max_size=200), st.integers(0, 255), st.binary(max_size=200))
def test_valid_frame_after_garbage_with_magics(junk, mtype, body):
    # garbage dense in magic bytes and plausible headers
    garbage = junk.replace(b"\x00", fr.MAGIC).replace(b"\x01", fr.MAGIC + b"\x01")
    d = fr.FrameDecoder()
    got = d.feed(garbage + fr.encode(mtype, body)) + flush(d)
    assert fr.Frame(1, mtype, body) in got


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=100), st.data())
def test_single_bit_flips_are_detected(mtype, body, data):
    frame = bytearray(fr.encode(mtype, body))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecodeError):
        fr.decode_one(bytes(frame))
    d = fr.FrameDecoder()
    assert d.feed(bytes(frame)) + flush(d) == []
    assert d.dropped_bytes == len(frame) + d.max_frame


def test_every_single_bit_flip_of_one_frame_is_detected():
    frame = fr.encode(21, bytes(range(40)))
    for bit in range(len(frame) * 8):
        bad = bytearray(frame)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecodeError):
            fr.decode_one(bytes(bad))


@SETTINGS
@given(st.integers(fr.OVERHEAD, 300), st.lists(st.binary(max_size=400), max_size=20))
def test_memory_is_bounded_by_max_frame(max_frame, chunks):
    d = fr.FrameDecoder(max_frame)
    fed = 0
    got = []
    for chunk in chunks:
        got += d.feed(chunk)
        fed += len(chunk)
        assert d.pending() <= max_frame
        assert len(d._buf) == max_frame
    assert all(fr.OVERHEAD + len(f.body) <= max_frame for f in got)
    check_accounting(d, fed, got)


def test_worst_case_pending_then_flush():
    # a header claiming the largest allowed body keeps max_frame - 1 bytes pending, never more
    d = fr.FrameDecoder(100)
    header = bytearray(b"\xa5\x4b\x01\x01\x00\x59")
    header.append(fr.crc8(header))
    assert d.feed(bytes(header) + bytes(92)) == []
    assert d.pending() == 99
    assert d.feed(b"\x00") == [] and d.bad_frames == 1 and "CRC-32" in d.last_error
    assert d.pending() == 0 and d.dropped_bytes == 100
