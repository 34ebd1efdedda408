"""MicroPython: the firmware's NFC card over the simulated PN532 (argv[1] = its pty), echoing
every message back reversed with a b"echo:" prefix; argv[2] (hex) replaces the card's AID
(a card that is not a wallet). Prints "ready" once the chip link is open."""

import binascii
import sys
import time

from board import pn532
from board.nfc_card import NfcCard, AMIKO_AID

aid = binascii.unhexlify(sys.argv[2]) if len(sys.argv) > 2 else AMIKO_AID
card = NfcCard(pn532.PN532(pn532.FileBus(sys.argv[1])), aid=aid)
buf = bytearray(4200)  # a whole message per read_into (ApduCard hands over complete messages)
print("ready")
while True:
    n = card.read_into(buf)
    if n:
        data = bytes(buf[:n])
        card.write(b"echo:" + bytes(reversed(data)))
    else:
        time.sleep_ms(2)
