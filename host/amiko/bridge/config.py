"""The bridge's configuration file (TOML; every key optional, unknown keys refused).

    node = "/var/lib/amiko/shop"      # the shop's node: its HOME (control socket HOME/control.sock),
                                      # "unix:/path/to/control.sock" (both: every method), or
                                      # "tcp://HOST:PORT?key=NODEKEY": the node's TCP port over BOLT 8
                                      # (NODEKEY: its `amiko info` key), as the bridge's own key
                                      # (`amiko bridge key`), which the node must have granted:
                                      # `amiko grant BRIDGEKEY --permissions request,cancel,watch`
    listen = "127.0.0.1:8080"         # HOST:PORT of the cashier page (0.0.0.0:8080 to reach it from a phone)
    transports = ["serial:/dev/ttyACM0"]   # where wallets connect ([] = QR code / amikopay URL only)
    providers = ["provider.example:4321"]  # the wallet providers this shop accepts (HOST:PORT, [IPv6]:PORT):
                                      # a wallet's Hello naming another provider is refused and the
                                      # relay connects nowhere; default: the shop node's own address
                                      # (its `listen`). A listed name that resolves to a loopback or
                                      # private address is refused: list the address itself.
    shop_name = "Amiko shop"          # shown on the page and on printed receipts
    receipt = ""                      # default receipt text for a sale
    currency = "sat"                  # unit label of amounts on the page
    poll_interval = 0.05              # ignored (kept so older configs load): the bridge learns payment
                                      # states by push (the node's `watch`), not by polling
    hostnames = ["shop-pi.local"]     # names the page is opened by (Host header; IP addresses always
                                      # pass); default: the listen host, localhost, this machine's
                                      # hostname and HOSTNAME.local. Anything else (DNS rebinding) gets 421
    state_dir = "/var/lib/amiko/bridge"   # paired cashier devices and customer receipt links (0700 dir,
                                      # 0600 files); default: bridge-state/ next to the config file
                                      # ($XDG_STATE_HOME/amiko-bridge without a config file)
    cashier_token = "..."             # optional secret (>= 32 characters): signs a device in at the
                                      # login page like a pairing code, and lets scripts use the API
                                      # with "Authorization: Bearer TOKEN"; keep the file 0600

    [timeouts]                        # seconds per phase (see amiko.bridge.sale)
    preparing = 10
    waiting = 120
    connected = 10
    confirming = 60
    routing = 40
    locked = 40

Defaults: node = $AMIKO_HOME, hostnames, state_dir and cashier_token as said there (no token),
everything else as above. A relative `node` or `state_dir` is relative to the config file's
directory.
"""

import os
import socket
import tomllib

from amiko.bridge import sale as sales

DEFAULTS = {
    "node": None,
    "listen": "127.0.0.1:8080",
    "transports": [],
    "providers": None,
    "shop_name": "Amiko shop",
    "receipt": "",
    "currency": "sat",
    "poll_interval": 0.05,
    "timeouts": {},
    "hostnames": None,
    "state_dir": None,
    "cashier_token": None,
}
TRANSPORT_SCHEMES = ("serial", "nfc", "ble")


class ConfigError(ValueError):
    """The bridge config is unusable; the message says what to fix."""


def _listen(text, where):
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError("%s: listen must be \"HOST:PORT\", e.g. \"127.0.0.1:8080\", got %r" % (where, text))
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError("%s: listen %r: need HOST:PORT with a port in 1..65535" % (where, text))
    return host, int(port)


def parse_transport(text):
    """("serial", "/dev/ttyACM0") from "serial:/dev/ttyACM0"; ConfigError if not usable."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError("transport %r must look like \"serial:/dev/ttyACM0\"" % (text,))
    scheme, _, rest = text.partition(":")
    if scheme not in TRANSPORT_SCHEMES:
        raise ConfigError("transport %r: kind must be one of %s" % (text, ", ".join(TRANSPORT_SCHEMES)))
    if not rest:
        raise ConfigError("transport %r names no device" % text)
    return scheme, rest


def default_state_dir():
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "amiko-bridge")


def default_hostnames(listen_host):
    names = ["localhost"]
    if listen_host not in ("0.0.0.0", "::", ""):
        names.append(listen_host)
    try:
        me = socket.gethostname()
    except OSError:
        me = ""
    if me:
        names += [me, me.split(".")[0] + ".local"]
    return names


def _hostnames(value, listen_host):
    if value is None:
        return [n.lower() for n in default_hostnames(listen_host)]
    if not isinstance(value, list) or not all(isinstance(n, str) and n and len(n) <= 253 and ":" not in n
                                              for n in value):
        raise ConfigError("hostnames must be a list of host names like [\"shop-pi.local\"] (no ports)")
    return [n.lower().rstrip(".") for n in value]


def node_address(value, base_dir="."):
    """("unix", socket_path, home_or_None) or ("tcp", host, port, node_key) for the `node` setting."""
    if value is None:
        value = os.environ.get("AMIKO_HOME")
        if not value:
            raise ConfigError("no shop node given: set node = \"/path/to/node/home\" in the config or $AMIKO_HOME")
    if not isinstance(value, str) or not value:
        raise ConfigError("node must be a node HOME path, \"unix:/path/control.sock\" or \"tcp://HOST:PORT\"")
    if value.startswith("tcp://"):
        address, _, query = value[len("tcp://"):].partition("?")
        host, port = _listen(address.rstrip("/"), "node")
        key_hex = query[len("key="):] if query.startswith("key=") and "&" not in query else ""
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            key = b""
        from amiko.node.identity import valid_pubkey

        if not valid_pubkey(key):
            raise ConfigError("node %r: a tcp:// node needs ?key=NODEKEY, the node's key (`amiko info` on the node "
                              "prints it), e.g. tcp://%s:%d?key=02...; the old plain forwarded control socket is "
                              "gone (the bridge connects over BOLT 8)" % (value, host, port))
        return ("tcp", host, port, key)
    if value.startswith("unix:"):
        return ("unix", os.path.join(base_dir, value[len("unix:"):]), None)
    home = os.path.abspath(os.path.join(base_dir, os.path.expanduser(value)))
    return ("unix", os.path.join(home, "control.sock"), home)


class Config:
    def __init__(self, values=None, base_dir="."):
        values = dict(values or {})
        unknown = sorted(set(values) - set(DEFAULTS))
        if unknown:
            raise ConfigError("unknown setting(s) %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(DEFAULTS))))
        merged = dict(DEFAULTS)
        merged.update(values)
        self.node = node_address(merged["node"], base_dir)
        self.listen = merged["listen"]
        self.host, self.port = _listen(merged["listen"], "listen")
        if not isinstance(merged["transports"], list):
            raise ConfigError("transports must be a list like [\"serial:/dev/ttyACM0\"]")
        self.transports = list(merged["transports"])
        for t in self.transports:
            parse_transport(t)
        providers = merged["providers"]
        if providers is not None:
            from amiko.relay.policy import parse_entry

            if not isinstance(providers, list):
                raise ConfigError("providers must be a list like [\"provider.example:4321\"]")
            for entry in providers:
                try:
                    parse_entry(entry)
                except ValueError as e:
                    raise ConfigError("providers: %s" % e) from None
        self.providers = None if providers is None else list(providers)
        for key in ("shop_name", "currency", "receipt"):
            if not isinstance(merged[key], str) or len(merged[key]) > 200:
                raise ConfigError("%s must be text of at most 200 characters" % key)
        self.shop_name = merged["shop_name"]
        self.currency = merged["currency"]
        try:
            self.receipt = sales.check_receipt(merged["receipt"])
        except sales.SaleError as e:
            raise ConfigError("receipt: %s" % e) from None
        poll = merged["poll_interval"]
        if type(poll) not in (int, float) or not 0.01 <= poll <= 5:
            raise ConfigError("poll_interval must be 0.01..5 seconds, got %r" % (poll,))
        self.poll_interval = poll
        if not isinstance(merged["timeouts"], dict):
            raise ConfigError("[timeouts] must be a table of phase = seconds")
        try:
            sales.SaleMachine(merged["timeouts"])
        except ValueError as e:
            raise ConfigError("[timeouts]: %s" % e) from None
        self.timeouts = dict(merged["timeouts"])
        self.hostnames = _hostnames(merged["hostnames"], self.host)
        state_dir = merged["state_dir"]
        if state_dir is not None and (not isinstance(state_dir, str) or not state_dir):
            raise ConfigError("state_dir must be a directory path")
        self.state_dir = (os.path.abspath(os.path.join(base_dir, os.path.expanduser(state_dir))) if state_dir
                          else default_state_dir())
        token = merged["cashier_token"]
        if token is not None and (not isinstance(token, str) or len(token) < 32 or len(token) > 200
                                  or not token.isprintable() or token.strip() != token):
            raise ConfigError("cashier_token must be a secret of 32..200 printable characters (e.g. the output "
                              "of `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        self.cashier_token = token

    @property
    def page_url(self):
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = "[%s]" % host if ":" in host else host
        return "http://%s:%d/" % (host, self.port)


def load(path=None, overrides=None):
    """Config from a TOML file (None: defaults only), then overrides (a dict)."""
    values = {}
    base_dir = "."
    if path is not None:
        base_dir = os.path.dirname(os.path.abspath(path))
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError("no bridge config at %s: create it (see `amiko bridge --help`) or leave out --config"
                              % path) from None
        except OSError as e:
            raise ConfigError("cannot read %s: %s" % (path, e.strerror or e)) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("%s is not valid TOML: %s" % (path, e)) from None
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if path is not None and values.get("state_dir") is None:
        values["state_dir"] = "bridge-state"
    return Config(values, base_dir)
