"""`amiko bridge`: the bridge process (cashier page + sale machine + wallets) until SIGTERM/SIGINT.

Prints the page's URL and a fresh pairing code for the cashier's device when it is ready (with
--json: one JSON object {"url", "node", "listen", "transports", "pairing_code",
"pairing_expires"}); logs to stderr (never the code). The code is shown only on a console
(stdout a terminal) or to the program reading --json: under systemd stdout is the journal, a
log, so the bridge prints how to get a code instead. Exit 0 after a clean stop, 2 on a config
or start-up error.

    amiko bridge pair [--config FILE]                 a fresh pairing code (the running bridge accepts it)
    amiko bridge devices [--config FILE] [--revoke ID|all]   the paired devices; revoke one or all
    amiko bridge key [--config FILE]                  the bridge's BOLT 8 key for a tcp:// node (created
                                                      once, 0600 in state_dir): grant it on the node with
                                                      `amiko grant KEY --permissions request,cancel,watch`

(they share the bridge's state_dir with the running bridge: run them as the bridge's user)
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

from amiko.bridge.auth import CashierAuth
from amiko.bridge.nodeclient import key_path, load_key
from amiko.cli import Command, CommandError
from amiko_core.errors import AmikoError

log = logging.getLogger("amiko.bridge")


async def serve(bridge, host, port):
    """Start the bridge and its page; returns the aiohttp runner (call runner.cleanup())."""
    from aiohttp import web

    from amiko.bridge.web import make_app

    await bridge.start()
    runner = web.AppRunner(make_app(bridge), access_log=None, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        await bridge.close()
        raise OSError(e.errno, "cannot serve the page on %s:%d: %s: pick another `listen`" % (host, port, e.strerror or e)) from None
    return runner


def _auth(config):
    return CashierAuth(config.state_dir, config.cashier_token)


async def _main(config, out, ready_json, config_path=None):
    from amiko.bridge.service import Bridge
    from amiko.bridge.web import format_pairing

    show_code = ready_json or out.stdout.isatty()
    try:
        auth = _auth(config)
        code, expires = auth.new_code() if show_code else (None, None)
        auth.current()
    except OSError as e:
        raise OSError(e.errno, "cannot keep the cashier devices in %s: %s: set `state_dir` in the bridge config to "
                               "a directory this user may write" % (config.state_dir, e.strerror or e)) from None
    bridge = Bridge(config)
    runner = await serve(bridge, config.host, config.port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info = {"url": config.page_url, "node": bridge.node.describe(), "listen": config.listen,
            "transports": config.transports, "pairing_code": code, "pairing_expires": int(expires or 0)}
    if ready_json:
        out.stdout.write(json.dumps(info, sort_keys=True) + "\n")
        out.stdout.flush()
    else:
        pairing = (format_pairing(code, expires) if code else
                   "pair a cashier device with a code from `amiko bridge pair%s` (run as this bridge's user)"
                   % (" --config " + config_path if config_path else ""))
        out.stdout.write("cashier page: %s (shop node %s)\n%s\n" % (info["url"], info["node"], pairing))
        out.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await bridge.close()
    return 0


def _args(p):
    p.add_argument("--config", metavar="FILE", help="bridge config (TOML); without it: defaults, node = $AMIKO_HOME")
    sub = p.add_subparsers(dest="bridge_command", metavar="SUBCOMMAND")
    pair = sub.add_parser("pair", help="show a fresh pairing code for a cashier device",
                          description="A fresh pairing code (8 digits, valid 10 minutes, once) that signs one device "
                                      "in to the running bridge's cashier page; replaces the previous code.")
    devices = sub.add_parser("devices", help="list the paired cashier devices; --revoke one",
                             description="The devices signed in to the cashier page; --revoke ID signs one out "
                                         "(all: every device); its open pages close within a second.")
    devices.add_argument("--revoke", metavar="ID", help="the device id to sign out (from the list), or all")
    key = sub.add_parser("key", help="print the bridge's key for a tcp:// shop node (to grant on the node)",
                         description="The bridge's BOLT 8 public key (created on first use in state_dir, mode 0600). "
                                     "On the node: amiko grant KEY --permissions request,cancel,watch")
    for sp in (pair, devices, key):
        sp.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="the bridge's config (TOML)")
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object on stdout")
    p.add_argument("--node", metavar="HOME_OR_URL", help="shop node: HOME, unix:SOCKET or tcp://HOST:PORT (overrides the config)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address of the cashier page (overrides the config)")
    p.add_argument("--transport", dest="transports", action="append", metavar="KIND:DEVICE",
                   help="where wallets connect, e.g. serial:/dev/ttyACM0 (repeatable; overrides the config)")


def _run(args, out):
    from amiko.bridge import config as configs

    overrides = {"node": args.node or args.home, "listen": args.listen,
                 "transports": args.transports}
    try:
        config = configs.load(args.config, overrides)
    except configs.ConfigError as e:
        raise CommandError(str(e), "invalid") from None
    if getattr(args, "bridge_command", None):
        try:
            if args.bridge_command == "key":
                return _key(config, out)
            return _pair(config, out) if args.bridge_command == "pair" else _devices(config, args.revoke, out)
        except OSError as e:
            raise CommandError("cashier devices in %s: %s" % (config.state_dir, e.strerror or e), "state") from None
    level = getattr(logging, os.environ.get("AMIKO_LOG_LEVEL", "INFO").upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("amiko")
    root.setLevel(level)
    root.addHandler(handler)
    try:
        return asyncio.run(_main(config, out, out.as_json, args.config and os.path.abspath(args.config)))
    except OSError as e:
        raise CommandError(e.strerror or str(e), "listen") from None


def _pair(config, out):
    from amiko.bridge.web import format_pairing

    code, expires = _auth(config).new_code()
    out.result({"code": code, "expires": int(expires), "state_dir": config.state_dir}, format_pairing(code, expires))
    return 0


def _key(config, out):
    try:
        key = load_key(config.state_dir).pubkey.hex()
    except AmikoError as e:
        raise CommandError(e.reason, "state") from None
    out.result({"key": key, "path": key_path(config.state_dir)},
               "%s\ngrant it on the shop node: amiko grant %s --permissions request,cancel,watch" % (key, key))
    return 0


def _devices(config, revoke, out):
    auth = _auth(config)
    if revoke:
        ids = auth.revoke(revoke)
        if not ids:
            raise CommandError("no paired device %r (see `amiko bridge devices`)" % revoke, "not_found")
        out.result({"revoked": ids}, "signed out: %s" % ", ".join(ids))
        return 0
    rows = auth.devices()
    text = "\n".join("%s  %-24s paired %s with a %s%s" % (
        d["id"], d["name"], time.strftime("%Y-%m-%d %H:%M", time.localtime(d["created"] or 0)), d["via"],
        " from " + d["address"] if d["address"] else "") for d in rows) or "no paired devices"
    out.result({"devices": rows}, text)
    return 0


def commands():
    return [Command("bridge", "the shop terminal: cashier page, sales, wallets (until SIGTERM)", _args, _run)]
