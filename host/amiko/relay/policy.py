"""Where a terminal's relay may connect for a wallet's provider (issue 12).

A wallet's Hello names its provider (amikolink://HOST:PORT/WALLET?key=...). The terminal does
not trust it: it connects only to providers its operator listed (the bridge config's
`providers = ["HOST:PORT", ...]`; by default the shop node's own address and nothing else).

ProviderPolicy(entries, default=None).check(url) -> the host to dial, or RelayError(reason):
  - HOST:PORT of the URL must equal an entry (host compared in canonical form, port exact);
  - a listed DNS name is resolved here and every address it resolves to must be public:
    loopback, private (RFC 1918, fc00::/7), link-local, CGNAT, unspecified, multicast and
    reserved ranges are refused unless the entry is that address itself (so a name that
    rebinds to 127.0.0.1 or 10.x is not a way in); the relay then dials the address it checked.
  - default: an async function returning the entries to use when none are configured
    (the bridge: the shop node's `listen` from its `info`), asked once.
"""

import asyncio
import ipaddress
import socket

from amiko_core.errors import URLError
from amiko_core.url import DEFAULT_PORT, AmikoURL, LINK

from amiko.relay.core import RelayError


def parse_entry(text):
    """(canonical host, port) of "HOST:PORT" / "[IPv6]:PORT" / "HOST" (port 4321); ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError("provider %r must be \"HOST:PORT\"" % (text,))
    host, port = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("provider %r: '[' without ']'" % text)
        host, rest = text[1:close], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("provider %r: expected :PORT after ]" % text)
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        raise ValueError("provider %r: write an IPv6 address in brackets, e.g. \"[::1]:4321\"" % text)
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError("provider %r: the port must be 1..65535" % text)
    try:
        u = AmikoURL(LINK, host, int(port) if port is not None else DEFAULT_PORT, "x")
    except URLError as e:
        raise ValueError("provider %r: %s" % (text, e.reason)) from None
    return u.host, u.port


def _ip(host):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def not_public(addr):
    """Why an address is no public unicast address (None if it is one)."""
    if addr.is_loopback:
        return "loopback"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_multicast:
        return "multicast"
    if addr.is_link_local:
        return "link-local"
    if addr.is_private or (addr.version == 4 and addr in ipaddress.ip_network("100.64.0.0/10")):
        return "private"
    if addr.is_reserved:
        return "reserved"
    return None


def _show(host, port):
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


class ProviderPolicy:
    def __init__(self, entries=None, default=None, resolve=None):
        self.entries = None if entries is None else [parse_entry(e) for e in entries]
        self.default = default
        self._resolve = resolve or _getaddrinfo

    async def allowed(self):
        if self.entries is None:
            found = await self.default() if self.default is not None else []
            self.entries = [parse_entry(e) for e in found]
        return self.entries

    async def check(self, u):
        """The host to dial for the provider URL u; RelayError saying why it is refused."""
        entries = await self.allowed()
        where = _show(u.host, u.port)
        if (u.host, u.port) not in entries:
            listed = ", ".join(_show(h, p) for h, p in entries) or "none"
            raise RelayError("the wallet's provider %s is not one this shop accepts (bridge config providers: %s): "
                             "connecting nowhere" % (where, listed))
        if _ip(u.host) is not None:
            return u.host  # an address the operator listed itself
        addrs = await self._resolve(u.host, u.port)
        if not addrs:
            raise RelayError("the wallet's provider %s does not resolve" % where)
        for a in addrs:
            why = not_public(ipaddress.ip_address(a))
            if why:
                raise RelayError("the wallet's provider %s resolves to %s, a %s address: refused (list that address "
                                 "in the bridge config providers to allow it)" % (where, a, why))
        return addrs[0]


async def _getaddrinfo(host, port):
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({info[4][0] for info in infos})
