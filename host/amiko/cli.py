"""The `amiko` command (console script amiko.cli:main).

Every command takes --home DIR (default $AMIKO_HOME) and --json (one JSON object on stdout:
the result, or {"error": {"code", "message"}}). Exit status: 0 done, 1 a payment was
cancelled (`amiko pay`), 2 any other error (one line on stderr that says what to do).

Commands are Command objects in a registry: the node commands below, plus those of the
modules in COMMAND_MODULES (each module has `commands() -> [Command, ...]`), so later
tools (bridge, wallet, emulate, flash, demo) plug in without touching the dispatch.
A module's command replaces a built-in one of the same name.
"""

import argparse
import importlib
import json
import sys

from amiko import filemodes
from amiko.node.control import ControlClient, ControlError
from amiko.node.grants import PERMISSIONS
from amiko.node.home import Home, resolve, check_id, HomeError
from amiko_core.errors import AmikoError, URLError
from amiko_core.messages import MAX_AMOUNT
from amiko_core.url import parse_link, parse_pay

EXIT_OK = 0
EXIT_CANCELLED = 1
EXIT_ERROR = 2

# Modules that contribute commands: "amiko.some_module" with commands() -> [Command].
COMMAND_MODULES = ("amiko.bridge", "amiko.wallet.cli", "amiko.emulate.cli", "amiko.flash", "amiko.demo")


class CommandError(Exception):
    """A one-line error for the user; code is the JSON error code."""

    def __init__(self, message, code="error", exit_code=EXIT_ERROR):
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code


class Command:
    """name, help, add_arguments(parser), run(args, out) -> exit status."""

    def __init__(self, name, help, add_arguments, run, uses_home=True):
        self.name = name
        self.help = help
        self.add_arguments = add_arguments
        self.run = run
        self.uses_home = uses_home


class Output:
    """Human text or one JSON object on stdout."""

    def __init__(self, as_json, stdout=None, stderr=None):
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def result(self, obj, text=None):
        if self.as_json:
            self.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        elif text is not None:
            self.stdout.write(text if text.endswith("\n") else text + "\n")
        self.stdout.flush()

    def error(self, message, code="error"):
        if self.as_json:
            self.stdout.write(json.dumps({"error": {"code": code, "message": message}}, sort_keys=True) + "\n")
            self.stdout.flush()
        self.stderr.write("amiko: %s\n" % message)
        self.stderr.flush()

    def note(self, text):
        """Progress for a human; silent with --json."""
        if not self.as_json:
            self.stderr.write(text + "\n")
            self.stderr.flush()


# -- helpers shared by the node commands

def _home(args):
    return Home(resolve(getattr(args, "home", None)))


def _client(args, timeout=30.0):
    home = _home(args).require()
    return ControlClient(home.path, home.socket_path, timeout=timeout)


def _call(args, method, params=None, timeout=30.0):
    with _client(args, timeout) as client:
        return client.call(method, params, timeout=timeout)


def _amount(text):
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("amount %r is not a whole number of base units (satoshi)" % text) from None
    if not 0 < value <= MAX_AMOUNT:
        raise argparse.ArgumentTypeError("amount %s must be in 1..%d" % (text, MAX_AMOUNT))
    return value


def _credit(text):
    if not text.isdigit() or int(text) > MAX_AMOUNT:
        raise argparse.ArgumentTypeError("credit limit %r must be a whole number of base units in 0..%d" % (text, MAX_AMOUNT))
    return int(text)


def _credit_arg(p):
    p.add_argument("--credit-limit", dest="credit_limit", type=_credit, metavar="N",
                   help="the most this node accepts in deposits from the peer on this link (default 0: none)")


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % text) from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("%s seconds must be in 0..86400 (exclusive of 0)" % text)
    return int(value) if value == int(value) else value


def _uint(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError("%r is not a channel number" % text)
    return int(text)


# -- init

def _init_args(p):
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="address of the node's TCP port (links and payment links)")
    p.add_argument("--name", help="node name (default: the home directory's name)")
    p.add_argument("--meeting-point", dest="meeting_points", action="append", default=[], metavar="NAME",
                   help="a meeting point this node is, named NAME@KEY by this node's key (repeatable)")
    p.add_argument("--external-meeting-point", dest="external_meeting_points", action="append", default=[],
                   metavar="NAME@KEY", help="a meeting point elsewhere (KEY: its node's key) that this node "
                   "offers to payers (repeatable)")
    p.add_argument("--route-timeout", type=_seconds, metavar="S", help="seconds (default 10)")
    p.add_argument("--lock-timeout", type=_seconds, metavar="S", help="seconds (default 10)")
    p.add_argument("--timeout-increment", type=_seconds, metavar="S", help="seconds per hop (default 5)")


def _init_run(args, out):
    from amiko.node import home as homes

    filemodes.private_umask()
    path = homes.resolve(args.home)
    home, config, identity = homes.create(
        path, args.listen, name=args.name, meeting_points=args.meeting_points,
        external_meeting_points=args.external_meeting_points, route_timeout=args.route_timeout,
        lock_timeout=args.lock_timeout, timeout_increment=args.timeout_increment)
    from amiko.node import daemon

    daemon.create_database(home)
    for fix in home.fixed:  # a HOME someone made before with looser modes: say what was fixed
        out.stderr.write("amiko: warning: %s (a node home is its owner's only)\n" % filemodes.describe_fix(fix))
    info = dict(config.as_dict(), home=home.path, key=identity.pubkey.hex(),
                fixed_modes=[{"path": p, "old": "%04o" % old, "new": "%04o" % new} for p, old, new in home.fixed])
    mps = "".join("\nmeeting point %s" % mp for mp in config.meeting_points)
    out.result(info, "created node home %s: node %s, listening on %s\nkey %s%s\nstart it with: amiko node --home %s"
               % (home.path, config.name, config.listen, info["key"], mps, home.path))
    return EXIT_OK


# -- node

def _node_args(p):
    p.add_argument("--developer", action="store_true",
                   help="developer mode: control methods that make this node cheat a peer on purpose, "
                        "for the attack tests (never in production)")
    p.add_argument("--dev-withhold-token", action="store_true",
                   help="with --developer: as payee, never release the token (failure tests)")
    p.add_argument("--dev-lock-delay", metavar="S|never",
                   help="with --developer: as payer, lock S seconds after routing, or never (failure tests)")
    p.add_argument("--dev-kill-in-group-commit", choices=("before", "after"),
                   help="with --developer: SIGKILL this node in the first link group transaction that applies "
                        "link messages of 2 or more connections, just before its COMMIT or right after it "
                        "(before its Acks are sent; durability tests)")
    p.add_argument("--dev-check-schemas", action="store_true",
                   help="with --developer: check every control call, answer and notification against "
                        "schemas/control/ (the tests' nodes)")


def _node_run(args, out):
    from amiko.node import daemon, paylink_tcp

    dev = {}
    if args.dev_withhold_token:
        dev["withhold_token"] = True
    if args.dev_lock_delay is not None:
        try:
            dev["lock_delay"] = paylink_tcp.parse_lock_delay(args.dev_lock_delay)
        except ValueError:
            raise AmikoError("--dev-lock-delay takes seconds or never, not %r" % args.dev_lock_delay) from None
    if args.dev_check_schemas:
        dev["check_schemas"] = True
    if args.dev_kill_in_group_commit:
        dev["kill_in_group_commit"] = args.dev_kill_in_group_commit
    if dev and not args.developer:
        raise AmikoError("--dev-withhold-token, --dev-lock-delay, --dev-kill-in-group-commit and --dev-check-schemas "
                         "need --developer")
    return daemon.main(_home(args), json_ready=out.as_json, stdout=out.stdout, developer=args.developer,
                       dev_options=dev)


# -- link

def _link_args(p):
    p.add_argument("name", metavar="NAME", help="this side's name for the link")
    p.add_argument("remote_url", metavar="REMOTE_URL", nargs="?", help="the amikolink:// URL the other node printed")
    p.add_argument("--timeout", type=_seconds, default=10, metavar="S",
                   help="with REMOTE_URL: seconds to wait for the link to come up (default 10)")
    p.add_argument("--peer-key", metavar="HEX", help="pin the peer node's key (its `amiko info` key) instead of "
                   "issuing an invitation")
    p.add_argument("--invite-expiry", type=_seconds, default=3600, metavar="S",
                   help="without REMOTE_URL: seconds the printed one-time invitation stays valid (default 3600)")
    _credit_arg(p)


def _link_run(args, out):
    try:
        check_id(args.name, "link name")
    except HomeError as e:
        raise CommandError("%s: pick a name of letters, digits and . _ ~ -" % e.reason, "invalid") from None
    params = {"name": args.name, "invite_expiry": args.invite_expiry}
    if args.peer_key is not None:
        params["peer_key"] = args.peer_key
    if args.remote_url is not None:
        from amiko_core.errors import URLError

        try:
            remote = parse_link(args.remote_url)
        except URLError as e:
            raise CommandError("bad link URL %r: %s (expected amikolink://HOST:PORT/NAME?key=HEX, as `amiko link` prints it)"
                               % (args.remote_url, e.reason.replace("url: ", "")), "invalid") from None
        if "key" not in remote.query:
            raise CommandError("link URL %r lacks ?key=: use the URL exactly as `amiko link` printed it on the other node"
                               % args.remote_url, "invalid")
        params["remote_url"] = args.remote_url
        params["wait"] = args.timeout
    if args.credit_limit is not None:
        params["credit_limit"] = args.credit_limit
    result = _call(args, "link", params, timeout=args.timeout + 30)
    text = result["url"]
    if args.remote_url is not None and not result.get("connected"):
        if not out.as_json:
            out.stdout.write(text + "\n")
        why = " (%s)" % result["last_error"] if result.get("last_error") else ""
        raise CommandError("link %s saved but not connected after %s s%s: check that the node at %s is running "
                           "and the URL is the one it printed (this node keeps trying)"
                           % (args.name, args.timeout, why, args.remote_url), "timeout")
    out.result(result, text)
    return EXIT_OK


# -- deposit / withdraw / meetingpoint

def _deposit_args(p):
    p.add_argument("link", metavar="LINK")
    p.add_argument("amount", metavar="AMOUNT", type=_amount, help="integer base units (satoshi)")
    _credit_arg(p)


def _deposit_run(args, out):
    params = {"link": args.link, "amount": args.amount}
    if args.credit_limit is not None:
        params["credit_limit"] = args.credit_limit
    r = _call(args, "deposit", params)
    out.result(r, "channel %s on link %s: deposited %d" % (r["channel"], r["link"], r["amount"]))
    return EXIT_OK


def _withdraw_args(p):
    p.add_argument("link", metavar="LINK")
    p.add_argument("channel", metavar="CHANNEL", type=_uint, help="channel number (see `amiko status`)")


def _withdraw_run(args, out):
    r = _call(args, "withdraw", {"link": args.link, "channel": args.channel})
    out.result(r, "channel %s on link %s: withdrawn (%s)" % (r["channel"], r["link"], r.get("state", "closed")))
    return EXIT_OK


def _meetingpoint_args(p):
    p.add_argument("id", metavar="NAME", help="meeting point this node becomes: NAME@KEY with this node's key "
                   "(NAME@<another key> is refused)")


def _meetingpoint_run(args, out):
    r = _call(args, "meetingpoint", {"id": args.id})
    out.result(r, "meeting point %s added (this node: %s)" % (r["meeting_point"], ", ".join(r["meeting_points"])))
    return EXIT_OK


# -- request / pay

def _request_args(p):
    p.add_argument("amount", metavar="AMOUNT", type=_amount, help="integer base units (satoshi)")
    p.add_argument("--receipt", default="", metavar="TEXT", help="what is paid for (at most 512 bytes)")


def _request_run(args, out):
    if len(args.receipt.encode("utf-8")) > 512:
        raise CommandError("receipt text is %d bytes, at most 512 allowed: shorten it" % len(args.receipt.encode()), "invalid")
    r = _call(args, "request", {"amount": args.amount, "receipt": args.receipt})
    out.result(r, r["url"])
    return EXIT_OK


def _pay_args(p):
    p.add_argument("url", metavar="URL", help="the amikopay:// URL of the payment request")
    p.add_argument("--yes", action="store_true", help="pay without asking")
    p.add_argument("--timeout", type=_seconds, default=60, metavar="S",
                   help="seconds to wait for the payment to complete (default 60)")


def _ask(out, question):
    """True if the user answers yes. Reads stdin (a tty, or a pipe for scripts)."""
    stream = out.stderr if out.as_json else out.stdout
    stream.write(question + " ")
    stream.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        stream.write("\n")
        return False
    return answer.strip().lower() in ("y", "yes")


def _pay_run(args, out):
    try:
        parse_pay(args.url)
    except URLError as e:
        raise CommandError("bad payment URL %r: %s (expected amikopay://HOST[:PORT]/ID, as `amiko request` prints it)"
                           % (args.url, e.reason.replace("url: ", "")), "invalid") from None

    with _client(args, timeout=30) as client:
        offer = client.call("pay_start", {"url": args.url}, timeout=30)
        if offer.get("result") == "cancelled":
            return _pay_outcome(out, offer)
        receipt = offer["receipt"] if offer["receipt"] else "(no receipt text)"
        if not args.yes and not _ask(out, "Pay %d for %s? [y/N]" % (offer["amount"], receipt)):
            result = client.call("pay_decline", {"handle": offer["handle"]}, timeout=30)
            return _pay_outcome(out, result)
        try:
            result = client.call("pay_confirm", {"handle": offer["handle"], "timeout": args.timeout},
                                 timeout=args.timeout + 30)
        except ControlError as e:
            if e.code == "timeout":
                raise CommandError("no outcome for the payment within %s s; it is still in progress in the node: "
                                   "see `amiko status`" % args.timeout, "timeout") from None
            raise
    return _pay_outcome(out, result)


def _pay_outcome(out, result):
    if result["result"] == "committed":
        out.result(result, "committed")
        return EXIT_OK
    out.result(result, "cancelled: %s" % (result.get("reason") or "unknown reason"))
    return EXIT_CANCELLED


def _cancel_args(p):
    p.add_argument("id", metavar="ID", help="payment id (of the amikopay:// URL) or transaction id")
    p.add_argument("--reason", metavar="TEXT", help="why (told to the other endpoint)")


def _cancel_run(args, out):
    r = _call(args, "cancel", {"id": args.id, "reason": args.reason})
    out.result(r, "cancelled: %s" % (r.get("reason") or "cancelled"))
    return EXIT_OK


# -- status

def _status_args(p):
    pass


def _status_run(args, out):
    r = _call(args, "status")
    out.result(r, format_status(r))
    return EXIT_OK


def _fmt_value(v):
    if isinstance(v, float):
        return "%g" % v
    if isinstance(v, (list, tuple)):
        return ",".join(_fmt_value(x) for x in v) or "-"
    if v is None:
        return "-"
    return str(v)


def _fmt_row(row):
    if not isinstance(row, dict):
        return _fmt_value(row)
    return "  ".join("%s=%s" % (k, _fmt_value(v)) for k, v in row.items())


_LINK_COLS = ("name", "connected", "unacked", "remote_url", "last_error", "credit_limit", "credit_used")
_CHANNEL_COLS = ("link", "id", "kind", "state", "local", "remote", "reserved", "locked")
_PENDING_COLS = ("txid", "side", "state", "amount", "meeting_point", "up_link", "down_link")
_HISTORY_COLS = ("txid", "role", "state", "amount", "receipt", "reason", "token")
_DISPUTE_COLS = ("link", "channel", "txid", "amount", "state", "created", "reason")


def _pick(row, cols):
    return {k: row.get(k) for k in cols if k in row} if isinstance(row, dict) else row


def format_status(s):
    """Human-readable status (the --json object has every field)."""
    lines = []
    node = s.get("node") or {}
    lines.append("node %s  listening on %s  pid %s" % (node.get("name", s.get("name")), node.get("listen"), node.get("pid")))
    if node.get("key"):
        lines.append("key %s" % node["key"])
    if "balance" in s:
        lines.append("balance: %s" % s["balance"])
    lines.append("meeting points: %s" % _fmt_value(s.get("meeting_points")))
    if s.get("external_meeting_points"):
        lines.append("external meeting points: %s" % _fmt_value(s["external_meeting_points"]))
    for key, title, cols in (("links", "links", _LINK_COLS), ("channels", "channels", _CHANNEL_COLS),
                             ("pending", "pending transactions", _PENDING_COLS),
                             ("history", "payment history", _HISTORY_COLS),
                             ("disputes", "disputes", _DISPUTE_COLS)):
        rows = s.get(key) or []
        lines.append("%s: %s" % (title, len(rows) if rows else "none"))
        for row in rows:
            lines.append("  " + _fmt_row(_pick(row, cols)))
    return "\n".join(lines)


# -- grant

def _grant_args(p):
    p.add_argument("key", metavar="KEYHEX", nargs="?", help="the BOLT 8 key to grant (a bridge prints its own with "
                   "`amiko bridge key`)")
    p.add_argument("--permissions", metavar="LIST", help="comma-separated: request,cancel,watch (what a shop's "
                   "bridge needs; nothing that pays or moves funds can be granted)")
    p.add_argument("--list", action="store_true", help="list the granted keys")
    p.add_argument("--revoke", metavar="KEYHEX", help="revoke a key's grant (its connections close at once)")


def _grant_run(args, out):
    if args.list:
        r = _call(args, "grant_list")
        out.result(r, "\n".join("%s  %s" % (g["key"], ",".join(g["permissions"])) for g in r["grants"]) or "no grants")
        return EXIT_OK
    if args.revoke:
        r = _call(args, "grant_revoke", {"key": args.revoke})
        out.result(r, "revoked %s (%d connection(s) closed)" % (r["key"], r.get("closed", 0)))
        return EXIT_OK
    if not args.key or not args.permissions:
        raise CommandError("give KEYHEX and --permissions request,cancel,watch (or --list, or --revoke KEYHEX)", "usage")

    perms = [p.strip() for p in args.permissions.split(",") if p.strip()]
    bad = [p for p in perms if p not in PERMISSIONS]
    if bad or not perms:
        raise CommandError("cannot grant %s: permissions are %s (nothing that pays or moves funds can be granted)"
                           % (",".join(bad) or "nothing", ",".join(sorted(PERMISSIONS))), "invalid")
    r = _call(args, "grant", {"key": args.key, "permissions": perms})
    out.result(r, "granted %s: %s" % (r["key"], ",".join(r["permissions"])))
    return EXIT_OK


BUILTIN_COMMANDS = [
    Command("init", "create a node home (config, key, database)", _init_args, _init_run),
    Command("node", "run the node in the foreground until SIGTERM or SIGINT", _node_args, _node_run),
    Command("link", "print a one-time invitation URL for a link; with REMOTE_URL connect it", _link_args, _link_run),
    Command("deposit", "open an IOU channel on a link, funded by this side", _deposit_args, _deposit_run),
    Command("withdraw", "close a channel once nothing is pending on it", _withdraw_args, _withdraw_run),
    Command("meetingpoint", "make this node a meeting point", _meetingpoint_args, _meetingpoint_run),
    Command("request", "create a payment request; prints its amikopay:// URL", _request_args, _request_run),
    Command("pay", "pay an amikopay:// URL", _pay_args, _pay_run),
    Command("cancel", "cancel a payment in progress before it is locked", _cancel_args, _cancel_run),
    Command("status", "links, channels, pending transactions, meeting points, payments", _status_args, _status_run),
    Command("grant", "grant a key (a shop's bridge) control methods over the node's TCP port; --list; --revoke",
            _grant_args, _grant_run),
]


def commands():
    """name -> Command: the built-ins, then those of COMMAND_MODULES (which may replace them)."""
    table = {c.name: c for c in BUILTIN_COMMANDS}
    for module_name in COMMAND_MODULES:
        for c in importlib.import_module(module_name).commands():
            table[c.name] = c
    return table


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (and as JSON with --json), exit 2."""

    argv = None  # the arguments being parsed (main sets it), to answer --json even on usage errors

    def error(self, message):
        as_json = "--json" in (_Parser.argv if _Parser.argv is not None else sys.argv[1:])
        out = Output(as_json)
        where = self.prog[len("amiko "):] if self.prog.startswith("amiko ") else ""
        out.error("%s%s (see `%s --help`)" % (where + ": " if where else "", message, self.prog), "usage")
        sys.exit(EXIT_ERROR)


def build_parser(table=None):
    table = table or commands()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output: one JSON object")
    home_opt = argparse.ArgumentParser(add_help=False)
    home_opt.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                          help="node home (default: $AMIKO_HOME)")
    parser = _Parser(prog="amiko", description="Amiko Pay: payment channel node and tools.",
                     parents=[common, home_opt])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for c in table.values():
        parents = [common, home_opt] if c.uses_home else [common]
        p = sub.add_parser(c.name, help=c.help, description=c.help, parents=parents)
        c.add_arguments(p)
        p.set_defaults(_command=c)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    _Parser.argv = argv
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(getattr(args, "json", False))
    if not hasattr(args, "home"):
        args.home = None
    command = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        out.error("no command given: run `amiko COMMAND --help`, e.g. `amiko init --help`", "usage")
        return EXIT_ERROR

    try:
        return command.run(args, out)
    except CommandError as e:
        out.error(e.message, e.code)
        return e.exit_code
    except ControlError as e:
        out.error(e.message, e.code)
        return EXIT_ERROR
    except AmikoError as e:
        out.error(e.reason, "home" if type(e).__name__ == "HomeError" else "invalid")
        return EXIT_ERROR
    except KeyboardInterrupt:
        out.error("interrupted", "interrupted")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
