"""Where the gateway may send a webhook (SSRF): an endpoint URL checked
for its form, and its host resolved to addresses of which none may be
anything but global unicast, IPv4 carried inside IPv6 judged by that IPv4
(RFC 3056 6to4, RFC 4380 Teredo, RFC 6052 NAT64, IPv4-mapped)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from planzoom.errors import InvalidInput, Unavailable


class Unsafe(InvalidInput):
    """An endpoint on an address the gateway may not call."""

    reason = "WEBHOOK_URL_NOT_ALLOWED"


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: A URL's authority with an IPv6 literal: the brackets and an optional port only.
IP_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True unless ``ip`` is global unicast, and so is every IPv4 address it
    carries: IPv4-mapped, 6to4 (2002::/16, RFC 3056), Teredo (2001::/32, RFC
    4380: server and client) and NAT64 (64:ff9b::/96, RFC 6052) each reach
    the IPv4 address inside them, e.g. ``2002:a9fe:a9fe::1`` is 169.254.169.254."""
    if isinstance(ip, ipaddress.IPv6Address):
        inside = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in NAT64:
            inside.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and _forbidden(v4) for v4 in inside):
            return True
        if ip.ipv4_mapped is not None:
            return False  # the IPv4 address it maps to is the one reached
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
            or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an endpoint URL: http(s), a host, no
    credentials or fragment, at most 2,000 characters. Raises InvalidInput."""
    if len(url) > 2000:
        raise InvalidInput("the URL is over 2,000 characters", field="url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        host and host.encode("idna")  # a label over 63 characters, an empty label
        if "[" in parts.netloc and not IP_LITERAL.fullmatch(parts.netloc):
            raise ValueError("text around an IPv6 literal")
    except (ValueError, UnicodeError):
        raise InvalidInput("the URL is not valid (RFC 3986): check its host and brackets",
                           field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("the URL must be http:// or https:// with a host", field="url")
    if parts.username or parts.password or parts.fragment:
        raise InvalidInput("the URL may not carry credentials or a fragment", field="url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput("the URL's port is not valid", field="url") from None
    return parts.scheme, parts.hostname, port


async def resolve_allowed(host: str, port: int, allow_private: bool) -> str:
    """An address of ``host`` the gateway may connect to. Raises Unsafe if
    any address it resolves to is not public (unless ``allow_private``),
    Unavailable if it does not resolve."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise Unavailable(f"{host} does not resolve ({e.strerror})",
                          reason="WEBHOOK_HOST_UNKNOWN") from None
    except UnicodeError:
        raise InvalidInput(f"{host[:100]} is not a valid host name", field="url") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not allow_private:
        bad = [str(ip) for ip in addresses if _forbidden(ip)]
        if bad:
            raise Unsafe(f"{host} resolves to {', '.join(sorted(set(bad)))}, which is not a "
                         "public address; webhooks go to public endpoints only", field="url")
    return str(addresses[0])
