"""PN532 frame codec and APDU card checks, run unchanged on CPython (test_codec.py) and on the
MicroPython unix port (test_codec.py runs this file with MICROPYPATH=firmware:shared).
Every check_* function raises AssertionError on failure. MicroPython-compatible code only."""

from board import pn532
from board import nfc_card as nc

AID = nc.AMIKO_AID


def _frames(data):
    d = pn532.FrameDecoder()
    return d, d.feed(data)


def check_frame_roundtrip():
    for n in (0, 1, 2, 100, 253, 254, 262):
        data = bytes([(i * 7) & 0xFF for i in range(n)])
        f = pn532.encode_frame(0xD5, data)
        if n + 1 <= 255:
            assert f[3] == n + 1 and (f[3] + f[4]) & 0xFF == 0, n
        else:
            assert f[3:5] == b"\xff\xff", n
        d, out = _frames(f)
        assert out == [("frame", (0xD5, data))], (n, out)
        # byte by byte gives the same
        d = pn532.FrameDecoder()
        got = []
        for b in f:
            got.extend(d.feed(bytes([b])))
        assert got == [("frame", (0xD5, data))], n


def check_known_frames():
    # GetFirmwareVersion as in the PN532 user manual
    assert pn532.encode_frame(0xD4, b"\x02") == bytes.fromhex("0000ff02fed4022a00")
    d, out = _frames(pn532.ACK + pn532.NACK + pn532.ERROR_FRAME)
    assert out == [("ack", None), ("nack", None), ("error", None)], out


def check_oversized_frame_refused():
    try:
        pn532.encode_frame(0xD4, bytes(pn532.MAX_DATA))
        assert False, "no error"
    except ValueError:
        pass
    # a hostile extended LEN is dropped by its LCS/limit, never buffered as a frame
    hostile = b"\x00\x00\xff\xff\xff\xff\xf0\x11" + bytes(40)
    d, out = _frames(hostile + pn532.ACK)
    assert out == [("ack", None)] and d.bad == 1, (out, d.bad)


def check_garbage_and_bad_checksums():
    good = pn532.encode_frame(0xD5, b"\x87\x00abc")
    bad_lcs = bytearray(good)
    bad_lcs[4] ^= 1
    bad_dcs = bytearray(good)
    bad_dcs[-2] ^= 1
    no_post = bytearray(good)
    no_post[-1] = 0x55
    d, out = _frames(b"\xff\x00\x12junk" + bytes(bad_lcs) + bytes(bad_dcs) + bytes(no_post) + good)
    assert out == [("frame", (0xD5, b"\x87\x00abc"))], out
    assert d.bad == 3 and d.dropped > 0, (d.bad, d.dropped)
    # any byte sequence: only the decoder's own outcomes, no exception
    seed = 12345
    d = pn532.FrameDecoder()
    for _ in range(300):
        chunk = bytearray()
        for _ in range(17):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            chunk.append((seed >> 16) & 0xFF if seed & 3 else (0, 0, 0xFF)[seed % 3])
        for kind, _body in d.feed(bytes(chunk)):
            assert kind in ("ack", "nack", "error", "frame")
    assert len(d.buf) <= pn532.MAX_DATA + 10


def _select(card, aid=AID):
    return card.process(bytes([0, 0xA4, 4, 0, len(aid)]) + aid + b"\x00")


def _exchange(card, data, more=False, le=0):
    apdu = bytes([0x80, 0xE0, 1 if more else 0, 0])
    if data:
        apdu += bytes([len(data)]) + data
    return card.process(apdu + bytes([le]))


def check_select():
    c = nc.ApduCard()
    assert _select(c, b"\xa0\x00\x00\x00\x03\x10\x10") == nc.SW_NOT_FOUND
    assert not c.selected
    assert _exchange(c, b"x") == nc.SW_CONDITIONS
    assert _select(c) == nc.SW_OK and c.selected
    assert c.process(b"\x00\xa4\x05\x00\x07" + AID) == nc.SW_WRONG_P1P2


def check_chaining_both_ways():
    c = nc.ApduCard()
    _select(c)
    msg = bytes([i & 0xFF for i in range(1000)])
    for i in range(0, 1000, 200):
        more = i + 200 < 1000
        r = _exchange(c, msg[i:i + 200], more)
        if more:
            assert r == nc.SW_OK, r
            assert c.read_into(bytearray(10)) == 0  # nothing before the last block
    buf = bytearray(4096)
    n = c.read_into(buf)
    assert bytes(buf[:n]) == msg
    # answer: 600 bytes queued, short Le 00 -> 256 + 6100 (256 or more left), GET RESPONSE, ...
    c.queue(msg[:600])
    r = _exchange(c, b"")
    assert r[-2:] == b"\x61\x00" and r[:-2] == msg[:256], r[-2:]
    r = c.process(b"\x00\xc0\x00\x00\x00")
    assert r[-2:] == b"\x61\x58" and r[:-2] == msg[256:512]
    r = c.process(b"\x00\xc0\x00\x00\x10")  # Le 16 is honoured
    assert r[-2:] == b"\x61\x48" and r[:-2] == msg[512:528]
    r = _exchange(c, b"")  # a new EXCHANGE continues the queue: nothing dropped
    assert r == msg[528:600] + nc.SW_OK
    assert c.process(b"\x00\xc0\x00\x00\x00") == nc.SW_CONDITIONS
    r = c.process(b"\x00\xc0\x00\x00\x00")
    assert r == nc.SW_CONDITIONS


def check_hostile_apdus():
    c = nc.ApduCard(max_message=500)
    _select(c)
    c.queue(b"keep me")
    cases = [
        (b"", nc.SW_WRONG_LENGTH),
        (b"\x80", nc.SW_WRONG_LENGTH),
        (b"\x80\xe0\x00", nc.SW_WRONG_LENGTH),
        (b"\x80\xe0\x00\x00\x05ab", nc.SW_WRONG_LENGTH),  # Lc larger than the body
        (b"\x80\xe0\x00\x00\x02abcdef", nc.SW_WRONG_LENGTH),  # body longer than Lc + Le
        (b"\x80\xe0\x00\x00\x00\x01", nc.SW_WRONG_LENGTH),  # extended Le cut short
        (b"\x80\xe0\x00\x00\x00\x00\x05ab", nc.SW_WRONG_LENGTH),  # extended Lc larger than the body
        (b"\x80\xe0\x00\x00\x00\x00\x00\x01a", nc.SW_WRONG_LENGTH),  # extended Lc 0
        (b"\x80\xe0\x02\x00\x01a", nc.SW_WRONG_P1P2),
        (b"\x80\xe0\x00\x01\x01a", nc.SW_WRONG_P1P2),
        (b"\x80\x12\x00\x00", nc.SW_INS),
        (b"\x00\xb0\x00\x00\x10", nc.SW_INS),
        (b"\xff\xe0\x00\x00", nc.SW_CLA),
        (b"\x00\xc0\x01\x00\x00", nc.SW_WRONG_P1P2),
    ]
    for apdu, sw in cases:
        r = c.process(apdu)
        assert r == sw, (apdu, r)
    # a chained message over the limit: 6A84, the partial message dropped, the card still works
    assert _exchange(c, bytes(250), True) == nc.SW_OK
    assert _exchange(c, bytes(250), True) == nc.SW_OK
    assert _exchange(c, b"x", True) == nc.SW_TOO_LONG
    assert c.inbound == bytearray() and c.read_into(bytearray(10)) == 0
    # nothing the wallet queued was lost on the way
    assert _exchange(c, b"ok") == b"keep me" + nc.SW_OK
    buf = bytearray(10)
    assert c.read_into(buf) == 2 and bytes(buf[:2]) == b"ok"
    assert c.errors == len(cases) + 1


def _exchange_ext(card, data, more=False, le=0):
    apdu = bytes([0x80, 0xE0, 1 if more else 0, 0, 0])
    if data:
        apdu += bytes([len(data) >> 8, len(data) & 0xFF]) + data
    return card.process(apdu + bytes([le >> 8, le & 0xFF]))


def check_extended_length():
    c = nc.ApduCard()
    _select(c)
    msg = bytes([(i * 5) & 0xFF for i in range(1500)])
    c.queue(msg)
    r = _exchange_ext(c, msg[:700])  # Le 0000: up to MAX_ANSWER at once
    assert r == msg + nc.SW_OK, r[-2:]
    buf = bytearray(2000)
    n = c.read_into(buf)
    assert bytes(buf[:n]) == msg[:700]
    c.queue(msg)
    r = _exchange_ext(c, b"", le=1000)  # an extended poll with Le 1000
    assert r[:-2] == msg[:1000] and r[-2:] == b"\x61\x00" and len(r) == 1002, r[-2:]
    r = c.process(b"\x00\xc0\x00\x00\x00\x00\x00")
    assert r == msg[1000:] + nc.SW_OK
    c.queue(bytes(nc.MAX_ANSWER + 10))
    r = _exchange_ext(c, b"")
    assert len(r) == nc.MAX_ANSWER + 2 and r[-2:] == b"\x61\x0a"
    assert c.errors == 0


def check_held_answer():
    c = nc.ApduCard(hold=True)
    _select(c)
    c.queue(b"old")
    assert _exchange_ext(c, b"") == b"old" + nc.SW_OK  # a poll is answered at once
    assert _exchange_ext(c, b"part", more=True) == nc.SW_OK  # and so are chained blocks
    assert _exchange_ext(c, b" two") is None and c.held is not None  # the last block waits
    buf = bytearray(20)
    n = c.read_into(buf)
    assert bytes(buf[:n]) == b"part two"
    c.queue(b"reply")
    assert c.answer_held() == b"reply" + nc.SW_OK and c.held is None
    assert _exchange_ext(c, b"x") is None
    assert _select(c) == nc.SW_OK and c.held is None  # a new contact drops the held answer


def check_new_contact_clears_state():
    c = nc.ApduCard()
    _select(c)
    _exchange(c, b"half", True)
    c.queue(b"old answer")
    assert _select(c) == nc.SW_OK  # the next tap
    assert _exchange(c, b"new") == nc.SW_OK  # no stale answer, no stale half message
    buf = bytearray(10)
    n = c.read_into(buf)
    assert bytes(buf[:n]) == b"new"
    _exchange(c, b"half", True)
    assert _select(c, b"\x01\x02\x03\x04\x05") == nc.SW_NOT_FOUND  # another app: cleared, deselected
    assert not c.selected and c.inbound == bytearray()


class FakeBus:
    """The chip's side of the link for NfcCard, scripted: answers each command."""

    def __init__(self):
        self.rx = bytearray()
        self.sent = []
        self.dec = pn532.FrameDecoder()
        self.apdus = []  # APDUs the "reader" sends, one per TgGetData
        self.release_after = None

    def write(self, data):
        for kind, body in self.dec.feed(data):
            if kind != "frame":
                continue
            cmd, params = body[1][0], body[1][1:]
            self.sent.append((cmd, params))
            self.rx.extend(pn532.ACK)
            if cmd == 0x14:
                self.rx.extend(pn532.encode_frame(0xD5, b"\x15"))
            elif cmd == 0x8C:
                self.rx.extend(pn532.encode_frame(0xD5, b"\x8d\x04\xe0\x80"))
            elif cmd == 0x86:
                if self.apdus:
                    self.rx.extend(pn532.encode_frame(0xD5, b"\x87\x00" + self.apdus.pop(0)))
                else:
                    self.rx.extend(pn532.encode_frame(0xD5, b"\x87\x29"))
            elif cmd == 0x8E:
                self.rx.extend(pn532.encode_frame(0xD5, b"\x8f\x00"))

    def read_into(self, buf):
        n = min(len(buf), len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n


def check_nfc_card_over_chip():
    bus = FakeBus()
    bus.apdus = [b"\x00\xa4\x04\x00\x07" + AID + b"\x00", b"\x80\xe0\x00\x00\x03abc\x00"]
    card = nc.NfcCard(pn532.PN532(bus))
    buf = bytearray(64)
    got = b""
    for _ in range(50):
        n = card.read_into(buf)
        got += bytes(buf[:n])
        if n:
            card.write(b"reply")  # the card held the EXCHANGE's answer: the reply goes with it
    assert got == b"abc", got
    answers = [p for c, p in bus.sent if c == 0x8E]
    assert answers[0] == b"\x90\x00" and answers[1] == b"reply\x90\x00", answers
    assert card.released >= 1  # the scripted chip then reported the target released
    assert [c for c, _ in bus.sent][:3] == [0x14, 0x8C, 0x86]
    # after the release the card re-armed (TgInitAsTarget again) and the queue was cleared
    assert [c for c, _ in bus.sent].count(0x8C) >= 2 and card.card.outbound == bytearray()


class FakePin:
    def __init__(self):
        self.v = 1

    def value(self, v=None):
        if v is not None:
            self.v = v
        return self.v


class FakeSPI:
    """A PN532 on SPI as the wire sees it: every byte LSB first (so bit-reversed for an MSB-first
    SPI); DW + frame, SR -> status, DR -> the next queued frame."""

    def __init__(self):
        self.out = bytearray()  # chip -> host bytes queued (already bit-reversed on the wire)
        self.frames = []
        self.mode = None
        self.written = []

    def write(self, data):
        data = pn532._reverse_bits(data)
        if self.mode is None or data[0] in (1, 2, 3) and len(data) == 1:
            self.mode = data[0]
        if data[0] == 1 and len(data) > 1:
            self.written.append(bytes(data[1:]))

    def read(self, n):
        if self.mode == 2:
            return pn532._reverse_bits(bytes((1 if self.frames else 0,)))
        chunk = bytes(self.frames[0][:n])
        self.frames[0] = self.frames[0][n:]
        if not self.frames[0]:
            self.frames.pop(0)
        return pn532._reverse_bits(chunk)


def check_spi_bus_frames():
    spi = FakeSPI()
    bus = pn532.SPIBus(spi, FakePin())
    chip = pn532.PN532(bus)
    chip.send(0x14, b"\x01\x14\x00")
    assert spi.written == [pn532.encode_frame(0xD4, b"\x14\x01\x14\x00")]
    big = bytes(range(256)) + bytes(5)  # a 261-byte APDU: an extended frame
    spi.frames = [bytearray(pn532.ACK), bytearray(pn532.encode_frame(0xD5, b"\x15"))]
    got = None
    for _ in range(5):
        got = got or chip.poll()
    assert got == (0x14, b"") and chip.acked
    chip.send(0x86)
    spi.frames = [bytearray(pn532.ACK), bytearray(pn532.encode_frame(0xD5, b"\x87\x00" + big))]
    got = None
    for _ in range(5):
        got = got or chip.poll()
    assert got == (0x86, b"\x00" + big), got


class LossyBus:
    """Loses the first frame the host sends; answers the second (ACK + SAMConfiguration answer).
    Starts with half a stale frame in the chip->host direction (a previous run's)."""

    def __init__(self):
        self.rx = bytearray(pn532.encode_frame(0xD5, b"\x87\x00" + bytes(100))[:40])
        self.frames = 0

    def write(self, data):
        if data == pn532.ACK:
            return
        self.frames += 1
        if self.frames >= 2:
            self.rx.extend(pn532.ACK + pn532.encode_frame(0xD5, b"\x15"))

    def read_into(self, buf):
        n = min(len(buf), len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n


def check_lost_command_is_sent_again():
    saved = pn532.ACK_TIMEOUT_MS
    pn532.ACK_TIMEOUT_MS = -1  # every empty poll counts as an ACK time-out
    try:
        bus = LossyBus()
        chip = pn532.PN532(bus)
        chip.abort()  # drains the stale half frame
        assert bus.rx == bytearray()
        chip.send(*chip.sam_configuration())
        got = None
        for _ in range(5):
            got = got or chip.poll()
        assert got == (0x14, b"") and chip.resent == 1 and bus.frames == 2, (got, chip.resent)
    finally:
        pn532.ACK_TIMEOUT_MS = saved


def run_all():
    names = [n for n in sorted(globals()) if n.startswith("check_")]
    for n in names:
        globals()[n]()
    return len(names)


if __name__ == "__main__":
    print("%d passed, 0 failed" % run_all())
