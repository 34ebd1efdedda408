"""A node's home directory and its configuration file.

Layout of a home (created by `amiko init`, mode 0700):

    HOME/node.toml      configuration (below); edit it only while the node is stopped
    HOME/node.key       identity key (amiko.node.identity, mode 0600)
    HOME/node.db        SQLite database (amiko.node.store), plus its -wal / -shm files
    HOME/node.log       log file of `amiko node` (appended)
    HOME/node.lock      lock file: held (flock) by the running node, holds its pid
    HOME/control.sock   control socket of the running node (amiko.node.control)

Secrets at rest (amiko.filemodes): HOME is mode 0700 and everything in it 0600. `amiko init` and
`amiko node` run with umask 077 and fix a HOME made before with looser modes (e.g. a folder
created 0755 by mkdir before `amiko init`, a node.db copied in 0644); each fixed path is
reported (init: a warning on stderr; node: a warning in node.log).

node.toml (read with tomllib, written by the small writer below; unknown keys are refused):

    name = "alice"                       # 1..64 of [A-Za-z0-9._~-]; shown in status and logs
    listen = "127.0.0.1:4321"            # HOST:PORT of the one TCP port (links and payment links);
                                         # also the host:port put into this node's URLs
    meeting_points = ["alice-mp@02ab..."] # meeting points this node is, NAME@KEY with its own key
                                         # (amiko init writes them so; a bare NAME means the same);
                                         # more via `amiko meetingpoint`
    external_meeting_points = []         # meeting points elsewhere (NAME@KEY of their node) that
                                         # this node offers in requests
    route_timeout = 10                   # seconds
    lock_timeout = 10                    # seconds
    timeout_increment = 5                # seconds added per hop to commit deadlines
    max_pending_per_link = 1000          # payments in progress over one link before new ones are refused
    max_outbox_per_link = 10000          # unacknowledged messages queued for one link
    handshake_timeout = 5                # seconds for a connection's BOLT 8 handshake (and a link's answer)
    first_frame_timeout = 10             # seconds from the handshake to a connection's first frame
    max_connections = 512                # connections at once (the oldest unauthenticated is dropped first)
    max_connections_per_address = 128    # connections at once from one IP address (same rule)
    link_keepalive = 10                  # seconds: an idle node link sends a keepalive; 3x without a frame: dropped
"""

import errno
import fcntl
import os
import re
import tomllib

from amiko_core.errors import AmikoError, URLError
from amiko_core.url import MAX_ID, AmikoURL, LINK, id_problem

from amiko.filemodes import PRIVATE_DIR, make_private

CONFIG_FILE = "node.toml"
KEY_FILE = "node.key"
DB_FILE = "node.db"
LOG_FILE = "node.log"
LOCK_FILE = "node.lock"
SOCKET_FILE = "control.sock"

DEFAULTS = {
    "route_timeout": 10,
    "lock_timeout": 10,
    "timeout_increment": 5,
    "max_pending_per_link": 1000,
    "max_outbox_per_link": 10000,
    "handshake_timeout": 5,
    "first_frame_timeout": 10,
    "max_connections": 512,
    "max_connections_per_address": 128,
    "link_keepalive": 10,
}
_TIMEOUT_KEYS = ("route_timeout", "lock_timeout", "timeout_increment", "handshake_timeout", "first_frame_timeout",
                 "link_keepalive")
_MAX_TIMEOUT = 24 * 3600
_MAX_MEETING_POINTS = 8  # a Receipt carries at most 8
KEYS = ("name", "listen", "meeting_points", "external_meeting_points") + tuple(DEFAULTS)


class HomeError(AmikoError):
    """A node home is missing, invalid, or in use; the reason says what to do."""


def init_command(path):
    return "amiko init --home %s --listen HOST:PORT" % path


def resolve(path_arg, environ=None):
    """The home directory from --home or $AMIKO_HOME (absolute path)."""
    environ = os.environ if environ is None else environ
    path = path_arg or environ.get("AMIKO_HOME")
    if not path:
        raise HomeError("no node home given: pass --home DIR or set AMIKO_HOME")
    return os.path.abspath(os.path.expanduser(path))


def parse_listen(text):
    """(host, port) from HOST:PORT (IPv6 in brackets); HomeError says what is wrong."""
    if not isinstance(text, str) or ":" not in text:
        raise HomeError("listen address %r must be HOST:PORT, e.g. 127.0.0.1:4321" % (text,))
    host, _, port = text.rpartition(":")
    if not re.fullmatch(r"[1-9][0-9]{0,4}", port) or int(port) > 65535:
        raise HomeError("listen address %r: port must be a number in 1..65535" % text)
    try:
        checked = AmikoURL(LINK, host, int(port), "x")
    except URLError as e:
        raise HomeError("listen address %r: %s" % (text, e.reason.replace("url: ", ""))) from None
    return checked.host, int(port)


def format_listen(host, port):
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def check_id(value, what, extra=""):
    problem = id_problem(value, extra)
    if problem:
        raise HomeError("%s %r %s" % (what, value, problem))
    return value


class NodeConfig:
    """The settings of node.toml as attributes (also readable as a mapping: cfg["name"], cfg.get())."""

    def __init__(self, name, listen, meeting_points=(), external_meeting_points=(), **settings):
        unknown = sorted(set(settings) - set(DEFAULTS))
        if unknown:
            raise HomeError("unknown setting %s (known: %s)" % (", ".join(unknown), ", ".join(KEYS)))
        self.name = check_id(name, "node name")
        self.host, self.port = parse_listen(listen)
        self.meeting_points = self._ids(meeting_points, "meeting_points", bare_ok=True)
        self.external_meeting_points = self._ids(external_meeting_points, "external_meeting_points")
        for key, default in DEFAULTS.items():
            value = settings.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise HomeError("setting %s must be a number, got %r" % (key, value))
            if key in _TIMEOUT_KEYS:
                if not 0 < value <= _MAX_TIMEOUT:
                    raise HomeError("setting %s must be in 0..%d seconds (exclusive of 0), got %r" % (key, _MAX_TIMEOUT, value))
            elif not isinstance(value, int) or value < 1:
                raise HomeError("setting %s must be a positive integer, got %r" % (key, value))
            setattr(self, key, value)

    @staticmethod
    def _ids(values, key, bare_ok=False):
        """Meeting point ids NAME@KEY (amiko.node.meetingpoints); bare_ok: a NAME alone too (this
        node's own, the key is added by the engine)."""
        from amiko.node import meetingpoints

        if isinstance(values, str) or not isinstance(values, (list, tuple)):
            raise HomeError("setting %s must be a list of meeting point ids" % key)
        out = []
        for v in values:
            if bare_ok and isinstance(v, str) and "@" not in v:
                check_id(v, "meeting point name", ":")
            else:
                problem = meetingpoints.problem(v)
                if problem:
                    raise HomeError("setting %s: meeting point id %s" % (key, problem))
            if v not in out:
                out.append(v)
        if len(out) > _MAX_MEETING_POINTS:
            raise HomeError("setting %s: at most %d meeting points" % (key, _MAX_MEETING_POINTS))
        return out

    @property
    def listen(self):
        return format_listen(self.host, self.port)

    def as_dict(self):
        d = {"name": self.name, "listen": self.listen, "meeting_points": list(self.meeting_points),
             "external_meeting_points": list(self.external_meeting_points)}
        for key in DEFAULTS:
            d[key] = getattr(self, key)
        return d

    def __getitem__(self, key):
        if key not in KEYS and key not in ("host", "port"):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        return key in KEYS or key in ("host", "port")

    def __repr__(self):
        return "NodeConfig(%r)" % self.as_dict()


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = []
        for c in value:
            if c in '"\\':
                out.append("\\" + c)
            elif ord(c) < 0x20 or ord(c) == 0x7F:
                out.append("\\u%04x" % ord(c))
            else:
                out.append(c)
        return '"' + "".join(out) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError("cannot write %r to TOML" % (value,))


def dump_toml(mapping, header=None):
    """A flat TOML document (str, int, float, bool, lists of those) from a dict."""
    lines = ["# " + h for h in (header or [])]
    for key, value in mapping.items():
        lines.append("%s = %s" % (key, _toml_value(value)))
    return "\n".join(lines) + "\n"


class Home:
    """Paths in a node home, its config, and the lock the running node holds."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.config_path = os.path.join(self.path, CONFIG_FILE)
        self.key_path = os.path.join(self.path, KEY_FILE)
        self.db_path = os.path.join(self.path, DB_FILE)
        self.log_path = os.path.join(self.path, LOG_FILE)
        self.lock_path = os.path.join(self.path, LOCK_FILE)
        self.socket_path = os.path.join(self.path, SOCKET_FILE)
        self._lock_fd = None
        self.fixed = []

    def exists(self):
        return os.path.isfile(self.config_path)

    def require(self):
        """Raise the 'run amiko init' error unless this is a node home."""
        if not self.exists():
            raise HomeError("no node home at %s: run `%s` first" % (self.path, init_command(self.path)))
        return self

    def load_config(self):
        self.require()
        try:
            with open(self.config_path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise HomeError("%s is not valid TOML (%s): fix or re-create it" % (self.config_path, e)) from None
        except OSError as e:
            raise HomeError("cannot read %s: %s" % (self.config_path, e.strerror or e)) from None
        for key in ("name", "listen"):
            if key not in data:
                raise HomeError("%s lacks the setting %r: add it or re-create the home" % (self.config_path, key))
        try:
            return NodeConfig(**data)
        except HomeError as e:
            raise HomeError("%s: %s" % (self.config_path, e.reason)) from None

    def save_config(self, config):
        text = dump_toml(config.as_dict(), ["Amiko node configuration (written by `amiko init`).",
                                            "Edit only while the node is stopped."])
        tmp = self.config_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.config_path)

    # -- the lock that keeps two nodes off one home

    def running_pid(self):
        """pid of the node holding this home's lock, or None if no node runs on it."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                text = os.read(fd, 32).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() else 0
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def acquire(self):
        """Take the home's lock for this process (released on exit, even on a crash)."""
        self.require()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise HomeError(
                    "a node is already running on %s (pid %s): stop it first, or use another --home"
                    % (self.path, text or "unknown")
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._lock_fd = fd
        return self

    def release(self):
        if self._lock_fd is not None:
            try:
                os.ftruncate(self._lock_fd, 0)
            except OSError:
                pass
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None


def own_meeting_points(values, pubkey):
    """values (NAME or NAME@KEY) as this node's meeting point ids NAME@<pubkey>; HomeError for
    an id with another node's key."""
    from amiko.node import meetingpoints

    try:
        return [meetingpoints.own(v, pubkey) for v in values]
    except AmikoError as e:
        raise HomeError(e.reason) from None


def create(path, listen, name=None, meeting_points=(), external_meeting_points=(), **settings):
    """Create a node home: directory, node.toml, identity key. Returns (home, config, identity).

    The database is created by the caller (it needs the store). Refuses an existing home.
    home.fixed lists the modes make_private changed on a folder that existed already.
    """
    from amiko.node.identity import Identity

    home = Home(path)
    if home.exists():
        raise HomeError("%s is already a node home: use it, or pick another --home" % home.path)
    if name is None:
        name = re.sub(r"[^A-Za-z0-9._~-]", "-", os.path.basename(home.path))[:MAX_ID].strip(".") or "node"
    settings = {k: v for k, v in settings.items() if v is not None}
    config = NodeConfig(name, listen, list(meeting_points), list(external_meeting_points), **settings)
    try:
        os.makedirs(home.path, mode=PRIVATE_DIR, exist_ok=True)
        home.fixed = make_private(home.path)  # a folder made before, e.g. 0755 by mkdir
    except OSError as e:
        raise HomeError("cannot create node home %s: %s" % (home.path, e.strerror or e)) from None
    # An interrupted init may have left the key behind: keep using it.
    identity = Identity.load_or_create(home.key_path)
    config.meeting_points = own_meeting_points(config.meeting_points, identity.pubkey)
    home.save_config(config)  # written last: a home exists once node.toml does
    return home, config, identity
