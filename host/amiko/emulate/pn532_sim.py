"""A simulated PN532 for the virtual board: the chip's UART on a pty, its RF side on nfcpy's `udp:`.

    python -m amiko.emulate.pn532_sim --udp 127.0.0.1:54321
prints one JSON line {"uart": "/dev/pts/N", "udp": [host, port]} once both sides are ready,
then takes commands on stdin, one per line, and answers each with one JSON line:
    leave   the card leaves the field: RF goes silent, the firmware sees the target released
    leave_after N   leave when the N-th APDU from now arrives (that APDU is lost in the air)
    enter   the card is in the field again (the start state)
    stats   {"activations", "apdus", "released", "wtx", "in_field"[, "bytes_in", "bytes_out"]}
            (bytes_in/out: C-APDU bytes from the reader, R-APDU bytes answered)
    quit

UART side (what the firmware's board/pn532.py talks to): the chip's host-link frames
(preamble, LEN, LCS, TFI, data, DCS; ACK after every accepted command; the error frame for a
frame with a bad checksum; an ACK from the host aborts the command in flight), with the
commands SAMConfiguration (14), GetFirmwareVersion (02), TgInitAsTarget (8C, mode 04 = PICC
only), TgGetData (86), TgSetMetaData (94) and TgSetData (8E). Any other command is answered with the error
frame (a simplification: the real chip answers most other commands; the firmware sends none).

RF side (what nfcpy's reader sees): nfcpy's own udp driver (nfc.clf.udp.Device) in listen
mode. The udp "air" carries one datagram per frame, text "<bitrate> <hex>", e.g. "106A 26",
without CRC or parity; "RFOFF" from the reader means the field went off. The driver's
listen_tta answers SENS_REQ / SDD_REQ / SEL_REQ (ISO 14443-3A anticollision) from our
LocalTarget (SENS_RES 04 00, NFCID1 08 + the 3 bytes the firmware passed, SEL_RES 20 =
ISO 14443-4 compliant) and returns the next frame: the RATS (E0 ..). From there this module
does what the PN532 does in PICC mode: it answers the ATS itself (FSCI 8 = 256 bytes, FWI 11
~ 619 ms), runs the ISO-DEP block protocol (I-blocks with block numbers and chaining, R(ACK),
R(NAK) retransmission and presence checks, S(DESELECT)), hands each complete APDU to the
firmware in the answer to TgGetData (extended frame above 255 bytes; an APDU larger than
the chip's 261-byte buffer in parts, status MI on all but the last, one TgGetData each) and
sends the firmware's answer (TgSetMetaData parts, then TgSetData) back as the I-block answer,
chained in blocks of the reader's FSD (from its RATS). While the firmware has not answered, it asks the reader for more time with S(WTX)
(WTXM 4) every FWT/2, as a card must. Limits of the udp link: one card per udp port (two
cards in one field cannot be simulated), 106 kbit/s type A only, no RF collisions or bit errors.
"""

import argparse
import json
import logging
import os
import select
import sys
import threading
import time
import tty

import nfc.clf
from nfc.clf import udp

log = logging.getLogger("amiko.pn532_sim")

PREAMBLE = b"\x00\x00\xff"
ACK = b"\x00\x00\xff\x00\xff\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
ATS = bytes.fromhex("057880b002")  # TL, T0 (TA TB TC, FSCI 8), TA, TB (FWI 11, SFGI 0), TC
FWT = 4096 / 13.56e6 * 2 ** 11
WTXM = 4
WTX_LIMIT = 60  # ~19 s of extensions: a firmware that stopped answering releases the reader
IDLE_FIELD_OFF = 3.0  # seconds without a reader frame: the field is gone
STATUS_RELEASED = 0x29
MAX_APDU = 261  # the chip's data buffer (262 bytes with the status byte of TgGetData's answer)
STATUS_MI = 0x40
FSD = (16, 24, 32, 40, 48, 64, 96, 128, 256)


def frame(data):
    """A chip -> host information frame; extended (LEN FF FF LENM LENL LCS) above 255 bytes."""
    n = len(data) + 1
    body = bytes([0xD5]) + data
    if n <= 255:
        head = bytes([0, 0, 0xFF, n, (-n) & 0xFF])
    else:
        head = bytes([0, 0, 0xFF, 0xFF, 0xFF, n >> 8, n & 0xFF, (-(n >> 8) - (n & 0xFF)) & 0xFF])
    return head + body + bytes([(-sum(body)) & 0xFF, 0])


class CardDevice(udp.Device):
    """nfcpy's udp device, kept bound between activations (its listen_tta binds every time)."""

    def _bind_socket(self, time_to_return):
        if self.socket.getsockname()[1] == self.addr[1]:
            return True
        return super()._bind_socket(time_to_return)


class HostLink:
    """Frames from the firmware, parsed independently of firmware/board/pn532.py."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf.extend(data)
        out = []
        while True:
            i = self.buf.find(PREAMBLE)
            if i < 0:
                del self.buf[:-2]
                return out
            del self.buf[:i]
            if len(self.buf) < 6:
                return out
            n, lcs = self.buf[3], self.buf[4]
            if n == 0 and lcs == 0xFF:
                del self.buf[:6]
                out.append(("ack", None))
                continue
            if (n + lcs) & 0xFF or n == 0 or n == 0xFF:
                del self.buf[:3]
                out.append(("bad", None))
                continue
            if len(self.buf) < n + 7:
                return out
            body = bytes(self.buf[5:5 + n])
            ok = (sum(body) + self.buf[5 + n]) & 0xFF == 0 and self.buf[6 + n] == 0
            del self.buf[:n + 7]
            out.append(("frame", body) if ok and body[0] == 0xD4 else ("bad", None))


class SimPN532:
    def __init__(self, udp_host="127.0.0.1", udp_port=54321):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.uart = os.ttyname(self.slave)
        self.udp = (udp_host, udp_port)
        self.lock = threading.Condition()
        self.in_field = True
        self.field = 0  # bumps at every leave: a contact from before a leave never continues
        self.target_uid = None  # set by TgInitAsTarget
        self.activated = None  # RATS bytes once a reader activated us (for TgInitAsTarget's answer)
        self.apdus = []  # complete APDUs from the reader, for TgGetData
        self.answer = None  # the firmware's R-APDU (TgSetData), for the RF thread
        self.answer_parts = bytearray()  # TgSetMetaData parts before it
        self.released = False
        self.generation = 0  # bumps at every release: stale answers are dropped
        self.pending = None  # command waiting for RF: "init" | "get"
        self.stats = {"activations": 0, "apdus": 0, "released": 0, "wtx": 0}
        self.stop = False
        self.leave_at = None  # leave the field when the APDU count reaches this

    # ---------- UART side ----------
    def write_uart(self, data):
        os.write(self.master, data)

    def uart_loop(self):
        link = HostLink()
        while not self.stop:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # the firmware side closed (micropython restarting)
                    time.sleep(0.05)
                    continue
                for kind, body in link.feed(data):
                    if kind == "ack":
                        with self.lock:
                            self.pending = None
                    elif kind == "bad":
                        self.write_uart(ERROR_FRAME)
                    else:
                        self.write_uart(ACK)
                        self.command(body[1], body[2:])
            self.complete_pending()

    def command(self, cmd, params):
        with self.lock:
            if cmd == 0x14:
                self.write_uart(frame(b"\x15"))
            elif cmd == 0x02:
                self.write_uart(frame(b"\x03\x32\x01\x06\x07"))
            elif cmd == 0x8C and len(params) >= 7 and params[0] & 0x04:
                if self.activated is not None:
                    self.field += 1  # re-initialised while activated: the old RF session ends
                self.target_uid = b"\x08" + bytes(params[3:6])
                self.sens_res = bytes(params[1:3])
                self.sel_res = params[6]
                self.activated = None
                self.apdus = []
                self.answer_parts = bytearray()
                self.released = False
                self.pending = "init"
                self.lock.notify_all()
            elif cmd == 0x86:
                self.pending = "get"
            elif cmd in (0x8E, 0x94):
                if self.released:
                    self.answer_parts = bytearray()
                    self.write_uart(frame(bytes([cmd + 1, STATUS_RELEASED])))
                elif cmd == 0x94:
                    self.answer_parts.extend(params)
                    self.write_uart(frame(b"\x95\x00"))
                else:
                    self.answer = (self.generation, bytes(self.answer_parts) + bytes(params))
                    self.answer_parts = bytearray()
                    self.lock.notify_all()
                    self.write_uart(frame(b"\x8f\x00"))
            else:
                self.write_uart(ERROR_FRAME)

    def complete_pending(self):
        with self.lock:
            if self.pending == "init" and self.activated is not None:
                self.write_uart(frame(b"\x8d\x04" + self.activated))
                self.pending = None
            elif self.pending == "get":
                if self.apdus:
                    apdu = self.apdus.pop(0)
                    if len(apdu) > MAX_APDU:  # the rest at the next TgGetData
                        self.apdus.insert(0, apdu[MAX_APDU:])
                        self.write_uart(frame(bytes([0x87, STATUS_MI]) + apdu[:MAX_APDU]))
                    else:
                        self.write_uart(frame(b"\x87\x00" + apdu))
                    self.pending = None
                elif self.released:
                    self.write_uart(frame(bytes([0x87, STATUS_RELEASED])))
                    self.pending = None

    # ---------- RF side ----------
    def release(self, why):
        with self.lock:
            if self.activated is not None and not self.released:
                self.released = True
                self.generation += 1
                self.stats["released"] += 1
                log.info("target released: %s", why)
            self.activated = None
            self.apdus = []
            self.answer = None
            self.answer_parts = bytearray()

    def rf_loop(self):
        dev = CardDevice(*self.udp)
        while not self.stop:
            with self.lock:
                ready = self.in_field and self.target_uid is not None and not self.released \
                    and self.activated is None
                uid, sens_res, sel_res = (self.target_uid, getattr(self, "sens_res", None),
                                          getattr(self, "sel_res", None))
            if not ready:
                if not self.in_field:
                    dev.mute()  # out of the field: nothing answers on the udp port
                time.sleep(0.02)
                continue
            target = nfc.clf.LocalTarget("106A", sens_res=sens_res, sdd_res=uid,
                                         sel_res=bytes([sel_res]))
            try:
                got = dev.listen_tta(target, 0.25)
            except nfc.clf.CommunicationError:
                continue
            if got is None or not getattr(got, "tt4_cmd", None):
                continue
            rats = bytes(got.tt4_cmd)
            field = self.field
            try:
                self.contact(dev, got, rats, field)
            except nfc.clf.CommunicationError as e:
                self.release("rf: %s" % (e,))
            if self.field != field:
                dev.mute()  # the card left (and maybe came back): the old reader session gets silence
        dev.mute()

    def gone(self, field):
        return self.field != field or not self.in_field

    def contact(self, dev, target, rats, field):
        if len(rats) != 2 or rats[0] != 0xE0:
            raise nfc.clf.ProtocolError("not a RATS")
        with self.lock:
            self.activated = rats
            self.stats["activations"] += 1
            gen = self.generation
        self.complete_pending()  # TgInitAsTarget's answer now, not at the UART loop's next select timeout
        send = bytes(ATS)
        block = 1  # the PICC's block number starts at 1 (ISO 14443-4 7.5.3.2)
        last = None
        chained = bytearray()
        inf = FSD[min(rats[1] >> 4, 8)] - 3  # INF bytes per block the reader takes (PCB, CRC)
        rest = b""  # the answer's blocks still to send (the reader asks with R(ACK))
        idle_since = time.monotonic()
        while True:
            if self.gone(field):
                raise nfc.clf.BrokenLinkError("left the field")
            try:
                cmd = dev.send_rsp_recv_cmd(target, send, 0.1)
            except nfc.clf.TimeoutError:
                send = None
                if time.monotonic() - idle_since > IDLE_FIELD_OFF:
                    raise nfc.clf.BrokenLinkError("no reader frame for %.0f s" % IDLE_FIELD_OFF)
                continue
            send = None
            idle_since = time.monotonic()
            if self.gone(field):
                raise nfc.clf.BrokenLinkError("left the field")
            if not cmd:
                continue
            pcb = cmd[0]
            if pcb & 0xE2 == 0x02:  # I-block
                if pcb & 0x0C:
                    continue  # CID / NAD not negotiated: ignore the block
                block = pcb & 1
                rest = b""
                chained.extend(cmd[1:])
                if pcb & 0x10:
                    send = last = bytes([0xA2 | block])
                    continue
                apdu, chained = bytes(chained), bytearray()
                answer = self.ask_firmware(dev, target, apdu, gen, field)
                send, rest = self.i_block(block, answer, inf)
                last = send
            elif pcb & 0xE6 == 0xA2:  # R-block
                if pcb & 0x10 and (pcb & 1) == block and last is not None:
                    send = last  # R(NAK) for our current block: retransmit
                elif not pcb & 0x10 and rest and (pcb & 1) != block:
                    block = pcb & 1  # R(ACK) of our chained block: the next one
                    send, rest = self.i_block(block, rest, inf)
                    last = send
                else:
                    send = bytes([0xA2 | block])
            elif pcb & 0xF7 == 0xC2:  # S(DESELECT)
                dev.send_rsp_recv_cmd(target, bytes([0xC2]), 0)
                raise nfc.clf.BrokenLinkError("deselected")
            # anything else (S(WTX) answers outside a wait, garbage): silence, as a card keeps

    @staticmethod
    def i_block(block, data, inf):
        """(the I-block carrying the first `inf` bytes of data, chained if more follow; the rest)"""
        more = len(data) > inf
        return bytes([0x02 | block | (0x10 if more else 0)]) + data[:inf], data[inf:]

    def ask_firmware(self, dev, target, apdu, gen, field):
        with self.lock:
            self.stats["apdus"] += 1
            self.stats["bytes_in"] = self.stats.get("bytes_in", 0) + len(apdu)  # C-APDU bytes from the reader
            if self.leave_at is not None and self.stats["apdus"] >= self.leave_at:
                self.leave_at = None
                leave = True
            else:
                self.apdus.append(apdu)
                self.answer = None
                leave = False
        if leave:  # the card leaves the field while this APDU is in the air
            self.leave()
            raise nfc.clf.BrokenLinkError("left the field")
        self.complete_pending()
        while True:
            deadline = time.monotonic() + FWT / 2
            with self.lock:
                while self.answer is None and time.monotonic() < deadline and not self.gone(field):
                    self.lock.wait(max(0.0, deadline - time.monotonic()))
                answer, self.answer = self.answer, None
            if self.gone(field):
                raise nfc.clf.BrokenLinkError("left the field")
            if answer is not None and answer[0] == gen:
                self._waits = 0
                with self.lock:
                    self.stats["bytes_out"] = self.stats.get("bytes_out", 0) + len(answer[1])  # R-APDU bytes
                return answer[1]
            # ask for a waiting time extension; the reader echoes the S(WTX) block
            waits = getattr(self, "_waits", 0) + 1
            self._waits = 0 if answer is not None else waits
            if waits > WTX_LIMIT:
                raise nfc.clf.BrokenLinkError("the firmware did not answer")
            self.stats["wtx"] += 1
            reply = dev.send_rsp_recv_cmd(target, bytes([0xF2, WTXM]), FWT * WTXM + 0.5)
            if not reply or reply[0] & 0xF7 != 0xF2:
                raise nfc.clf.ProtocolError("expected S(WTX) response")

    # ---------- control ----------
    def leave(self):
        with self.lock:
            self.in_field = False
            self.field += 1
            self.lock.notify_all()
        self.release("left the field")

    def enter(self):
        with self.lock:
            self.in_field = True

    def start(self):
        self.threads = [threading.Thread(target=self.uart_loop, daemon=True),
                        threading.Thread(target=self.rf_loop, daemon=True)]
        for t in self.threads:
            t.start()
        return self


def main(argv=None):
    ap = argparse.ArgumentParser(prog="amiko.emulate.pn532_sim", description=__doc__.split("\n")[0])
    ap.add_argument("--udp", default="127.0.0.1:54321", help="HOST:PORT the card listens on")
    a = ap.parse_args(argv)
    host, _, port = a.udp.rpartition(":")
    sim = SimPN532(host or "127.0.0.1", int(port)).start()
    print(json.dumps({"uart": sim.uart, "udp": [sim.udp[0], sim.udp[1]]}), flush=True)
    for line in sys.stdin:
        word = line.strip()
        if word == "leave":
            sim.leave()
        elif word == "enter":
            sim.enter()
        elif word.startswith("leave_after "):
            with sim.lock:
                sim.leave_at = sim.stats["apdus"] + int(word.split()[1])
        elif word == "quit":
            break
        out = dict(sim.stats, in_field=sim.in_field)
        print(json.dumps(out), flush=True)
    sim.stop = True


if __name__ == "__main__":
    main()
