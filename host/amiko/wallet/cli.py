"""`amiko wallet provision | topup | history | info`: a wallet and its provider, from the owner's computer.

provision --port PORT --provider HOME [--wallet ID] [--limit N] [--daily N] [--auto N]
          [--auto-count N] [--auto-total N] [--auto-new N]
    Makes a fresh 32-byte key and a wallet id, creates the wallet account on the provider
    node (control socket of HOME: the key never crosses a network), then sends
    Provision{wallet, key, provider URL, limits} to the wallet over its serial port and
    checks the wallet's ProvisionAck MAC (proof that it stored that key). The auto-confirm
    rules (amiko.node.autoconfirm; README "Auto-confirm"): at most --auto per payment, at most
    --auto-count payments (default 5) and --auto-total in sum (default 3 x --auto) since the
    last button press, of which at most --auto-new (default 2) to payees never confirmed by
    the button; the wallet and the provider both enforce them. A wallet that is
    provisioned already refuses (its update mode wipes the keys to start again): the wallet is asked first
    (Tap without URL: Hello = provisioned), so no account is made for a wallet that refuses.
provision --port PORT --provider amikolink://host:port/WALLET?key=HEX --invite CODE [--limit N ...]
    The same through the network, with a one-time invitation code from the provider's owner
    (`amiko wallet invite`): the key is agreed with the provider node over BOLT 8 (pinned to
    the URL's key, from an ephemeral transport key), encrypted to
    a fresh ephemeral key and signed by the node key pinned in the URL (amiko.node.provisioning
    describes the construction); limits default to the invitation's and may only be lower;
    the other auto-confirm limits are the defaults for the granted --auto.
invite --home HOME [--limit N] [--daily N] [--auto N] [--ttl S]
    On the provider's machine: prints a one-time invitation code (valid --ttl seconds, default
    a day) and the provider URL to give the wallet's owner.
topup --provider HOME --wallet ID AMOUNT    (or --port PORT to read the wallet id from it)
    The provider credits AMOUNT to the wallet's IOU channel (the owner paid it off-network).
history --port PORT [--limit N]
    Reads the proofs of payment stored on the wallet (receipt, payee key and signature,
    meeting point, token; hash160(token) == txid is checked here).
info --provider HOME --wallet ID: the provider's view (balance, available, payments).
pay --port PORT [URL]: this computer as the terminal (amiko.relay): taps the wallet with the
    payment URL and relays until it is done (exit 0 committed, 1 otherwise), over BOLT 8 to
    the payee (the URL's ?key=) and to the wallet's provider (its amikolink URL's key); without
    URL a contact in which the wallet finishes a pending payment.
PORT is a device path or serial:/dev/...
"""

import argparse
import asyncio
import os
import time

from amiko.cli import Command, CommandError, EXIT_OK, _amount
from amiko.node.control import ControlClient
from amiko.node.home import Home, resolve
from amiko.transports import open_transport
from amiko_core import frame, messages as m, walletlink as wl
from amiko_core.errors import DecodeError
from amiko_core.token import token_matches

_FRAME_TIMEOUT = 5.0


def _transport(port):
    try:
        return open_transport(port if port.startswith("serial:") else "serial:" + port)
    except (OSError, ValueError) as e:
        raise CommandError("cannot open the wallet's port %s: %s" % (port, e), "unreachable") from None


def exchange(transport, msg, want, timeout=_FRAME_TIMEOUT):
    """Send msg to the wallet, return the first message of a type in want (or its Refused)."""

    transport.write(m.to_frame(msg))
    dec = frame.FrameDecoder(4096)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = transport.read_blocking(min(0.2, max(0.01, deadline - time.monotonic())))
        for fr in dec.feed(data or b""):
            try:
                got = m.from_frame(fr)
            except DecodeError:
                continue
            if got.type in want or got.type == wl.REFUSED_MSG:
                return got
    raise CommandError("the wallet did not answer %s within %s s: is the firmware running on that port?"
                       % (msg.name, timeout), "timeout")


def _provider_home(text):
    if "://" in text:
        raise CommandError("a provider URL works only with `amiko wallet provision --invite CODE`: here give the "
                           "provider's HOME", "invalid")

    return Home(resolve(text)).require()


def _call(home, method, params):
    with ControlClient(home.path, home.socket_path, timeout=30) as c:
        return c.call(method, params)


# -- provision

def _provision_args(p):
    p.add_argument("--port", required=True, help="the wallet's serial port (/dev/ttyACM0, serial:/dev/pts/3)")
    p.add_argument("--provider", required=True, metavar="HOME_OR_URL", help="the provider node's home, or its "
                   "amikolink://host:port/WALLET?key=HEX URL (with --invite)")
    p.add_argument("--wallet", help="wallet id (default: w- and 8 random hex digits)")
    p.add_argument("--limit", type=_amount, default=None, help="most per payment (default 10000; with an "
                   "invitation: the invitation's)")
    p.add_argument("--daily", type=_amount, default=None, help="most per day (default 50000; with an invitation: "
                   "the invitation's)")
    p.add_argument("--auto", type=int, default=None, help="amounts up to this are paid without a button press "
                   "(default 0; with an invitation: the invitation's)")
    p.add_argument("--invite", metavar="CODE", help="one-time invitation code from `amiko wallet invite` (with a "
                   "provider URL)")
    p.add_argument("--auto-count", type=int, default=None, help="auto-confirmed payments allowed since the last "
                   "button press (default 5)")
    p.add_argument("--auto-total", type=int, default=None, help="their cumulative amount since the last press "
                   "(default 3 x --auto)")
    p.add_argument("--auto-new", type=int, default=None, help="of those, payments to payees never confirmed by "
                   "the button (default 2)")


def _by_url(args):
    """A provider URL: the account is made through an invitation (amiko.node.provisioning)."""
    from amiko.node import provisioning

    try:
        return provisioning.request_account(args.provider, args.invite, args.wallet, args.limit, args.daily,
                                            args.auto)
    except provisioning.ProvisionError as e:
        raise CommandError(e.reason, e.code) from None


def _provision_run(args, out):
    by_url = "://" in args.provider
    if by_url:
        home = None
        if not args.invite:
            raise CommandError("a provider URL needs --invite CODE (ask the provider's owner to run `amiko wallet "
                               "invite`), or run this on the provider's machine with --provider HOME", "usage")
        if args.auto is not None and args.auto < 0:
            raise CommandError("--auto must be 0 or more", "usage")
        from amiko.node import provisioning

        try:  # a bad URL or code fails before the wallet is touched
            provisioning.parse_provider_url(args.provider)
            provisioning.parse_code(args.invite)
        except provisioning.ProvisionError as e:
            raise CommandError(e.reason, e.code) from None
    else:
        if args.invite:
            raise CommandError("--invite goes with a provider URL, not a HOME", "usage")
        home = _provider_home(args.provider)
        args.limit = 10000 if args.limit is None else args.limit
        args.daily = 50000 if args.daily is None else args.daily
        args.auto = 0 if args.auto is None else args.auto
    from amiko.node import autoconfirm

    rules = {name: getattr(args, name, None) for name in autoconfirm.NAMES}
    if by_url and any(v is not None for v in rules.values()):
        raise CommandError("with an invitation the provider's auto-confirm defaults apply: --auto-count, "
                           "--auto-total and --auto-new go with --provider HOME", "usage")
    if not by_url:
        try:
            rules = autoconfirm.values(rules, args.auto)
        except ValueError as e:
            raise CommandError("--" + str(e).replace("_", "-"), "usage") from None
    wallet_id = args.wallet or "w-" + os.urandom(4).hex()
    key = os.urandom(wl.KEY_SIZE)
    t = _transport(args.port)
    try:
        probe = exchange(t, m.Message(wl.TAP), (wl.HELLO,))
        if probe.type == wl.HELLO:
            raise CommandError("the wallet on %s is provisioned already (wallet %s, provider %s): to provision it "
                               "again, wipe its keys in its update mode (hold cancel at power-on, then OK; see "
                               "`amiko flash --update-mode`)" % (args.port, probe.wallet, probe.provider), "refused")
        if by_url:
            acct = _by_url(args)
            wallet_id, key = acct["wallet"], acct["key"]
            args.limit, args.daily, args.auto = acct["limit"], acct["daily"], acct["auto"]
            rules = autoconfirm.defaults(args.auto)
        else:
            acct = _call(home, "wallet_provision", dict(rules, wallet=wallet_id, key=key.hex(), limit=args.limit,
                                                        daily=args.daily, auto=args.auto))
        msg = m.Message(wl.PROVISION, wallet=wallet_id, key=key, provider=acct["provider"], limit=args.limit,
                        daily=args.daily, auto=args.auto, **rules)
        ack = exchange(t, msg, (wl.PROVISION_ACK,))
    finally:
        t.close()
    if ack.type != wl.PROVISION_ACK:
        raise CommandError("the wallet refused provisioning: %s" % ack.reason, "refused")
    if ack.wallet != wallet_id or not wl.verify(key, ack):
        raise CommandError("the wallet's acknowledgement does not prove the key: provisioning failed", "refused")
    result = dict(rules, wallet=wallet_id, provider=acct["provider"], limit=args.limit, daily=args.daily,
                  auto=args.auto, balance=0)
    topup = "HOME" if by_url else args.provider
    out.result(result, "wallet %s provisioned with provider %s\ntop it up with: amiko wallet topup --provider %s "
               "--wallet %s AMOUNT" % (wallet_id, acct["provider"], topup, wallet_id))
    return EXIT_OK


def _invite_args(p):
    p.add_argument("--home", required=True, metavar="PROVIDER_HOME", help="the provider node's home")
    p.add_argument("--limit", type=_amount, default=10000, help="most per payment (default 10000)")
    p.add_argument("--daily", type=_amount, default=50000, help="most per day (default 50000)")
    p.add_argument("--auto", type=int, default=0, help="amounts up to this need no button press (default 0)")
    p.add_argument("--ttl", type=int, default=86400, help="seconds the invitation stays valid (default 86400)")


def _invite_run(args, out):
    home = _provider_home(args.home)
    r = _call(home, "wallet_invite", {"limit": args.limit, "daily": args.daily, "auto": args.auto, "ttl": args.ttl})
    out.result(r, "invitation code (one use, valid until %s UTC): %s\nprovision with: amiko wallet provision --port "
               "PORT --provider '%s' --invite %s" % (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["expires"])),
                                                     r["code"], r["url"], r["code"]))
    return EXIT_OK


# -- topup / info

def _wallet_id(args):
    if args.wallet:
        return args.wallet
    if not args.port:
        raise CommandError("say which wallet: --wallet ID or --port PORT", "usage")

    t = _transport(args.port)
    try:
        hello = exchange(t, m.Message(wl.TAP), (wl.HELLO,))
    finally:
        t.close()
    if hello.type != wl.HELLO:
        raise CommandError("the wallet on %s is not provisioned: %s" % (args.port, hello.reason), "refused")
    return hello.wallet


def _topup_args(p):
    p.add_argument("amount", metavar="AMOUNT", type=_amount)
    p.add_argument("--provider", required=True, metavar="HOME")
    p.add_argument("--wallet")
    p.add_argument("--port")


def _topup_run(args, out):
    home = _provider_home(args.provider)
    r = _call(home, "wallet_topup", {"wallet": _wallet_id(args), "amount": args.amount})
    out.result(r, "wallet %s: +%d, balance %d" % (r["wallet"], r["amount"], r["balance"]))
    return EXIT_OK


def _info_args(p):
    p.add_argument("--provider", required=True, metavar="HOME")
    p.add_argument("--wallet")
    p.add_argument("--port")


def _info_run(args, out):
    home = _provider_home(args.provider)
    r = _call(home, "wallet_info", {"wallet": _wallet_id(args)})
    lines = ["wallet %s  balance %d  available %d  limit %d/payment %d/day" % (
        r["wallet"], r["balance"], r["available"], r["limit"], r["daily"])]
    for p in r["payments"]:
        lines.append("  %s %d %s %s" % (p["txid"][:12], p["amount"], p["state"], p["reason"] or ""))
    out.result(r, "\n".join(lines))
    return EXIT_OK


# -- history

def _history_args(p):
    p.add_argument("--port", required=True)
    p.add_argument("--limit", type=int, default=32)


def read_history(transport, limit=32):
    entries = []
    index = 0
    while index < limit:
        e = exchange(transport, m.Message(wl.GET_HISTORY, index=index), (wl.HISTORY_ENTRY,))
        if e.type != wl.HISTORY_ENTRY:
            if index == 0 and "not provisioned" in e.reason:
                raise CommandError("the wallet is not provisioned", "refused")
            break
        row = {}
        for k, v in e.fields.items():
            row[k] = v.hex() if isinstance(v, bytes) else v
        row["state"] = wl.STATE_NAMES[e.state]
        row["proof_ok"] = bool(e.token is not None and token_matches(e.token, e.txid))
        if e.signature is not None and e.payee_key is not None:
            from amiko.node import identity

            receipt = m.Message(m.RECEIPT, {k: e.fields[k] for k in ("id", "amount", "receipt", "txid",
                                                                      "meeting_points", "payee_key",
                                                                      "signature", "expires", "payee")
                                                  if k in e.fields})
            row["signature_ok"] = identity.verify(e.payee_key, m.receipt_signed_bytes(receipt), e.signature)
        entries.append(row)
        index += 1
        if index >= e.count:
            break
    return entries


def _history_run(args, out):
    t = _transport(args.port)
    try:
        entries = read_history(t, args.limit)
    finally:
        t.close()
    lines = ["%d payments" % len(entries)]
    for e in entries:
        lines.append("  %s %d %s %r token %s%s" % (e["state"], e["amount"], e["id"], e["receipt"],
                                                   e.get("token", "-"), " (proof ok)" if e["proof_ok"] else ""))
    out.result({"history": entries}, "\n".join(lines))
    return EXIT_OK


# -- pay (the terminal's relay, for a wallet on this computer's port)

def _pay_args(p):
    p.add_argument("url", metavar="URL", nargs="?", help="amikopay:// URL; without it: a contact (the wallet "
                   "finishes a pending payment)")
    p.add_argument("--port", required=True)
    p.add_argument("--timeout", type=float, default=60)


def _pay_run(args, out):
    from amiko.relay.core import Relay

    async def go():
        t = _transport(args.port)
        try:
            return await Relay(t).run(args.url, timeout=args.timeout)
        finally:
            t.close()

    r = asyncio.run(go())
    out.result(r, "%s%s" % (r["result"], ": " + r["reason"] if r.get("reason") else ""))
    return EXIT_OK if r["result"] in ("committed", "contact") else 1


_SUB = {
    "provision": (_provision_args, _provision_run, "pair a wallet with a provider node"),
    "invite": (_invite_args, _invite_run, "a one-time invitation to provision a wallet through this provider's URL"),
    "topup": (_topup_args, _topup_run, "credit a wallet's channel at its provider"),
    "history": (_history_args, _history_run, "proofs of payment stored on a wallet"),
    "info": (_info_args, _info_run, "a wallet's account at its provider"),
    "pay": (_pay_args, _pay_run, "relay a payment between a wallet on a serial port and the network"),
}


def _wallet_args(p):
    sub = p.add_subparsers(dest="wallet_command", metavar="SUBCOMMAND")
    sub.required = True
    for name, (add, run, help) in _SUB.items():
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object on stdout")
        add(sp)
        sp.set_defaults(_wallet_run=run)


def _wallet_run(args, out):
    return args._wallet_run(args, out)


def commands():
    return [Command("wallet", "wallet provisioning, top-up, history", _wallet_args, _wallet_run, uses_home=False)]
