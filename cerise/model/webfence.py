"""The fence around the web: which addresses the operator may fetch from (pure).

The operator fetches http(s) input files, workflows and Specialisation archives for its
users, from inside the cluster; unfenced, a user could make it read the cluster's own
services, the cloud's metadata endpoint or the operator's loopback. So an address is
refused when it lies in a range that is not the public internet (`SPECIAL_RANGES`:
loopback, link-local, private (RFC 1918, ULA), CGNAT, multicast, reserved…) unless an
allow-list lets it through. An IPv6 address that carries an IPv4 one (mapped, compatible,
SIIT, NAT64 with either well-known prefix, 6to4, Teredo) is judged by the IPv4 address as
well: it must pass on both counts.

* `Fence.allowed_hosts`: host names (``data.example.org``, or ``*.example.org`` for every
  name below it), allowed whatever they resolve to;
* `Fence.allowed_networks`: addresses and networks (``10.1.2.3``, ``10.1.0.0/16``).

`NEVER_ALLOWED` (the cloud metadata endpoints) and `Fence.denied_networks` (the cluster's
own ranges, set by whoever runs the operator) are refused even when allowed, also for an
allowed host name once it resolves, so no allow-list can open them. The
allow-list is the union of the operator's (`ALLOW_VARIABLE`) and a ComputeResource's
(``spec.webInputs.allow``); the denials are the operator's (`DENY_VARIABLE`) and the
address of the Kubernetes API service (``KUBERNETES_SERVICE_HOST``).

The caller resolves the host, asks `Fence.refusal` about every address it got, connects
only to an address that passed, and asks again after every redirect.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_VARIABLE = "CERISE_WEB_ALLOW"
"""The operator's allow-list: host names and networks, separated by commas or spaces."""
DENY_VARIABLE = "CERISE_WEB_DENY"
"""Networks the operator always refuses (e.g. the cluster's pod and service ranges)."""
RESOURCE_FIELD = "spec.webInputs.allow"
ALLOW_HINT = f"{RESOURCE_FIELD} of the ComputeResource or the operator's {ALLOW_VARIABLE}"
"""How a refused address can be allowed, for messages."""

_RANGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the loopback range", ("127.0.0.0/8", "::1/128")),
    ("a private range", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("a unique local (private) range", ("fc00::/7", "fec0::/10")),
    ("the link-local range", ("169.254.0.0/16", "fe80::/10")),
    ("the shared address space of carrier-grade NAT", ("100.64.0.0/10",)),
    ("the unspecified range", ("0.0.0.0/8", "::/128")),
    ("a multicast range", ("224.0.0.0/4", "ff00::/8")),
    ("a reserved range", ("240.0.0.0/4", "192.0.0.0/24", "198.18.0.0/15", "100::/64")),
    ("a documentation range", ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                               "2001:db8::/32")),
)
SPECIAL_RANGES: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(network), rule) for rule, networks in _RANGES for network in networks)
"""Every range refused by default, with the rule a refusal names."""
NEVER_ALLOWED: tuple[tuple[Network, str], ...] = (
    (ipaddress.ip_network("169.254.169.254/32"), "the cloud metadata endpoint"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "the cloud metadata endpoint"),
)
"""Refused whatever the allow-lists say."""
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_NAT64_LOCAL_PREFIXES = (48, 56, 64, 96)
"""RFC 6052 prefix lengths a site may use inside 64:ff9b:1::/48; each that fits is judged."""
_NUMERIC = re.compile(r"([0-9.]+|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)(/[0-9]{1,3})?")
"""What is meant as an address or network: IPv4 digits and dots, or IPv6 with a colon."""
_HOST = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


DEFAULT_MAX_BYTES = 8 << 30
"""The largest http(s) input file a job may have, unless its ComputeResource says."""
DEFAULT_TIMEOUT = 3600.0
"""Seconds that fetching one http(s) input may take, unless its ComputeResource says."""


@dataclass(frozen=True)
class Refusal:
    """Why an address is refused: the `rule`, the `network` it matched, and whether an
    allow-list could let it through (`allowable`)."""

    address: Address
    rule: str
    network: Network
    allowable: bool = True
    carried: ipaddress.IPv4Address | None = None
    """The IPv4 address carried by `address` that the rule matched, if it was that one."""

    def explain(self, host: str) -> str:
        """For a person: which rule refused `host` (as the URL names it), and what to do."""
        shown = str(self.address)
        try:
            literal = ipaddress.ip_address(host.strip("[]")) == self.address
        except ValueError:  # a host name
            literal = False
        if self.carried is not None:
            shown = f"{shown} (carrying {self.carried})"
        where = shown if literal else f"{host} resolves to {shown}, which"
        if not self.allowable:
            return f"{where} is in {self.rule} ({self.network}); no allow-list opens it"
        return f"{where} is in {self.rule} ({self.network}); allow it with {ALLOW_HINT}"


@dataclass(frozen=True)
class Fence:
    """The addresses web fetches may reach; see the module docstring."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()
    denied_networks: tuple[tuple[Network, str], ...] = ()

    def refusal(self, host: str, address: Address) -> Refusal | None:
        """None if `host` (the URL's host name) may be fetched at `address`; else why not."""
        judged = (address, *carried_ipv4(address))
        for candidate in judged:
            for network, rule in (*NEVER_ALLOWED, *self.denied_networks):
                if _within(candidate, network):
                    return _refusal(address, candidate, rule, network, allowable=False)
        if _host_allowed(host, self.allowed_hosts):
            return None
        for candidate in judged:
            if any(_within(candidate, network) for network in self.allowed_networks):
                continue
            for network, rule in SPECIAL_RANGES:
                if _within(candidate, network):
                    return _refusal(address, candidate, rule, network, allowable=True)
        return None

    def widened(self, entries: Iterable[str], origin: str) -> Fence:
        """This fence with more allowed hosts and networks (`origin` names them in errors)."""
        hosts, networks = parse_allowed(entries, origin)
        return Fence(self.allowed_hosts | hosts, (*self.allowed_networks, *networks),
                     self.denied_networks)


@dataclass(frozen=True)
class WebInputs:
    """How a compute resource's jobs fetch http(s) inputs: behind `fence`, at most
    `max_bytes` bytes and `timeout` seconds each."""

    fence: Fence = Fence()
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT


def operator_fence(environ: Mapping[str, str]) -> Fence:
    """The operator's fence, from its environment (see the module docstring).

    ValueError names a variable whose value cannot be read.
    """
    hosts, networks = parse_allowed(_words(environ.get(ALLOW_VARIABLE, "")), ALLOW_VARIABLE)
    denied: list[tuple[Network, str]] = []
    for word in _words(environ.get(DENY_VARIABLE, "")):
        network = _network(word, DENY_VARIABLE)
        if network is None:
            raise ValueError(f"{DENY_VARIABLE}: {word[:100]!r} is not an address or network")
        denied.append((network, f"a network refused by the operator's {DENY_VARIABLE}"))
    service = environ.get("KUBERNETES_SERVICE_HOST", "")
    if _network(service, "KUBERNETES_SERVICE_HOST") is not None:
        denied.append((ipaddress.ip_network(service), "the Kubernetes API service's network"))
    return Fence(frozenset(hosts), tuple(networks), tuple(denied))


def parse_allowed(entries: Iterable[str], origin: str) -> tuple[frozenset[str], list[Network]]:
    """Host names and networks of an allow-list; ValueError names a wrong entry."""
    hosts: set[str] = set()
    networks: list[Network] = []
    for entry in entries:
        network = _network(entry, origin)
        if network is not None:
            networks.append(network)
        elif _HOST.fullmatch(entry.lower()) and len(entry) <= 253:
            hosts.add(entry.lower().rstrip("."))
        else:
            raise ValueError(f"{origin}: {entry[:100]!r} is neither a host name (or "
                             "*.domain) nor an address or network (10.1.0.0/16)")
    return frozenset(hosts), networks


def _network(text: str, origin: str) -> Network | None:
    """`text` as an address or network; None if it is not one (e.g. a host name)."""
    if not _NUMERIC.fullmatch(text):
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{origin}: {text[:100]!r} is not a valid address or network") from None


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[\s,]+", text) if word]


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    host = host.lower().rstrip(".")
    if host in allowed:
        return True
    labels = host.split(".")
    return any(f"*.{'.'.join(labels[i:])}" in allowed for i in range(1, len(labels)))


def _within(address: Address, network: Network) -> bool:
    return address.version == network.version and address in network


def carried_ipv4(address: Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address may stand for: mapped (``::ffff:a.b.c.d``),
    compatible (``::a.b.c.d``), SIIT (``::ffff:0:a.b.c.d``), NAT64 (``64:ff9b::/96``, and
    every RFC 6052 layout within ``64:ff9b:1::/48``), 6to4 (``2002::/16``) and Teredo
    (``2001::/32``: its server and its client)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return ()
    value = int(address)
    if address in _COMPATIBLE and value <= 1:  # :: and ::1 are themselves
        return ()
    if any(address in network for network in (_MAPPED, _SIIT, _COMPATIBLE, _NAT64)):
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if address in _NAT64_LOCAL:
        found = (_rfc6052_ipv4(value, length) for length in _NAT64_LOCAL_PREFIXES)
        return tuple(ipaddress.IPv4Address(v) for v in dict.fromkeys(found) if v is not None)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return ()


def _rfc6052_ipv4(value: int, prefix: int) -> int | None:
    """The IPv4 address embedded after a `prefix`-bit NAT64 prefix (RFC 6052 section 2.2):
    its 32 bits follow the prefix, skipping bits 64-71 (the "u" octet); None if the bits
    that layout keeps zero (the u octet and the suffix) are not, so it cannot be meant."""
    bits = f"{value:0128b}"
    if prefix == 96:
        return int(bits[96:], 2)
    after = bits[prefix:64] + bits[72:]
    if "1" in bits[64:72] or "1" in after[32:]:
        return None
    return int(after[:32], 2)


def _refusal(address: Address, candidate: Address, rule: str, network: Network, *,
             allowable: bool) -> Refusal:
    carried = candidate if isinstance(candidate, ipaddress.IPv4Address) and (
        candidate != address) else None
    return Refusal(address, rule, network, allowable, carried)
