"""The web fence: which addresses the operator may fetch from, and why not."""

from __future__ import annotations

import ipaddress

import pytest

from cerise.model import compute, webfence
from cerise.model.compute import InvalidResource
from cerise.model.webfence import Fence

DEFAULT = Fence()


def refused(fence: Fence, address: str, host: str = "files.example.org") -> str | None:
    """The message for `host` at `address`, or None if allowed."""
    refusal = fence.refusal(host, ipaddress.ip_address(address))
    return None if refusal is None else refusal.explain(host)


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "the loopback range (127.0.0.0/8)"),
        ("127.1.2.3", "the loopback range (127.0.0.0/8)"),
        ("::1", "the loopback range (::1/128)"),
        ("10.0.0.5", "a private range (10.0.0.0/8)"),
        ("172.31.255.1", "a private range (172.16.0.0/12)"),
        ("192.168.1.1", "a private range (192.168.0.0/16)"),
        ("fd12:3456::1", "a unique local (private) range (fc00::/7)"),
        ("169.254.1.1", "the link-local range (169.254.0.0/16)"),
        ("fe80::1", "the link-local range (fe80::/10)"),
        ("100.64.0.1", "the shared address space of carrier-grade NAT (100.64.0.0/10)"),
        ("0.0.0.0", "the unspecified range (0.0.0.0/8)"),  # noqa: S104 (an address to refuse)
        ("::", "the unspecified range (::/128)"),
        ("224.0.0.1", "a multicast range (224.0.0.0/4)"),
        ("255.255.255.255", "a reserved range (240.0.0.0/4)"),
        # IPv6 forms of refused IPv4 addresses are judged by the IPv4 address
        ("::ffff:127.0.0.1", "the loopback range (127.0.0.0/8)"),
        ("64:ff9b::a00:5", "a private range (10.0.0.0/8)"),
        ("2002:a9fe:101::1", "the link-local range (169.254.0.0/16)"),
    ],
)
def test_addresses_off_the_public_internet_are_refused_naming_the_rule(
    address: str, rule: str
) -> None:
    message = refused(DEFAULT, address)
    assert message is not None
    assert f"is in {rule}; allow it with spec.webInputs.allow" in message
    assert "CERISE_WEB_ALLOW" in message


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111",
                                     "::ffff:8.8.8.8", "2002:808:808::1"])
def test_public_addresses_pass(address: str) -> None:
    assert refused(DEFAULT, address) is None


def test_the_message_says_what_the_host_resolved_to() -> None:
    assert refused(DEFAULT, "10.0.0.5", host="10.0.0.5") == (
        "10.0.0.5 is in a private range (10.0.0.0/8); allow it with spec.webInputs.allow of "
        "the ComputeResource or the operator's CERISE_WEB_ALLOW")
    assert (refused(DEFAULT, "10.0.0.5", host="intranet") or "").startswith(
        "intranet resolves to 10.0.0.5, which is in a private range (10.0.0.0/8)")


def test_allowed_hosts_and_networks_pass_and_nothing_else() -> None:
    fence = DEFAULT.widened(["data.internal", "*.lab.example", "10.1.0.0/16", "127.0.0.1"],
                            "test")
    assert refused(fence, "10.9.9.9", host="data.internal") is None
    assert refused(fence, "10.9.9.9", host="DATA.internal.") is None
    assert refused(fence, "192.168.1.1", host="a.b.lab.example") is None
    assert refused(fence, "192.168.1.1", host="lab.example") is not None  # only names below
    assert refused(fence, "192.168.1.1", host="evil-lab.example") is not None
    assert refused(fence, "10.1.200.3") is None
    assert refused(fence, "10.2.0.1") is not None
    assert refused(fence, "127.0.0.1") is None
    assert refused(fence, "127.0.0.2") is not None
    assert refused(fence, "::ffff:127.0.0.1") is None


def test_the_operators_denials_hold_against_any_allow_list() -> None:
    fence = webfence.operator_fence({
        "CERISE_WEB_ALLOW": "10.0.0.0/8, files.example.org",
        "CERISE_WEB_DENY": "10.96.0.0/12 203.0.113.7",
        "KUBERNETES_SERVICE_HOST": "10.43.0.1",
    }).widened(["0.0.0.0/0"], webfence.RESOURCE_FIELD)
    assert refused(fence, "10.1.2.3") is None
    assert refused(fence, "10.96.0.10", host="files.example.org") == (
        "files.example.org resolves to 10.96.0.10, which is in a network refused by the "
        "operator's CERISE_WEB_DENY (10.96.0.0/12); no allow-list opens it")
    assert "no allow-list opens it" in (refused(fence, "203.0.113.7") or "")
    assert "the Kubernetes API service's network (10.43.0.1/32)" in (
        refused(fence, "10.43.0.1") or "")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("300.1.1.1", "is not a valid address or network"),
        ("10.0.0.0/33", "is not a valid address or network"),
        ("fe80::1::2", "is not a valid address or network"),
        ("a/host", "is neither a host name"),
        ("http://x.org", "is neither a host name"),
        ("*", "is neither a host name"),
    ],
)
def test_wrong_allow_entries_are_named(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        webfence.parse_allowed([entry], "CERISE_WEB_ALLOW")
    with pytest.raises(InvalidResource, match=f"spec.webInputs.allow: .*{problem}"):
        compute.parse_spec({"jobs": {"protocol": "local"}, "webInputs": {"allow": [entry]}})
    with pytest.raises(ValueError, match="CERISE_WEB_ALLOW"):
        webfence.operator_fence({"CERISE_WEB_ALLOW": entry})


def test_a_resource_widens_the_operators_fence_within_its_limits() -> None:
    spec = compute.parse_spec({"jobs": {"protocol": "local"}, "webInputs": {
        "allow": ["192.168.7.0/24"], "maxBytes": 1000, "timeoutSeconds": 5}})
    inputs = compute.web_inputs(spec, {"CERISE_WEB_ALLOW": "127.0.0.1"})
    assert (inputs.max_bytes, inputs.timeout) == (1000, 5.0)
    assert refused(inputs.fence, "192.168.7.9") is None
    assert refused(inputs.fence, "127.0.0.1") is None
    assert refused(inputs.fence, "192.168.8.9") is not None
    plain = compute.web_inputs(compute.parse_spec({"jobs": {"protocol": "local"}}), {})
    assert (plain.max_bytes, plain.timeout) == (8 << 30, 3600.0)
    assert refused(plain.fence, "127.0.0.1") is not None


@pytest.mark.parametrize(
    ("address", "carried", "rule"),
    [
        ("::127.0.0.1", "127.0.0.1", "the loopback range (127.0.0.0/8)"),  # compatible
        ("::ffff:0:7f00:1", "127.0.0.1", "the loopback range (127.0.0.0/8)"),  # SIIT
        ("::ffff:0:a00:5", "10.0.0.5", "a private range (10.0.0.0/8)"),
        ("64:ff9b::7f00:1", "127.0.0.1", "the loopback range (127.0.0.0/8)"),  # NAT64 /96
        ("64:ff9b:1:a00:0:100::", "10.0.0.1", "a private range (10.0.0.0/8)"),  # /48
        ("64:ff9b:1:ff0a:0:1::", "10.0.0.1", "a private range (10.0.0.0/8)"),  # /56
        ("64:ff9b:1::7f00:1", "127.0.0.1", "the loopback range (127.0.0.0/8)"),  # /96
        ("2002:c0a8:101::1", "192.168.1.1", "a private range (192.168.0.0/16)"),  # 6to4
        # Teredo: server 8.8.8.8, client 10.0.0.1 (stored inverted)
        ("2001:0:808:808:0:0:f5ff:fffe", "10.0.0.1", "a private range (10.0.0.0/8)"),
    ],
)
def test_ipv6_forms_of_ipv4_are_judged_by_what_they_carry(
    address: str, carried: str, rule: str
) -> None:
    message = refused(DEFAULT, address, host=address)
    assert message == (f"{ipaddress.ip_address(address)} (carrying {carried}) is in {rule}; "
                       "allow it with spec.webInputs.allow of the ComputeResource or the "
                       "operator's CERISE_WEB_ALLOW")
    if len(webfence.carried_ipv4(ipaddress.ip_address(address))) == 1:
        assert refused(DEFAULT.widened([carried], "test"), address) is None


def test_a_public_teredo_or_nat64_address_passes() -> None:
    assert refused(DEFAULT, "64:ff9b::808:808") is None
    assert refused(DEFAULT, "64:ff9b:1:abcd::808:808") is None
    assert refused(DEFAULT, "2001:0:808:808:0:0:f7f7:f7f7") is None  # client 8.8.8.8


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254",
                                     "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1"])
def test_the_metadata_endpoints_stay_refused_whatever_the_allow_lists_say(address: str) -> None:
    fence = webfence.operator_fence({"CERISE_WEB_ALLOW": "0.0.0.0/0 ::/0 metadata.internal"})
    message = refused(fence, address, host="metadata.internal")
    assert message is not None
    assert message.startswith(f"metadata.internal resolves to {ipaddress.ip_address(address)}")
    assert "is in the cloud metadata endpoint" in message
    assert message.endswith("no allow-list opens it")
    assert refused(fence, "169.254.1.1", host="metadata.internal") is None  # only the endpoint


def test_an_allowed_host_name_that_resolves_into_a_denied_network_is_refused() -> None:
    fence = webfence.operator_fence({"CERISE_WEB_ALLOW": "*.example.org",
                                     "CERISE_WEB_DENY": "10.96.0.0/12"})
    assert refused(fence, "10.1.1.1", host="data.example.org") is None
    assert "no allow-list opens it" in (refused(fence, "10.96.0.1", host="data.example.org") or "")
    assert "no allow-list opens it" in (refused(fence, "::ffff:10.96.0.1",
                                                host="data.example.org") or "")
