"""firmware/board/ble.py's receive ring and chunking on the real MicroPython unix port (the
device runtime), with the same expectations as the CPython tests in test_ble_chunks.py."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from amiko_testing.micropython import micropython_binary  # noqa: E402

CODE = r"""
from board.ble import RxBuffer, chunks, advertising_payload, AMIKO_SERVICE_UUID, RX_CAPACITY
from amiko_core import frame, messages as m, walletlink as wl
tap = m.to_frame(m.Message(wl.TAP, url="amikopay://127.0.0.1:1/" + "x" * 300))
stream = tap + b"garbage\x00\xff" + tap
for piece in (1, 20, 244, 514):
    rx = RxBuffer(700)
    dec = frame.FrameDecoder(4096)
    buf = bytearray(97)
    got = []
    for p in chunks(stream, piece):
        assert len(p) <= piece
        assert rx.put(p)
        n = rx.read_into(buf)
        got += dec.feed(bytes(buf[:n]))
    while True:
        n = rx.read_into(buf)
        if not n:
            break
        got += dec.feed(bytes(buf[:n]))
    assert [m.to_frame(m.from_frame(f)) for f in got] == [tap, tap], piece
rx = RxBuffer()
assert rx.put(tap)
assert not rx.put(b"\xaa" * RX_CAPACITY)
assert rx.last_error == "ble: write of %d bytes refused: %d of %d bytes free" % (
    RX_CAPACITY, RX_CAPACITY - len(tap), RX_CAPACITY), rx.last_error
out = bytearray(RX_CAPACITY)
assert bytes(out[:rx.read_into(out)]) == tap
assert len(advertising_payload(AMIKO_SERVICE_UUID, "Amiko-T1")) <= 31
print("ok")
"""


def test_ring_and_chunks_on_micropython():
    env = {"MICROPYPATH": ":".join([str(ROOT / "firmware"), str(ROOT / "shared")]), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([micropython_binary(), "-c", CODE], capture_output=True, env=env, timeout=60, cwd=str(ROOT))
    assert r.returncode == 0 and r.stdout.strip() == b"ok", (r.stdout, r.stderr)
