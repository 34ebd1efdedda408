"""The BLE framing of firmware/board/ble.py (no chunk header: pieces of the frame stream) and the
terminal's chunked writes: reassembly in any piece size, garbage and oversized GATT writes give a
clear error and lose nothing already received."""

import asyncio
import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amiko_core import frame
from amiko_core import messages as m
from amiko_core import walletlink as wl

from amiko.transports import open_transport
from amiko.transports.ble import BleTransport

_spec = importlib.util.spec_from_file_location(
    "fw_board_ble", Path(__file__).resolve().parents[2] / "firmware" / "board" / "ble.py")
fw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fw)


def tap(url="amikopay://127.0.0.1:1/x"):
    return m.to_frame(m.Message(wl.TAP, url=url))


def drain(rx, step=64):
    out = bytearray()
    buf = bytearray(step)
    while True:
        n = rx.read_into(buf)
        if not n:
            return bytes(out)
        out += buf[:n]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6), st.integers(1, 514), st.integers(1, 700))
def test_pieces_reassemble_to_the_same_frames(bodies, piece, read_size):
    frames = [m.to_frame(m.Message(wl.TAP, url="amikopay://h:1/" + b.hex())) for b in bodies]
    stream = b"".join(frames)
    rx = fw.RxBuffer(8192)
    dec = frame.FrameDecoder(4096)
    got = []
    buf = bytearray(read_size)
    for p in fw.chunks(stream, piece):
        assert len(p) <= piece
        assert rx.put(bytes(p))
        n = rx.read_into(buf)
        got += dec.feed(bytes(buf[:n]))
    got += dec.feed(drain(rx))
    assert [m.to_frame(m.from_frame(f)) for f in got] == frames
    assert dec.bad_frames == 0 and rx.dropped_writes == 0


def test_ring_wraps_around_without_losing_order():
    rx = fw.RxBuffer(10)
    out = bytearray()
    for i in range(50):
        assert rx.put(bytes([i, i + 1, i + 2]))
        out += drain(rx, 2)
    assert bytes(out) == b"".join(bytes([i, i + 1, i + 2]) for i in range(50))


def test_oversized_write_is_refused_whole_and_nothing_is_lost():
    rx = fw.RxBuffer(fw.RX_CAPACITY)
    first = tap()
    assert rx.put(first)
    big = b"\xaa" * (fw.RX_CAPACITY - len(first) + 1)
    assert rx.put(big) is False
    assert rx.dropped_writes == 1
    assert rx.last_error == "ble: write of %d bytes refused: %d of %d bytes free" % (
        len(big), fw.RX_CAPACITY - len(first), fw.RX_CAPACITY)
    second = tap("amikopay://127.0.0.1:2/y")
    assert rx.put(second)
    dec = frame.FrameDecoder(4096)
    frames = dec.feed(drain(rx))
    assert [bytes(m.to_frame(m.from_frame(f))) for f in frames] == [first, second]
    assert dec.bad_frames == 0


def test_garbage_between_frames_is_reported_and_the_next_frame_passes():
    rx = fw.RxBuffer()
    dec = frame.FrameDecoder(4096)
    good = tap()
    cut = good[:len(good) // 2]  # a piece lost with a dropped link: the rest never comes
    for piece in (good, b"\x00\xff garbage \x03\x03", cut, b"\xfe" * 300, good):
        for p in fw.chunks(piece, 20):
            assert rx.put(bytes(p))
    frames = dec.feed(drain(rx))
    assert len(frames) == 2 and all(m.from_frame(f).type == wl.TAP for f in frames)
    assert dec.bad_frames >= 1 and dec.last_error


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk size must be at least 1"):
        fw.chunks(b"abc", 0)


def test_advertising_payload_fits_legacy_advertising():
    for name in ("", "Amiko-T1", "Amiko-a-very-long-wallet-name"):
        adv = fw.advertising_payload(fw.AMIKO_SERVICE_UUID, name)
        assert len(adv) <= 31
        assert fw._uuid128_le(fw.AMIKO_SERVICE_UUID) in adv
    assert adv.endswith(b"\x09\x08Amiko-a-")  # shortened name
    assert fw.advertising_payload(fw.AMIKO_SERVICE_UUID, "Amiko-T1").endswith(b"\x09\x09Amiko-T1")
    assert len(fw.scan_response("x" * 40)) == 31


class FakeChar:
    max_write_without_response_size = 20


class FakeClient:
    def __init__(self):
        self.writes = []

    async def write_gatt_char(self, char, data, response):
        assert response is False
        if len(data) > char.max_write_without_response_size:
            raise AssertionError("oversized write")
        self.writes.append(bytes(data))

    async def disconnect(self):
        pass


def test_terminal_writes_in_pieces_of_max_write_without_response_size():
    async def go():
        t = BleTransport("Amiko-T1")
        client = FakeClient()
        t.client, t.rx_char = client, FakeChar()
        t._out_ready = asyncio.Event()
        t._writer = asyncio.ensure_future(t._write_loop())
        frames = [tap(), tap("amikopay://127.0.0.1:3/" + "z" * 100)]
        for f in frames:
            t.write(f)
        t._out_ready.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not t.outbox and sum(map(len, client.writes)) == sum(map(len, frames)):
                break
        await t.aclose()
        return client.writes, frames

    writes, frames = asyncio.run(go())
    assert all(len(w) <= 20 for w in writes)
    assert b"".join(writes) == b"".join(frames)


def test_spec_parsing():
    t = open_transport("ble:Amiko-T1?hci=tcp-client:127.0.0.1:4000&timeout=3")
    assert (t.target, t.hci, t.timeout, t.by_address) == ("Amiko-T1", "tcp-client:127.0.0.1:4000", 3.0, False)
    t = open_transport("ble:C0:11:22:33:44:55")
    assert t.by_address and t.hci is None
    with pytest.raises(ValueError, match="unknown ble option"):
        open_transport("ble:x?colour=red")
    with pytest.raises(ValueError, match="timeout must be a number"):
        open_transport("ble:x?timeout=soon")
    with pytest.raises(ValueError, match="give the wallet's name or address"):
        open_transport("ble:")
