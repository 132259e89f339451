"""Where a task may connect: ``EGRESS_DENY`` and ``EGRESS_ALLOW`` over default denials.

An address is refused when

1. an ``EGRESS_DENY`` entry matches it (deny wins over everything), else
2. it is one of the app's own endpoints (its database, its Redis): refused unless an
   ``EGRESS_ALLOW`` entry that matches it names that very port (``127.0.0.1`` alone in
   the allow-list does not open the app's Redis on 127.0.0.1:6379; ``127.0.0.1:6379``
   does), else
3. an ``EGRESS_ALLOW`` entry matches it (allow wins over the default denials), else
4. it is in a default denial: loopback, link-local (cloud metadata 169.254.169.254,
   fd00:ec2::254), the unspecified address. Private ranges are allowed: internal services
   are what an orchestrator calls.

An entry is a CIDR, an address or a host name, with an optional ``:port`` (IPv6 in
brackets to take a port: ``[fd00::/8]:443``). A host name entry matches the name the
task asked for, whatever it resolves to. A name is resolved once and every address it
resolves to must pass; the caller then connects to those addresses only (no second
lookup a rebinding DNS server could answer differently).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_DENY", "EgressDenied", "EgressPolicy", "EgressRefused", "Rule",
           "host_address", "parse_rules", "resolve"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENY: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128",  # loopback: the app itself, its Redis, its database
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128",  # link-local, cloud metadata
    "0.0.0.0/8", "::/128",  # "this host": connecting to 0.0.0.0 reaches loopback
))
# Default ports of the app's own endpoints when their URL names none.
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "redis": 6379,
                  "rediss": 6379}
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")
# inet_aton's legacy IPv4 forms: 2130706433, 0x7f.1, 017700000001, 127.1.
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")


class EgressRefused(Exception):
    """A connection the policy refuses (not retried: the same call would be refused)."""


class EgressDenied(EgressRefused):
    def __init__(self, address: Address, port: int) -> None:
        shown = f"[{address}]" if address.version == 6 else str(address)
        super().__init__(f"egress to {shown}:{port} denied by policy (EGRESS_ALLOW to permit)")
        self.address, self.port = address, port


def _canonical(address: Address) -> Address:
    # ::ffff:127.0.0.1 reaches 127.0.0.1: judge it as that.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_address(host: str) -> Address | None:
    """The address a host written as a literal stands for (any form the C library would
    accept, so ``2130706433`` and ``0x7f.1`` are 127.0.0.1), or None for a name."""
    text = host.strip().lower().strip("[]").rstrip(".")
    try:
        return _canonical(ipaddress.ip_address(text.split("%")[0]))
    except ValueError:
        pass
    if _LEGACY_IPV4.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to, in the resolver's order (one lookup)."""
    seen: list[Address] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = _canonical(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        if address not in seen:
            seen.append(address)
    return seen


_OWN: dict[str, frozenset[Address]] = {}


def _own_addresses(host: str) -> frozenset[Address]:
    """The addresses of one of the app's own hosts, looked up once a process (a failed
    lookup is tried again next time rather than remembered as "no address")."""
    if host not in _OWN:
        literal = host_address(host)
        try:
            _OWN[host] = frozenset({literal} if literal is not None else resolve(host, 0))
        except OSError:
            return frozenset()
    return _OWN[host]


@dataclass(frozen=True)
class Rule:
    """One entry of EGRESS_DENY or EGRESS_ALLOW."""

    network: Network | None = None
    host: str | None = None
    port: int | None = None

    def matches(self, host: str, address: Address, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address.version == self.network.version and address in self.network
        return host == self.host


def _rule(entry: str, key: str) -> Rule:
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::([0-9]+))?", entry)
    if bracketed:
        target, port_text = bracketed.group(1), bracketed.group(2)
    elif entry.count(":") == 1:
        target, port_text = entry.split(":")
    else:
        target, port_text = entry, None
    problem = f"{key}: {entry!r} is not a CIDR, an address or a host name (with an optional :port)"
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(problem)
        port = int(port_text)
    target = target.lower().rstrip(".")
    if "/" in target:
        try:
            network = ipaddress.ip_network(target, strict=False)
        except ValueError:
            raise ValueError(problem) from None
        return Rule(network=network, port=port)
    literal = host_address(target)
    if literal is not None:
        return Rule(network=ipaddress.ip_network(literal), port=port)
    if not _HOST_NAME.match(target):
        raise ValueError(problem)
    return Rule(host=target, port=port)


def parse_rules(raw: str | Iterable[str] | None, key: str) -> tuple[Rule, ...]:
    """Entries separated by commas or spaces; ``ValueError`` names the bad one."""
    text = raw if isinstance(raw, str) else " ".join(raw or ())
    return tuple(_rule(entry, key) for entry in re.split(r"[\s,]+", text) if entry)


def _endpoint(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.split("+")[0].lower()
        if not parts.hostname or scheme not in _DEFAULT_PORTS:
            return None  # SQLite, a Unix socket: nothing a task could reach over TCP
        return parts.hostname, parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None


@dataclass(frozen=True)
class EgressPolicy:
    deny: tuple[Rule, ...] = ()
    allow: tuple[Rule, ...] = ()
    own: tuple[tuple[str, int], ...] = field(default=())  # the app's database and Redis

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EgressPolicy:
        own = (_endpoint(str(config.get(k) or "")) for k in ("SQLALCHEMY_DATABASE_URI",
                                                             "REDIS_URL"))
        return cls(deny=parse_rules(config.get("EGRESS_DENY"), "EGRESS_DENY"),
                   allow=parse_rules(config.get("EGRESS_ALLOW"), "EGRESS_ALLOW"),
                   own=tuple(e for e in own if e is not None))

    def _is_own(self, address: Address, port: int) -> bool:
        for host, own_port in self.own:
            if own_port != port:
                continue
            addresses = _own_addresses(host)
            # A server on loopback answers on every loopback address (127.0.0.2 too).
            if address in addresses or (address.is_loopback
                                        and any(a.is_loopback for a in addresses)):
                return True
        return False

    def permits(self, host: str, address: Address, port: int) -> bool:
        address = _canonical(address)
        if any(rule.matches(host, address, port) for rule in self.deny):
            return False
        allowed = [rule for rule in self.allow if rule.matches(host, address, port)]
        if self._is_own(address, port):
            return any(rule.port == port for rule in allowed)
        if allowed:
            return True
        return not any(address.version == net.version and address in net
                       for net in DEFAULT_DENY)

    def addresses(self, host: str, port: int) -> list[Address]:
        """The addresses to connect to for ``host:port``: resolved once, each one checked;
        ``EgressDenied`` names the first refused one (``OSError`` if the name does not
        resolve). Connect to these, never to ``host`` again."""
        name = host.strip().lower().strip("[]").rstrip(".")
        literal = host_address(name)
        found = [literal] if literal is not None else resolve(name, port)
        if not found:
            raise OSError(f"{host} resolves to no address")
        for address in found:
            if not self.permits(name, address, port):
                raise EgressDenied(address, port)
        return found
