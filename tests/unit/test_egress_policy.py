"""The egress policy's rules, without a network (issue 11, item 2)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from capability.egress import EgressDenied, EgressPolicy
from capability.egress.policy import host_address, parse_rules

DB = "postgresql+psycopg2://apg:pw@10.0.0.7:5433/apg"
REDIS = "redis://127.0.0.1:6379/1"


def policy(allow: str = "", deny: str = "", db: str = DB, redis: str = REDIS) -> EgressPolicy:
    return EgressPolicy.from_config({"EGRESS_ALLOW": allow, "EGRESS_DENY": deny,
                                     "SQLALCHEMY_DATABASE_URI": db, "REDIS_URL": redis})


def permits(p: EgressPolicy, address: str, port: int = 80, host: str = "") -> bool:
    return p.permits(host or address, ipaddress.ip_address(address), port)


@pytest.mark.parametrize("written", [
    "127.0.0.1", "2130706433", "0x7f.1", "0x7f000001", "017700000001", "0177.0.0.1", "127.1",
    "[::ffff:127.0.0.1]", "127.0.0.1.",
])
def test_every_spelling_of_an_ipv4_address_is_recognised(written):
    assert host_address(written) == ipaddress.ip_address("127.0.0.1")


def test_a_name_is_not_an_address():
    assert host_address("localhost") is None and host_address("0x7f.example") is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "169.254.169.254",
                                     "fe80::1", "fd00:ec2::254", "0.0.0.0", "::",
                                     "::ffff:169.254.169.254"])
def test_loopback_link_local_and_unspecified_are_denied_by_default(address):
    assert not permits(policy(db="sqlite://", redis=""), address)


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.9", "192.168.1.1", "fd12::1",
                                     "93.184.216.34", "2606:4700::1111"])
def test_private_and_public_addresses_are_allowed_by_default(address):
    assert permits(policy(), address)


def test_the_apps_own_endpoints_are_denied_unless_an_allow_entry_names_their_port():
    p = policy(allow="127.0.0.1 10.0.0.0/8")
    assert permits(p, "127.0.0.1", 8080) and permits(p, "10.0.0.7", 80)
    assert not permits(p, "127.0.0.1", 6379)  # the app's Redis
    assert not permits(p, "127.0.0.2", 6379)  # loopback answers on all of 127/8
    assert not permits(p, "10.0.0.7", 5433)  # the app's database
    opened = policy(allow="127.0.0.1:6379 10.0.0.7:5433")
    assert permits(opened, "127.0.0.1", 6379) and permits(opened, "10.0.0.7", 5433)


def test_deny_wins_over_allow_and_allow_over_the_default_denials():
    assert permits(policy(allow="169.254.0.0/16"), "169.254.1.2")
    p = policy(allow="127.0.0.0/8", deny="127.0.0.1:8080, 10.9.0.0/16 [::1]:25 intranet.example")
    assert permits(p, "127.0.0.1", 8081) and not permits(p, "127.0.0.1", 8080)
    assert not permits(p, "10.9.3.4") and not permits(p, "::1", 25)
    assert not permits(p, "10.1.1.1", host="intranet.example")


def test_a_host_name_entry_matches_the_name_asked_for():
    p = policy(allow="localhost:8080")
    assert permits(p, "127.0.0.1", 8080, host="localhost")
    assert not permits(p, "127.0.0.1", 8080)  # the address, asked for by itself


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "host:port", "a/b", "127.0.0.1:0",
                                   "[::1]:99999", "exa_mple!", "http://x"])
def test_a_bad_entry_is_refused_with_its_key(entry):
    with pytest.raises(ValueError, match=r"EGRESS_ALLOW: .* is not a CIDR"):
        parse_rules(f"10.0.0.1, {entry}", "EGRESS_ALLOW")


def test_a_name_is_resolved_once_and_every_address_is_checked(monkeypatch):
    calls = []

    def resolver(host, port, *args, **kwargs):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(EgressDenied) as refused:
        policy().addresses("Rebind.Example.", 443)
    assert str(refused.value) == (
        "egress to 127.0.0.1:443 denied by policy (EGRESS_ALLOW to permit)")
    assert calls == ["rebind.example"]
    assert policy(allow="127.0.0.1").addresses("rebind.example", 443) == [
        ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")]
