"""The wallet as an ISO-DEP (ISO/IEC 14443-4A) card: wallet frames carried in APDUs.

Application: AMIKO_AID = F0 41 4D 49 4B 4F 01 (proprietary RID F0 + "AMIKO" + version 1).

APDUs (ISO/IEC 7816-4 short form; the terminal is always the one that speaks first):
    SELECT        00 A4 04 00 Lc AID [Le]  -> 9000 (FCI-less); wrong AID -> 6A82 and the
                                              card stays deselected
    EXCHANGE      80 E0 P1 00 Lc data [Le] -> response data + SW (short or extended length:
                                              80 E0 P1 00 00 Lc1 Lc2 data [Le1 Le2])
                  data: the next bytes of the terminal's message (wallet frame bytes);
                  P1 bit 0 (CHAIN_MORE) = more blocks of this message follow: answered 9000
                  with no data; the last block (P1 = 0) completes the message, the card
                  hands it to the wallet and answers with what the wallet has to send.
                  An EXCHANGE with Lc = 0 (or no body) is a poll (answered at once).
    GET RESPONSE  00 C0 00 00 Le           -> the next bytes the wallet has to send
    Answers carry at most min(Le, MAX_ANSWER) bytes (Le absent: 256; extended 0000: 65536),
    so that one extended EXCHANGE carries a whole message each way; SW 9000 when nothing more is
    queued, 61xx when xx (00: 256 or more) bytes are still waiting (GET RESPONSE or the
    next EXCHANGE fetches them: nothing queued is ever dropped by a new command).
Status words for every error (the card state is unchanged unless said):
    6700 wrong length (APDU shorter than its header, Lc disagrees with the body, an APDU
         larger than MAX_MESSAGE + 9 arriving in chained parts)
    6A82 SELECT of another AID (deselects: clears both directions)
    6A86 wrong P1/P2          6A84 message larger than MAX_MESSAGE (partial message dropped)
    6985 not selected, or GET RESPONSE with nothing queued
    6D00 unknown INS          6E00 unknown CLA
Contact: a SELECT of AMIKO_AID, or the chip reporting a new activation / release, starts a
new contact: a partial inbound message and the outbound queue of the previous contact are
dropped (the wallet's protocol resumes a payment at the next contact). A message reaches
the wallet only when complete, so its frame decoder never sees half a frame from a contact
that ended.

ApduCard is sans-IO (process(apdu) -> response bytes): the same logic runs on CPython in
the tests. NfcCard drives a PN532 in target mode and is the wallet's transport:
read_into(buf) -> n (non-blocking), write(data). NfcCard holds the answer to the EXCHANGE
that completes a message (ApduCard(hold=True): process() returns None, answer_held() later)
until the wallet has handled that message: the answer then carries the wallet's reply, so
the reader needs no poll to fetch it. "Handled" = the wallet wrote (its loop flushes its
answers after the frames of a read) with the whole message read, or the wallet's next
read_into() after the one that took the message's last byte (it had nothing to say).
Meanwhile the chip keeps the reader waiting (the PN532 sends S(WTX) on its own).
"""

from amiko_core.walletlink import NFC_AID as AMIKO_AID

CLA_ISO = 0x00
CLA_PROP = 0x80
INS_SELECT = 0xA4
INS_EXCHANGE = 0xE0
INS_GET_RESPONSE = 0xC0
CHAIN_MORE = 0x01

MAX_ANSWER = 2048  # the wallet's largest burst (Confirm + Auth with its receipt) is ~600 bytes
MAX_MESSAGE = 4096
CHIP_PART = 252  # R-APDU bytes per TgSetMetaData / TgSetData: one normal PN532 frame

SW_OK = b"\x90\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_NOT_FOUND = b"\x6a\x82"
SW_WRONG_P1P2 = b"\x6a\x86"
SW_TOO_LONG = b"\x6a\x84"
SW_CONDITIONS = b"\x69\x85"
SW_INS = b"\x6d\x00"
SW_CLA = b"\x6e\x00"


def parse_apdu(apdu):
    """(cla, ins, p1, p2, data, le) or None if the lengths do not add up (ISO 7816-4 cases
    1, 2, 3, 4, short and extended)."""
    n = len(apdu)
    if n < 4:
        return None
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    if n == 4:
        return cla, ins, p1, p2, b"", None
    if n == 5:
        return cla, ins, p1, p2, b"", apdu[4] or 256
    lc = apdu[4]
    if lc == 0:  # extended length
        if n < 7:
            return None
        ext = (apdu[5] << 8) | apdu[6]
        if n == 7:
            return cla, ins, p1, p2, b"", ext or 65536
        if ext == 0:
            return None
        if n == 7 + ext:
            return cla, ins, p1, p2, bytes(apdu[7:7 + ext]), None
        if n == 9 + ext:
            return cla, ins, p1, p2, bytes(apdu[7:7 + ext]), ((apdu[7 + ext] << 8) | apdu[8 + ext]) or 65536
        return None
    if n == 5 + lc:
        return cla, ins, p1, p2, bytes(apdu[5:5 + lc]), None
    if n == 6 + lc:
        return cla, ins, p1, p2, bytes(apdu[5:5 + lc]), apdu[5 + lc] or 256
    return None


class ApduCard:
    def __init__(self, aid=AMIKO_AID, max_message=MAX_MESSAGE, hold=False):
        self.aid = aid
        self.max_message = max_message
        self.hold = hold
        self.held = None  # (le,) of the EXCHANGE whose answer waits for the wallet
        self.selected = False
        self.inbound = bytearray()  # the message being chained in
        self.outbound = bytearray()  # what the wallet wrote, not yet answered
        self.ready = []  # complete messages for the wallet
        self.errors = 0
        self.contacts = 0

    def reset_contact(self):
        self.selected = False
        self.held = None
        self.inbound = bytearray()
        self.outbound = bytearray()

    def answer_held(self):
        """The answer to the held EXCHANGE: what the wallet queued meanwhile (61xx if more)."""
        le = self.held[0]
        self.held = None
        return self._answer(le)

    def queue(self, data):
        self.outbound.extend(data)

    def _answer(self, le):
        n = min(le or 256, MAX_ANSWER, len(self.outbound))
        data = bytes(self.outbound[:n])
        self.outbound = self.outbound[n:]
        left = len(self.outbound)
        sw = SW_OK if not left else bytes((0x61, left if left < 256 else 0))
        return data + sw

    def _error(self, sw):
        self.errors += 1
        return sw

    def process(self, apdu):
        p = parse_apdu(apdu)
        if p is None:
            return self._error(SW_WRONG_LENGTH)
        cla, ins, p1, p2, data, le = p
        if cla == CLA_ISO and ins == INS_SELECT:
            if p1 != 0x04 or p2 not in (0x00, 0x0C):
                return self._error(SW_WRONG_P1P2)
            self.reset_contact()
            if data != self.aid:
                return self._error(SW_NOT_FOUND)
            self.selected = True
            self.contacts += 1
            return SW_OK
        if cla == CLA_ISO and ins == INS_GET_RESPONSE:
            if p1 or p2:
                return self._error(SW_WRONG_P1P2)
            if not self.selected or not self.outbound:
                return self._error(SW_CONDITIONS)
            return self._answer(le)
        if cla == CLA_PROP and ins == INS_EXCHANGE:
            if p1 & ~CHAIN_MORE or p2:
                return self._error(SW_WRONG_P1P2)
            if not self.selected:
                return self._error(SW_CONDITIONS)
            if len(self.inbound) + len(data) > self.max_message:
                self.inbound = bytearray()
                return self._error(SW_TOO_LONG)
            self.inbound.extend(data)
            if p1 & CHAIN_MORE:
                return SW_OK
            if self.inbound:
                self.ready.append(bytes(self.inbound))
                self.inbound = bytearray()
                if self.hold:
                    self.held = (le,)
                    return None
            return self._answer(le)
        if cla not in (CLA_ISO, CLA_PROP):
            return self._error(SW_CLA)
        return self._error(SW_INS)

    def read_into(self, buf):
        """Move complete messages to buf (a message larger than buf continues next call)."""
        if not self.ready:
            return 0
        msg = self.ready[0]
        n = min(len(buf), len(msg))
        buf[:n] = msg[:n]
        if n == len(msg):
            self.ready.pop(0)
        else:
            self.ready[0] = msg[n:]
        return n


# NfcCard states (_HOLD: an EXCHANGE waits for the wallet, no chip command in flight;
# _META: a part of an R-APDU is out, the rest follows)
_IDLE, _INIT, _GET, _SET, _SAM, _HOLD, _META = 0, 1, 2, 3, 4, 5, 6


class NfcCard:
    """The wallet's NFC transport: ApduCard behind a PN532 in target mode."""
    name = "nfc"

    def __init__(self, chip, uid3=None, aid=AMIKO_AID):
        self.chip = chip
        self.uid3 = uid3
        self.card = ApduCard(aid, hold=True)
        self.state = _IDLE
        chip.abort()
        self.chip.send(*chip.sam_configuration())
        self.state = _SAM
        self.released = 0
        self.rx = bytearray()  # the parts of a chained C-APDU (status MI) so far
        self.rx_over = False
        self.tx = b""  # the rest of an R-APDU sent in parts

    def _step(self):
        """Advance the chip dialogue by at most one answer; True if something happened."""
        got = self.chip.poll()
        if got is None:
            return False
        cmd, data = got
        from board import pn532 as p

        if self.state == _SAM:
            self._init_target()
        elif self.state == _INIT:
            self.card.reset_contact()  # a new activation: nothing of the last contact survives
            self.chip.send(p.TG_GET_DATA)
            self.state = _GET
        elif self.state == _GET:
            status = data[0] if data else 0xFF
            if status & 0x3F:
                self._released()
            elif status & p.STATUS_MI:
                if len(self.rx) + len(data) - 1 > MAX_MESSAGE + 9:
                    self.rx_over = True
                    self.rx = bytearray()
                elif not self.rx_over:
                    self.rx.extend(memoryview(data)[1:])
                self.chip.send(p.TG_GET_DATA)
            else:
                if self.rx_over:
                    answer = self.card._error(SW_WRONG_LENGTH)
                elif self.rx:
                    self.rx.extend(memoryview(data)[1:])
                    answer = self.card.process(self.rx)
                else:
                    answer = self.card.process(memoryview(data)[1:])
                self.rx = bytearray()
                self.rx_over = False
                if answer is None:
                    self.state = _HOLD
                else:
                    self._send_answer(answer)
        elif self.state == _META:
            status = data[0] if data else 0xFF
            if status & 0x3F:
                self._released()
            else:
                self._send_answer(self.tx)
        elif self.state == _SET:
            status = data[0] if data else 0xFF
            if status & 0x3F:
                self._released()
            else:
                self.chip.send(p.TG_GET_DATA)
                self.state = _GET
        return True

    def _send_answer(self, answer):
        from board import pn532 as p

        if len(answer) > CHIP_PART:
            self.chip.send(p.TG_SET_META_DATA, answer[:CHIP_PART])
            self.tx = answer[CHIP_PART:]
            self.state = _META
        else:
            self.chip.send(p.TG_SET_DATA, answer)
            self.tx = b""
            self.state = _SET

    def _released(self):
        self.released += 1
        self.card.reset_contact()
        self.rx = bytearray()
        self.rx_over = False
        self.tx = b""
        self._init_target()

    def _init_target(self):
        # a random NFCID1 (08 + 3 random bytes) at every power-up of the card, as ISO 14443-3 allows:
        # a wallet cannot be tracked by its UID from one tap to the next
        uid3 = self.uid3
        if uid3 is None:
            import os

            uid3 = os.urandom(3)
        self.chip.send(*self.chip.tg_init_as_target(uid3))
        self.state = _INIT

    def _answer_held(self):
        self._send_answer(self.card.answer_held())

    def read_into(self, buf):
        if self.state == _HOLD and not self.card.ready:
            self._answer_held()  # the wallet took the whole message last time and had nothing to say
        for _ in range(4):
            if not self._step():
                break
        return self.card.read_into(buf)

    def write(self, data):
        self.card.queue(data)  # a held answer goes at the next read_into: after all this round's writes


def open_card(spec):
    """spec: the board's NFC entry from boards.json, e.g. {"chip": "PN532", "bus": "spi", "id": 2,
    "pins": {"sck": 18, "miso": 19, "mosi": 23, "cs": 5}}, or a tty: "path" (a file name) or "file"
    (an open file: the virtual board's `_vboard.pn532`)."""
    from board import pn532

    bus = spec.get("bus")
    pins = spec.get("pins") or {}
    if spec.get("file") is not None or spec.get("path"):
        b = pn532.FileBus(spec.get("file") or spec["path"])
    elif bus == "uart":
        from machine import UART, Pin

        b = pn532.UARTBus(UART(spec.get("id", 1), 115200, tx=Pin(pins["tx"]), rx=Pin(pins["rx"])))
    elif bus == "spi":
        from machine import SPI, Pin

        spi = SPI(spec.get("id", 1), baudrate=1000000, polarity=0, phase=0,
                  sck=Pin(pins["sck"]), mosi=Pin(pins["mosi"]), miso=Pin(pins["miso"]))
        b = pn532.SPIBus(spi, Pin(pins["cs"], Pin.OUT))
    elif bus == "i2c":
        from machine import I2C, Pin

        b = pn532.I2CBus(I2C(spec.get("id", 0), scl=Pin(pins["scl"]), sda=Pin(pins["sda"])))
    else:
        raise ValueError("nfc: unknown bus %r" % (bus,))
    return NfcCard(pn532.PN532(b))
