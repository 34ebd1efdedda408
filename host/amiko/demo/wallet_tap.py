"""The demo's customer: a virtual wallet board, flashed, provisioned and topped up like a real one.

VirtualWallet(directory, note).power_on(), .flash_firmware(), .provision(provider_home, ...) do what a developer does with a new
board, with the same code as the commands:
  1. a virtual board (amiko.emulate.VirtualBoard(HOME, ble=True, nfc=True), HOME = DIR/wallet):
     the MicroPython unix port on a pty, "plugged in" for the whole demo; an NFC card behind a
     simulated PN532 (amiko.emulate.pn532_sim, RF on nfcpy's udp link) and a BLE radio (bumble);
     boards.json's VIRTUAL entry lists both, so the flashed firmware starts them;
  2. `amiko flash --board VIRTUAL --port PTY --set storage_root=data --set ble_name=Amiko-D1`: the firmware and the core as .mpy (mpy-cross),
     copied with mpremote's serial transport (amiko.flash.flash), the board restarts into the
     wallet firmware;
  3. `amiko wallet provision --port PTY --provider HOME --auto N --limit N --daily N`: key and
     account at the provider node, Provision over serial, the wallet's MAC'd acknowledgement;
  4. `amiko wallet topup --provider HOME --wallet ID AMOUNT`.
Then .transports ({"nfc": "nfc:udp:H:P", "ble": "ble:Amiko-D1?hci=...", "serial": "serial:/dev/pts/N"})
go into the bridge's config, and .bring(kind) holds the wallet to the terminal over one of them
(the card in the field or not, BLE in range or not; the cable stays): the bridge taps the wallet
by itself when the cashier starts a sale (amiko.bridge.relayport), and the wallet confirms by
itself below `auto` (no button press), so every payment is the real one: wallet firmware,
NFC / BLE / USB serial, bridge relay, provider, network, shop node.

history() reads the proofs stored on the wallet over serial (`amiko wallet history`); the port
must be free (the bridge stopped). stop() stops the board (its flash directory stays).
"""

import argparse
import io
import json
import os
import signal
import time

from amiko.cli import CommandError, Output
from amiko.emulate import VirtualBoard
from amiko.emulate.emulator import EmulatorError

BOARD_ID = "VIRTUAL"
# `amiko flash --set storage_root=data`: the wallet's state in HOME/flash/data (relative to the
# board's "/", as docs/notes on the virtual board say; see the report on "/data")
SETTINGS = {"storage_root": "data", "ble_name": "Amiko-D1"}
BLE_NAME = SETTINGS["ble_name"]  # whole in the advertising data (<= 8 bytes)
BLE_PAIRED_SETTLE = 1.0  # seconds after the link is trusted (paired or re-encrypted) until subscribed
KINDS = ("nfc", "ble", "serial")  # the bridge's reader order: a wallet over the air before one on the cable


BLE_SETTLE = 0.5  # after the link is up: the terminal's GATT discovery and subscription


class WalletError(Exception):
    pass


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise WalletError("timed out after %s s waiting for %s" % (timeout, what))
        time.sleep(0.01)


def _die_with_parent():
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _DemoBoard(VirtualBoard):
    """A VirtualBoard whose emulator (and simulated PN532) get SIGTERM when the demo dies, even by
    SIGKILL (its micropython child dies with the emulator), so no board outlives a killed demo."""

    preexec_fn = staticmethod(_die_with_parent)


class _Notes:
    """amiko.cli.Output's note() for amiko.flash.flash, into the demo's notes."""

    as_json = False

    def __init__(self, note):
        self.note = note


def _command(run, **args):
    """Run an `amiko wallet` subcommand's logic in this process; returns its JSON result."""

    buf = io.StringIO()
    try:
        run(argparse.Namespace(**args), Output(True, stdout=buf, stderr=io.StringIO()))
    except CommandError as e:
        raise WalletError("%s" % e) from None
    return json.loads(buf.getvalue().strip().splitlines()[-1])


class VirtualWallet:
    def __init__(self, directory, note=None):
        self.ble_paired = False  # the bridge holds a bond (paired once, in bring("ble"))
        self.home = os.path.join(directory, "wallet")
        self.note = note or (lambda text: None)
        self.board = None
        self.wallet_id = None
        self.flashed = None

    @property
    def pty(self):
        return self.board.pty if self.board else None

    @property
    def transport(self):
        return "serial:" + self.pty

    @property
    def transports(self):
        """{"nfc": "nfc:udp:H:P", "ble": "ble:NAME?hci=...", "serial": "serial:/dev/pts/N"}: the bridge's specs."""
        return {"nfc": self.board.nfc_transport,
                "ble": "ble:%s?hci=%s" % (BLE_NAME, self.board.info["ble"]["hci"]),
                "serial": self.transport}

    def power_on(self):
        """Start the virtual board (call it from the thread that lives as long as the board:
        the board's emulator gets SIGTERM when the thread that started it ends)."""
        try:
            self.board = _DemoBoard(self.home, ble=True, nfc=True).start()
        except EmulatorError as e:
            raise WalletError("virtual board: %s" % e) from None
        # the customer holds the wallet away from the NFC reader and out of BLE range until a payment
        self.board.nfc_leave()
        self.board.ble_away(True)
        self.note("virtual wallet board up: USB serial on %s, NFC card behind a simulated PN532 (%s), "
                  "BLE radio (bumble, %s); flash in %s" % (self.pty, self.board.nfc_transport,
                                                           self.board.info["ble"]["hci"], self.board.flash))
        return self

    def flash_firmware(self):
        """`amiko flash --board VIRTUAL --port PTY`; returns when the wallet firmware runs."""
        from amiko.flash import FlashError, boards, flash

        try:
            self.flashed = flash(boards.find(BOARD_ID), self.pty, _Notes(lambda text: None), dict(SETTINGS))
        except FlashError as e:
            raise WalletError("amiko flash: %s" % e.message) from None
        self.note("flashed: amiko flash --board %s --port %s --set storage_root=data --set ble_name=%s (%d files copied, %d bytes of .mpy and main.py)"
                  % (BOARD_ID, self.pty, BLE_NAME, len(self.flashed["copied"]), self.flashed["bytes_copied"]))
        try:
            self.board.wait_for_screen(lambda lines: lines != [], timeout=10)  # the firmware runs
        except EmulatorError as e:
            raise WalletError("the wallet firmware did not start after flashing: %s" % e) from None
        return self

    def provision(self, provider_home, auto, limit, daily, topup):
        """`amiko wallet provision` at the provider node, then `amiko wallet topup`."""
        from amiko.wallet import cli as wallet_cli

        r = _command(wallet_cli._provision_run, port=self.pty, provider=provider_home, wallet=None, invite=None, home=None,
                     limit=limit, daily=daily, auto=auto,
                     # the demo's sales all go to its one shop, never confirmed by hand: allow them all
                     auto_count=65535, auto_total=65535 * auto, auto_new=65535)
        self.wallet_id = r["wallet"]
        self.note("provisioned: wallet %s with provider %s (confirms by itself up to %d, at most %d a payment)"
                  % (self.wallet_id, r["provider"], auto, limit))
        r = _command(wallet_cli._topup_run, provider=provider_home, wallet=self.wallet_id, port=None, amount=topup)
        self.note("topped up: wallet %s balance %d" % (self.wallet_id, r["balance"]))
        return self

    def bring(self, kind):
        """Hold the wallet to the terminal over `kind` only ("nfc": in the reader's field, "ble": in
        range, "serial": neither; the cable stays plugged in). Returns once the terminal's side sees
        it (nfc: the reader selected the card and polls it; ble: a central is connected)."""
        b = self.board
        if kind != "nfc":
            b.nfc_leave()
        if kind != "ble":
            b.ble_away(True)
        if kind == "nfc":
            before = b.nfc_stats()["apdus"]
            b.nfc_enter()
            _wait(lambda: b.nfc_stats()["apdus"] >= before + 2, 15, "the NFC reader to select the card")
        elif kind == "ble":
            trusted = self._ble_trusted()
            linked = b.ble_links() > 0  # still connected (and trusted) from the last payment
            b.ble_away(False)
            _wait(lambda: b.ble_links() > 0, 20, "the terminal to connect over BLE")
            if not linked:
                self._ble_pair(trusted)
                self.ble_paired = True
            time.sleep(BLE_SETTLE)

    def arrive(self, kind):
        """The card enters the NFC field / the wallet comes into BLE range (nothing waited for)."""
        if kind == "nfc":
            self.board.nfc_enter()
        elif kind == "ble":
            self.board.ble_away(False)

    def wait_unlinked(self, timeout=10):
        """Until no BLE central is connected any more (the terminal has seen the wallet go)."""
        _wait(lambda: self.board.ble_links() == 0, timeout, "the BLE link to drop")

    def _ble_trusted(self):
        return sum(1 for ev in self.board.events() if "trusted" in str(ev.get("log", "")))

    def _ble_pair(self, trusted_before):
        """The first time, the bridge pairs (numeric comparison): the customer checks the number on
        the wallet against the bridge's log and presses confirm (scripted); afterwards the bridge
        re-encrypts with its bond and the wallet shows nothing."""
        b = self.board
        deadline = time.monotonic() + 30
        while self._ble_trusted() <= trusted_before:
            lines = b.screen()
            if len(lines) > 1 and lines[0] == "BLE pairing" and lines[1].isdigit():
                b.press("confirm")
                self.note("BLE pairing: the wallet showed %s, the customer pressed confirm" % lines[1])
                _wait(lambda: self._ble_trusted() > trusted_before, 20, "the BLE pairing to complete")
                time.sleep(BLE_PAIRED_SETTLE)  # the bridge discovers the service and subscribes after pairing
                return
            if time.monotonic() > deadline:
                raise WalletError("the BLE link was neither paired nor encrypted with a bond within 30 s")
            time.sleep(0.05)
        time.sleep(BLE_PAIRED_SETTLE)  # re-encrypted with the bond: discovery and subscription follow

    def history(self):
        """The wallet's stored payments ({txid, state, proof_ok, signature_ok, ...}), over serial."""
        from amiko.wallet import cli as wallet_cli

        t = wallet_cli._transport(self.pty)
        try:
            return wallet_cli.read_history(t, limit=100000)
        except CommandError as e:
            raise WalletError("wallet history: %s" % e) from None
        finally:
            t.close()

    def stop(self):
        if self.board is not None:
            self.board.stop()
