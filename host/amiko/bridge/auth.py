"""Who may drive the cashier page: paired devices, pairing codes, the config's cashier token.

A device signs in once, with a pairing code shown on the terminal's console (at start, or by
`amiko bridge pair`) or with the bridge config's `cashier_token`; it then holds a session
cookie (a random 256-bit secret). Only the secret's SHA-256 is stored, with the device's id,
name and times, in STATE_DIR/devices.json (0600), so sessions survive restarts and the file
does not give a session to whoever reads it. `amiko bridge devices --revoke ID` deletes one;
the running bridge sees the file change at its next request (and closes that device's pages).

Pairing codes are 8 digits, live CODE_LIFETIME seconds, are used once, and die after
MAX_WRONG wrong attempts (by anyone, with any code): a guesser has MAX_WRONG chances in 10^8
per code shown, and can at worst make the shop show a fresh code. Only the code's hash is
stored. Several processes (the bridge, `amiko bridge pair`, `amiko bridge devices`) share the
file under an flock on devices.json.lock; writes go to a temporary file and os.replace.
"""

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time

FILE_NAME = "devices.json"
CODE_DIGITS = 8
CODE_LIFETIME = 600
MAX_WRONG = 5
MAX_DEVICES = 100
MAX_NAME = 60
TOKEN_MIN = 32


class PairingError(Exception):
    """A sign-in attempt failed; status is the HTTP status, message says what to do."""

    def __init__(self, message, status=401):
        super().__init__(message)
        self.message = message
        self.status = status


def _sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalise_code(text):
    """The digits of a typed code ("1234 5678", "1234-5678" -> "12345678")."""
    return "".join(c for c in str(text) if c not in " -\t")


def format_code(code):
    return code[:4] + " " + code[4:]


def clean_name(text):
    name = "".join(c for c in str(text or "") if c >= " " and c != "\x7f").strip()[:MAX_NAME]
    return name or "cashier device"


def write_private(path, data):
    """Write bytes to path atomically, readable by the owner only (0600)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        if fd is not None:
            os.close(fd)
    os.replace(tmp, path)


def private_dir(path):
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class CashierAuth:
    def __init__(self, state_dir, token=None, clock=time.time):
        self.dir = state_dir
        self.path = os.path.join(state_dir, FILE_NAME)
        self.token_hash = _sha256(token) if token else None
        self.clock = clock
        self._state = None
        self._stamp = None

    # -- the shared file

    def _empty(self):
        return {"version": 1, "devices": {}, "pairing": None}

    def _read(self):
        try:
            with open(self.path, "rb") as f:
                state = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return self._empty()
        except (OSError, ValueError) as e:
            raise OSError("cannot read the cashier devices file %s: %s" % (self.path, e)) from None
        if not isinstance(state, dict) or not isinstance(state.get("devices"), dict):
            raise OSError("the cashier devices file %s is damaged: remove it and pair the devices again" % self.path)
        return state

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _locked(self, change):
        """Run change(state) under the file lock; it returns a result; the state is written back."""
        private_dir(self.dir)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self._read()
            before = json.dumps(state, sort_keys=True)
            result = change(state)
            if json.dumps(state, sort_keys=True) != before or self._file_stamp() is None:
                write_private(self.path, json.dumps(state, sort_keys=True, indent=1).encode("utf-8"))
            self._state, self._stamp = state, self._file_stamp()
            return result
        finally:
            os.close(fd)

    def current(self):
        """The state as on disk now (re-read only when the file changed)."""
        stamp = self._file_stamp()
        if self._state is None or stamp != self._stamp:
            self._state, self._stamp = self._read(), stamp
        return self._state

    # -- pairing codes

    def new_code(self, lifetime=CODE_LIFETIME):
        """A fresh pairing code (replaces any earlier one); returns (code, expires wall time)."""
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        expires = self.clock() + lifetime

        def change(state):
            state["pairing"] = {"code_sha256": _sha256(code), "expires": expires, "wrong": 0}

        self._locked(change)
        return code, expires

    def pair(self, secret_text, name, remote=None):
        """Sign a device in with a pairing code or the cashier token; returns (device id, session secret).
        Raises PairingError (the attempt counts against the current code)."""
        typed = str(secret_text or "").strip()
        now = self.clock()

        def change(state):
            p = state.get("pairing")
            if p is not None and now >= p["expires"]:
                state["pairing"] = p = None
            via = None
            if self.token_hash is not None and len(typed) >= TOKEN_MIN and hmac.compare_digest(
                    _sha256(typed), self.token_hash):
                via = "token"
            elif p is not None and hmac.compare_digest(_sha256(normalise_code(typed)), p["code_sha256"]):
                via = "code"
                state["pairing"] = None  # used once
            if via is None:
                if p is None:
                    return PairingError("no pairing code is valid now: show a fresh one on the terminal with "
                                        "`amiko bridge pair` (codes live %d minutes and are used once)"
                                        % (CODE_LIFETIME // 60))
                p["wrong"] += 1
                if p["wrong"] >= MAX_WRONG:
                    state["pairing"] = None
                    return PairingError("wrong code %d times: this code no longer works; show a fresh one on the "
                                        "terminal with `amiko bridge pair`" % MAX_WRONG, 429)
                return PairingError("wrong code (%d more tries for this code)" % (MAX_WRONG - p["wrong"]))
            devices = state["devices"]
            if len(devices) >= MAX_DEVICES:
                return PairingError("%d devices are paired already: revoke some with `amiko bridge devices --revoke ID`"
                                    % MAX_DEVICES, 409)
            device_id = secrets.token_hex(4)
            while device_id in devices:
                device_id = secrets.token_hex(4)
            session = secrets.token_urlsafe(32)
            devices[device_id] = {"name": clean_name(name), "session_sha256": _sha256(session), "created": int(now),
                                  "via": via, "address": str(remote or "")[:64]}
            return device_id, session

        result = self._locked(change)
        if isinstance(result, PairingError):
            raise result
        return result

    # -- sessions

    def device_for(self, session):
        """The device id a session cookie belongs to, or None."""
        if not session or len(session) > 100:
            return None
        digest = _sha256(session)
        for device_id, d in self.current()["devices"].items():
            if hmac.compare_digest(d.get("session_sha256", ""), digest):
                return device_id
        return None

    def device_ids(self):
        return set(self.current()["devices"])

    def devices(self):
        """[{id, name, created, via, address}] (never the session hash)."""
        out = []
        for device_id, d in sorted(self.current()["devices"].items(), key=lambda kv: kv[1].get("created", 0)):
            out.append({"id": device_id, "name": d.get("name"), "created": d.get("created"), "via": d.get("via"),
                        "address": d.get("address")})
        return out

    def revoke(self, device_id):
        """Forget one device (device_id "all": every device); returns the ids revoked."""
        def change(state):
            ids = list(state["devices"]) if device_id == "all" else [device_id] if device_id in state["devices"] else []
            for i in ids:
                del state["devices"][i]
            return ids

        return self._locked(change)
