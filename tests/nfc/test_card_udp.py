"""The firmware's NFC card (MicroPython, board/pn532.py + board/nfc_card.py) behind the simulated
PN532, read by nfcpy over its udp: device: the terminal's transport and raw APDUs over the air."""

import time

import nfc
import nfc.clf
import nfc.tag
import pytest

from amiko.transports import open_transport
from amiko.transports.nfc import AMIKO_AID, Reader, select_apdu

from amiko_testing.nfc import EchoCard, Sim, wait


@pytest.fixture
def sim():
    s = Sim()
    yield s
    r = Reader._readers.pop(s.spec[len("nfc:"):], None)
    if r is not None:
        r.close(wait=0.5)
    s.stop()


def read_until(t, n, timeout=20):
    """Read until n bytes came or the contact ended (read_blocking returned b"" after it)."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        data = t.read_blocking(0.5)
        if not data and t.contact is not None and t.contact.gone:
            break
        got += data
    return got


def test_big_messages_both_ways(sim):
    card = EchoCard(sim)
    try:
        t = open_transport(sim.spec)
        msg = bytes(i * 13 & 0xFF for i in range(3000))  # 3 chained EXCHANGE blocks
        t.write(msg)
        want = b"echo:" + msg[::-1]  # comes back over 61xx / GET RESPONSE
        got = read_until(t, len(want))
        assert got == want
        t.write(b"x")
        assert read_until(t, 6) == b"echo:x"
        assert sim.stats()["wtx"] >= 0 and sim.stats()["activations"] == 1
        t.close()
    finally:
        card.stop()


def test_leaves_mid_message_then_next_tap(sim):
    card = EchoCard(sim)
    try:
        t = open_transport(sim.spec)
        t.write(b"warm-up")
        assert read_until(t, 12) == b"echo:pu-mraw"
        sim._cmd("leave_after 2")  # the 2nd EXCHANGE block (of 2) of the next message is lost in the air
        t.write(bytes(2000))
        assert read_until(t, 1, timeout=15) == b""  # the contact ended: b"" like a closed port
        with pytest.raises(OSError):
            t.write(b"more")
        t.close()
        st = sim.stats()
        assert st["released"] == 1 and not st["in_field"]
        sim.enter()  # the next tap
        t2 = open_transport(sim.spec)
        t2.write(b"again")
        assert read_until(t2, 10) == b"echo:niaga"  # no byte of the half message, no stale answer
        t2.close()
        assert sim.stats()["activations"] == 2
    finally:
        card.stop()


def test_card_that_is_not_a_wallet(sim):
    other = EchoCard(sim, "A0000000031010")  # e.g. a payment card's AID: SELECT AMIKO -> 6A82
    reader = Reader.get(sim.spec[len("nfc:"):])
    try:
        wait(lambda: reader.stats["not_wallet"] >= 1, 20, "the reader to see a card that is not a wallet")
        assert reader.contact is None and reader.stats["contacts"] == 0
        seen = reader.stats["seen"]
        # left alone while it stays in the field: sensed again and again, never selected again
        wait(lambda: reader.stats["seen"] >= seen + 3, 10, "presence checks")
        assert reader.stats["not_wallet"] == 1 and sim.stats()["activations"] == 1
    finally:
        other.stop()
    sim.leave()
    wallet = EchoCard(sim)
    try:
        sim.enter()
        t = open_transport(sim.spec)
        t.write(b"hi")
        assert read_until(t, 7) == b"echo:ih"
        assert reader.stats["contacts"] == 1
        t.close()
    finally:
        wallet.stop()


def _tag(clf):
    target = None
    for _ in range(50):
        target = clf.sense(nfc.clf.RemoteTarget("106A"), iterations=1, interval=0.05)
        if target is not None:
            break
    assert target is not None, "no card in the field"
    return nfc.tag.activate(clf, target)


def test_garbage_and_oversized_apdus_over_the_air(sim):
    card = EchoCard(sim)
    clf = nfc.ContactlessFrontend("udp:127.0.0.1:%d" % sim.port)
    try:
        tag = _tag(clf)
        x = lambda apdu: bytes(tag.transceive(apdu))  # noqa: E731
        assert x(b"\x80\xe0\x00\x00\x02hi\x00") == b"\x69\x85"  # EXCHANGE before SELECT
        assert x(select_apdu(bytes.fromhex("A0000000031010"))) == b"\x6a\x82"
        assert x(select_apdu(AMIKO_AID)) == b"\x90\x00"
        for apdu, sw in [(b"\x80", b"\x67\x00"), (b"\x80\xe0\x00\x00\x09ab", b"\x67\x00"),
                         (b"\x80\x77\x00\x00", b"\x6d\x00"), (b"\x42\xe0\x00\x00", b"\x6e\x00"),
                         (b"\x80\xe0\x80\x00\x01a\x00", b"\x6a\x86"), (bytes(300), b"\x67\x00")]:
            assert x(apdu) == sw, apdu[:8]
        # the largest short APDU (ISO-DEP chained over the air, an extended frame on the UART); the
        # card answers once its app has handled the message: with the first 256 bytes of the echo
        r = x(b"\x80\xe0\x00\x00\xff" + bytes(range(255)) + b"\x00")
        assert r[-2:] == b"\x61\x04" and r[:-2] == (b"echo:" + bytes(range(255))[::-1])[:256], r[-2:]
        body = r[:-2]
        # a chained message above the card's limit: 6A84, then the card still works
        for _ in range(20):
            r = x(b"\x80\xe0\x01\x00\xf0" + bytes(240) + b"\x00")
            if r != b"\x90\x00":
                break
        assert r == b"\x6a\x84"
        r = x(b"\x80\xe0\x00\x00\x02ok\x00")
        body += r[:-2]
        want = b"echo:" + bytes(range(255))[::-1] + b"echo:ko"
        # the card's app echoes in its own time (6985: nothing queued yet): ask until both came
        deadline = time.monotonic() + 10
        while len(body) < len(want) and time.monotonic() < deadline:
            r = x(b"\x00\xc0\x00\x00\x00")
            assert r[-2:] in (b"\x90\x00", b"\x69\x85") or r[-2:-1] == b"\x61", r[-2:]
            body += r[:-2]
            if r[-2:] == b"\x69\x85":
                time.sleep(0.02)
        # the echo of the 255-byte message first (nothing lost), then the echo of "ok"
        assert body == want
        # an extended APDU larger than the chip's buffer: to the firmware in parts (status MI), the
        # answer (TgSetMetaData parts + TgSetData) chained back over the air in blocks of the FSD
        big = bytes(i * 7 & 0xFF for i in range(700))
        r = x(b"\x80\xe0\x00\x00\x00\x02\xbc" + big + b"\x00\x00")
        assert r == b"echo:" + big[::-1] + b"\x90\x00", r[-2:]
    finally:
        clf.close()
        card.stop()
