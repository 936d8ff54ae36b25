"""The webhook SSRF guard: block list, allow-list, literals, resolution and pinning, no network."""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest

from gateway.errors import WebhookAddressBlocked
from gateway.netguard import (
    BLOCKED_NETWORKS,
    NetworkPolicy,
    Resolver,
    blocked_reason,
    check_uri_syntax,
    pin,
    system_resolver,
)

OPEN = NetworkPolicy()


def scripted(*answers: list[str]) -> tuple[Resolver, list[tuple[str, int]]]:
    """A resolver that returns the given answers in turn and records what it was asked."""
    calls: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return answers[min(len(calls), len(answers)) - 1]

    return resolve, calls


async def failing(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def unexpected(host: str, port: int) -> list[str]:
    raise AssertionError(f"an IP literal must not be resolved, got {host}:{port}")


@pytest.mark.parametrize(
    ("address", "label"),
    [
        ("0.0.0.1", "this network"),
        ("10.1.2.3", "private"),
        ("100.64.0.1", "CGNAT"),
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("172.31.255.255", "private"),
        ("192.0.0.8", "IETF protocol assignments"),
        ("192.0.2.1", "documentation"),
        ("192.88.99.1", "6to4 relay"),
        ("192.168.1.1", "private"),
        ("198.19.0.1", "benchmarking"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("ff02::1", "multicast"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "ULA"),
        ("2001:db8::1", "documentation"),
        ("3fff:fff::1", "documentation"),
        ("100::1", "discard"),
        ("2002:7f00:1::", "6to4"),
        ("64:ff9b::7f00:1", "NAT64"),
        ("64:ff9b:1::1", "NAT64 local-use"),
        ("5f00::1", "SRv6"),
        ("::ffff:10.0.0.1", "private"),
    ],
)
def test_blocked_sample_names_its_range(address: str, label: str) -> None:
    reason = blocked_reason(ipaddress.ip_address(address), OPEN)
    assert reason is not None
    assert reason.endswith(f"({label})")


def test_reason_names_address_and_range() -> None:
    reason = blocked_reason(ipaddress.ip_address("127.0.0.1"), OPEN)
    assert reason == "127.0.0.1 is in 127.0.0.0/8 (loopback)"


@pytest.mark.parametrize(("network", "label"), BLOCKED_NETWORKS, ids=str)
def test_every_range_blocks_its_first_and_last_address(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, label: str
) -> None:
    for ip in (network.network_address, network.broadcast_address):
        assert blocked_reason(ip, OPEN) is not None, f"{ip} ({label}) passed"


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "100.128.0.1", "::ffff:1.1.1.1"],
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address), OPEN) is None


def test_allowed_networks_exempt_a_blocked_range() -> None:
    policy = NetworkPolicy(allowed_networks=("127.0.0.0/8",))
    assert policy.is_allowed(ipaddress.ip_address("127.0.0.1"))
    assert policy.is_allowed(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert blocked_reason(ipaddress.ip_address("127.0.0.1"), policy) is None
    assert blocked_reason(ipaddress.ip_address("10.0.0.1"), policy) is not None


def test_invalid_cidr_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="allowed_networks entry 'ten/8' is not a valid CIDR"):
        NetworkPolicy(allowed_networks=("10.0.0.0/8", "ten/8"))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://example.com/hook", "webhook URI must be http or https"),
        ("file:///etc/passwd", "webhook URI must be http or https"),
        ("example.com/hook", "webhook URI must be http or https"),
        ("http:///hook", "webhook URI has no host"),
        ("https://user:secret@example.com/hook", "webhook URI must not contain credentials"),
        ("http://example.com:99999/hook", "webhook URI is not a valid URL"),
        ("http://[1.2.3.4]/hook", "webhook URI is not a valid URL"),
    ],
)
def test_bad_uri_syntax_is_refused(uri: str, message: str) -> None:
    with pytest.raises(WebhookAddressBlocked, match=message) as caught:
        check_uri_syntax(uri)
    assert "secret" not in str(caught.value)


def test_good_uri_syntax_needs_no_lookup() -> None:
    check_uri_syntax("https://hooks.example.com:8443/sms?token=abc")
    check_uri_syntax("http://[2606:4700::1111]/sms")


async def test_non_http_scheme_is_refused_by_pin() -> None:
    with pytest.raises(WebhookAddressBlocked, match="must be http or https"):
        await pin("gopher://example.com/", OPEN, unexpected)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://[fe80::1%25eth0]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/latest/meta-data",
        "https://[fd00:ec2::254]/",
    ],
)
async def test_blocked_ip_literals_are_refused_without_lookup(uri: str) -> None:
    with pytest.raises(WebhookAddressBlocked, match="is blocked"):
        await pin(uri, OPEN, unexpected)


async def test_mapped_literal_is_checked_as_ipv4() -> None:
    with pytest.raises(WebhookAddressBlocked) as caught:
        await pin("http://[::ffff:127.0.0.1]/", OPEN, unexpected)
    assert "127.0.0.1 is in 127.0.0.0/8 (loopback)" in str(caught.value)


async def test_public_ipv4_literal_is_pinned_to_itself() -> None:
    target = await pin("https://93.184.216.34:8443/a/b?x=1", OPEN, unexpected)
    assert target.url == "https://93.184.216.34:8443/a/b?x=1"
    assert target.host_header == "93.184.216.34:8443"
    assert target.sni_hostname is None
    assert target.ip == "93.184.216.34"


async def test_public_ipv6_literal_keeps_brackets() -> None:
    target = await pin("https://[2606:4700::1111]/hook", OPEN, unexpected)
    assert target.url == "https://[2606:4700::1111]/hook"
    assert target.host_header == "[2606:4700::1111]"
    assert target.sni_hostname is None
    assert target.ip == "2606:4700::1111"


async def test_allow_list_lets_loopback_through() -> None:
    policy = NetworkPolicy(allowed_networks=("127.0.0.0/8",))
    target = await pin("http://127.0.0.1:9000/hook", policy, unexpected)
    assert target.url == "http://127.0.0.1:9000/hook"


async def test_https_name_is_pinned_with_host_header_and_sni() -> None:
    resolver, calls = scripted(["93.184.216.34", "2606:4700::1111"])
    target = await pin("https://Hooks.Example.com:8443/sms/in?token=abc&v=2#frag", OPEN, resolver)
    assert calls == [("hooks.example.com", 8443)]
    assert target.url == "https://93.184.216.34:8443/sms/in?token=abc&v=2"
    assert target.host_header == "hooks.example.com:8443"
    assert target.sni_hostname == "hooks.example.com"
    assert target.ip == "93.184.216.34"


async def test_default_port_is_resolved_but_not_added() -> None:
    resolver, calls = scripted(["2606:4700::1111"])
    target = await pin("https://hooks.example.com/sms", OPEN, resolver)
    assert calls == [("hooks.example.com", 443)]
    assert target.url == "https://[2606:4700::1111]/sms"
    assert target.host_header == "hooks.example.com"


async def test_http_name_has_no_sni() -> None:
    resolver, calls = scripted(["93.184.216.34"])
    target = await pin("http://hooks.example.com/sms", OPEN, resolver)
    assert calls == [("hooks.example.com", 80)]
    assert target.sni_hostname is None
    assert target.host_header == "hooks.example.com"


async def test_unicode_host_is_sent_as_idna() -> None:
    resolver, calls = scripted(["93.184.216.34"])
    target = await pin("https://bücher.example/hook", OPEN, resolver)
    assert calls == [("xn--bcher-kva.example", 443)]
    assert target.sni_hostname == "xn--bcher-kva.example"


async def test_any_private_answer_refuses_the_host() -> None:
    resolver, _ = scripted(["93.184.216.34", "10.0.0.5"])
    with pytest.raises(WebhookAddressBlocked) as caught:
        await pin("https://mixed.example.com/hook?token=secret", OPEN, resolver)
    message = str(caught.value)
    assert "mixed.example.com" in message
    assert "10.0.0.5 is in 10.0.0.0/8 (private)" in message
    assert "secret" not in message


async def test_resolved_mapped_address_is_canonicalised() -> None:
    resolver, _ = scripted(["::ffff:192.168.0.1"])
    with pytest.raises(WebhookAddressBlocked, match=r"192\.168\.0\.1 is in 192\.168\.0\.0/16"):
        await pin("http://sneaky.example.com/", OPEN, resolver)


async def test_resolved_zoned_link_local_is_refused() -> None:
    resolver, _ = scripted(["fe80::1%eth0"])
    with pytest.raises(WebhookAddressBlocked, match="link-local"):
        await pin("http://sneaky.example.com/", OPEN, resolver)


async def test_rebinding_second_answer_is_refused() -> None:
    resolver, calls = scripted(["93.184.216.34"], ["10.0.0.5"])
    first = await pin("https://rebind.example.com/hook", OPEN, resolver)
    assert first.ip == "93.184.216.34"
    with pytest.raises(WebhookAddressBlocked, match=re.escape("10.0.0.5 is in 10.0.0.0/8")):
        await pin("https://rebind.example.com/hook", OPEN, resolver)
    assert len(calls) == 2, "each pin resolves exactly once; the request uses the pinned IP"


async def test_resolution_failure_is_refused() -> None:
    expected = re.escape("webhook host nowhere.example could not be resolved")
    with pytest.raises(WebhookAddressBlocked, match=expected) as caught:
        await pin("https://nowhere.example/hook?token=secret", OPEN, failing)
    assert "secret" not in str(caught.value)


async def test_empty_answer_is_refused() -> None:
    resolver, _ = scripted([])
    with pytest.raises(
        WebhookAddressBlocked, match=re.escape("empty.example resolved to no addresses")
    ):
        await pin("https://empty.example/hook", OPEN, resolver)


async def test_garbage_answer_is_refused() -> None:
    resolver, _ = scripted(["not-an-ip"])
    with pytest.raises(WebhookAddressBlocked, match="invalid address 'not-an-ip'"):
        await pin("https://odd.example/hook", OPEN, resolver)


async def test_invalid_host_name_is_refused() -> None:
    with pytest.raises(WebhookAddressBlocked, match="not a valid host name"):
        await pin(f"https://{'a' * 64}.example/hook", OPEN, unexpected)


async def test_system_resolver_finds_localhost() -> None:
    found = await system_resolver("localhost", 80)
    assert {"127.0.0.1", "::1"} & set(found)
    assert len(found) == len(set(found))


async def test_numeric_obfuscation_is_resolved_then_refused() -> None:
    # "0x7f.0.0.1" is not an IP literal to ipaddress, but getaddrinfo reads it as 127.0.0.1
    # without DNS; either way the guard must refuse it.
    with pytest.raises(WebhookAddressBlocked):
        await pin("http://0x7f.0.0.1/hook", OPEN)
