"""`amiko emulate`: run a virtual board, and script/inspect a running one.

    amiko emulate [--home DIR] [--heapsize N] [--ble] [--json]   run one in the foreground (Ctrl-C stops it)
    amiko emulate [--hold cancel] ...                     start with a button held at power-on
    amiko emulate press confirm|cancel --home DIR         press a button
    amiko emulate press cancel --at-boot --home DIR       hold it through a power cycle (update mode)
    amiko emulate screen --home DIR                       what the display and LED show now
    amiko emulate status --home DIR                       where a running board's interfaces are
    amiko emulate reset --home DIR                        power cycle (kill micropython, boot again)

DIR defaults to $AMIKO_HOME. The board's filesystem is DIR/flash; put firmware there with
`amiko flash --board VIRTUAL --port PTY` (or mpremote, or by copying files).
"""

import argparse
import json
import os
import signal

from amiko.cli import Command, CommandError, EXIT_OK


def _home(args):
    home = getattr(args, "home", None) or os.environ.get("AMIKO_HOME")
    if not home:
        raise CommandError("no virtual board home: pass --home DIR (or set AMIKO_HOME)", "usage")
    return home


def _common(p):
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object on stdout")
    p.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS, help="the virtual board's home (default $AMIKO_HOME)")


def _args(p):
    p.add_argument("--heapsize", metavar="N", help="MicroPython heap size (e.g. 64k; default the unix port's)")
    p.add_argument("--ble", action="store_true",
                   help="give the board a simulated BLE radio (bumble); the terminal reaches it with "
                        "ble:NAME?hci=<the printed hci transport>")
    p.add_argument("--nfc", metavar="HOST:PORT",
                   help="give the board a simulated PN532 whose RF side is nfcpy's udp link on HOST:PORT; "
                        "the terminal reads it with nfc:udp:HOST:PORT")
    p.add_argument("--hold", action="append", default=[], choices=("confirm", "cancel"), metavar="BUTTON",
                   help="hold this button down at power-on (cancel: the wallet's update mode, which wipes its keys "
                        "after a confirm press)")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    press = sub.add_parser("press", help="press a button on a running virtual board")
    press.add_argument("button", choices=("confirm", "cancel"))
    press.add_argument("--at-boot", action="store_true",
                       help="hold it down while the board is power cycled, release it once booted (cancel: the "
                            "wallet's update mode)")
    _common(press)
    for name, text in (("screen", "what the display and LED show now"),
                       ("status", "where a running virtual board's interfaces are"),
                       ("reset", "power cycle a running virtual board")):
        _common(sub.add_parser(name, help=text))


def _describe(info):
    return "\n".join([
        "virtual board running (pid %s); Ctrl-C stops it" % info["pid"],
        "  USB serial:  %s   (mpremote connect %s)" % (info["pty"], info["pty"]),
        "  flash:       %s" % info["flash"],
        "  buttons:     %s   (amiko emulate press confirm|cancel --home %s)" % (info["buttons"], info["home"]),
        "  display/LED: %s   (amiko emulate screen --home %s)" % (info["events"], info["home"]),
        "  log:         %s" % info["log"],
    ] + (["  BLE:         %s, HCI of the terminal's side: %s   (ble:NAME?hci=%s)"
          % (info["ble"]["address"], info["ble"]["hci"], info["ble"]["hci"])] if info.get("ble") else [])
        + (["  NFC:         simulated PN532 on %s, the terminal reads it with %s"
            % (info["nfc"]["uart"], info["nfc"]["transport"])] if info.get("nfc") else []))


def _run(args, out):
    from amiko.emulate import led, press, running, screen
    from amiko.emulate.emulator import Emulator, EmulatorError

    home = _home(args)
    action = getattr(args, "action", None)
    try:
        if action == "press":
            press(home, args.button, at_boot=args.at_boot)
            out.result({"pressed": args.button, "at_boot": args.at_boot},
                       "held %s through a power cycle" % args.button if args.at_boot else "pressed %s" % args.button)
            return EXIT_OK
        if action == "screen":
            lines, state = screen(home), led(home)
            out.result({"display": lines, "led": state},
                       "\n".join(["+" + "-" * 16 + "+"] + ["|%-16s|" % line for line in (lines + [""] * 4)[:4]]
                                 + ["+" + "-" * 16 + "+", "LED: %s" % state]))
            return EXIT_OK
        if action in ("status", "reset"):
            info = running(home)
            if info is None:
                raise CommandError("no virtual board runs in %s: start one with `amiko emulate --home %s`"
                                   % (home, home), "not_running")
            if action == "reset":
                os.kill(info["pid"], signal.SIGUSR1)
                out.result({"reset": True, "pty": info["pty"]}, "power cycled the virtual board on %s" % info["pty"])
            else:
                out.result(info, _describe(info))
            return EXIT_OK
        if running(home):
            raise CommandError("a virtual board already runs in %s" % home, "busy")
        emu = Emulator(home, heapsize=args.heapsize, ble=getattr(args, "ble", False), nfc=getattr(args, "nfc", None),
                       hold=getattr(args, "hold", None) or ())

        def ready(info):
            if out.as_json:
                out.stdout.write(json.dumps(info, sort_keys=True) + "\n")
                out.stdout.flush()
            else:
                out.stdout.write(_describe(info) + "\n")
                out.stdout.flush()

        emu.run(ready)
        return EXIT_OK
    except EmulatorError as e:
        raise CommandError(str(e), "emulate") from None


def commands():
    return [Command("emulate", "run a virtual board (the firmware on the MicroPython unix port); press/screen/status/reset",
                    _args, _run)]
