"""`amiko bridge`: the bridge process (cashier page + sale machine + wallets) until SIGTERM/SIGINT.

Prints the page's URL when it is ready (with --json: one JSON object {"url", "node", "listen",
"transports"}); logs to stderr. Exit 0 after a clean stop, 2 on a config or start-up error.
"""

import asyncio
import json
import logging
import os
import signal
import sys

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


async def _main(config, out, ready_json):
    from amiko.bridge.service import Bridge

    bridge = Bridge(config)
    runner = await serve(bridge, config.host, config.port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    info = {"url": config.page_url, "node": bridge.node.describe(), "listen": config.listen,
            "transports": config.transports}
    if ready_json:
        out.stdout.write(json.dumps(info, sort_keys=True) + "\n")
        out.stdout.flush()
    else:
        out.stdout.write("cashier page: %s (shop node %s)\n" % (info["url"], info["node"]))
        out.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await bridge.close()
    return 0


def _args(p):
    p.add_argument("--config", metavar="FILE", help="bridge config (TOML); without it: defaults, node = $AMIKO_HOME")
    p.add_argument("--node", metavar="HOME_OR_URL", help="shop node: HOME, unix:SOCKET or tcp://HOST:PORT (overrides the config)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address of the cashier page (overrides the config)")
    p.add_argument("--transport", dest="transports", action="append", metavar="KIND:DEVICE",
                   help="where wallets connect, e.g. serial:/dev/ttyACM0 (repeatable; overrides the config)")


def _run(args, out):
    from amiko.bridge import config as configs
    from amiko.cli import CommandError

    overrides = {"node": args.node or args.home, "listen": args.listen,
                 "transports": args.transports}
    try:
        config = configs.load(args.config, overrides)
    except configs.ConfigError as e:
        raise CommandError(str(e), "invalid") from None
    level = getattr(logging, os.environ.get("AMIKO_LOG_LEVEL", "INFO").upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("amiko")
    root.setLevel(level)
    root.addHandler(handler)
    try:
        return asyncio.run(_main(config, out, out.as_json))
    except OSError as e:
        raise CommandError(e.strerror or str(e), "listen") from None


def commands():
    from amiko.cli import Command

    return [Command("bridge", "the shop terminal: cashier page, sales, wallets (until SIGTERM)", _args, _run)]
