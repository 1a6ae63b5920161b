"""The allowlist's forms and errors: SandboxPolicy(network=...), PYGENT_ALLOW_HOSTS, --allow-host, the proxy's matching.

No engine, no network: validation and matching only (the end-to-end behaviour is test_egress.py).
"""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from pygent.cli.common import cli_policy
from pygent.errors import ConfigError
from pygent.sandbox import SandboxPolicy, default_policy
from pygent.sandbox.egress_proxy import Allowlist


def test_network_keeps_its_bool_meaning_and_takes_hosts():
    assert SandboxPolicy().network is False and SandboxPolicy(network=True).network is True
    assert SandboxPolicy(network=True).allow_hosts == ()
    p = SandboxPolicy(network=["PyPI.Example.", "*.files.example:8443", "10.0.0.0/8"])
    assert p.network == ("*.files.example:8443", "10.0.0.0/8", "pypi.example")
    assert p.allow_hosts == p.network
    # Same list in another order or case: the same policy (one warm pool, one proxy).
    assert SandboxPolicy(network="10.0.0.0/8,pypi.example,*.FILES.example:8443") == p
    assert SandboxPolicy(network=[]).network is False
    with pytest.raises(ValidationError):
        p.network = True  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    "entry, says",
    [
        ("192.0.2.10", "is an IP address"),
        ("[::1]:443", "is an IP address"),
        ("*", "not a host name"),
        ("a..b", "not a host name"),
        ("bad_host!", "not a host name"),
        ("a.example:0", "not 1-65535"),
        ("a.example:http", "not 1-65535"),
        ("a.example:", "not 1-65535"),
        ("10.0.0.0/33", "not ADDR/PREFIX"),
    ],
)
def test_bad_entries_are_errors_that_say_what_to_write(entry, says):
    with pytest.raises(ValidationError, match=says):
        SandboxPolicy(network=[entry])


def test_settings_and_the_cli_option(monkeypatch):
    monkeypatch.chdir("/")
    monkeypatch.setenv("PYGENT_ALLOW_HOSTS", "a.example, b.example:8080")
    assert default_policy().network == ("a.example", "b.example:8080")
    assert default_policy(network=False).network is False  # an explicit argument wins
    assert cli_policy(allow_hosts=["c.example"]).network == ("c.example",)
    monkeypatch.setenv("PYGENT_ALLOW_HOSTS", "a.example,10.1.2.3")
    with pytest.raises(ConfigError, match="PYGENT_ALLOW_HOSTS.*IP address"):
        default_policy()
    monkeypatch.delenv("PYGENT_ALLOW_HOSTS")
    with pytest.raises(ConfigError, match="^--allow-host: .*IP address"):
        cli_policy(allow_hosts=["10.1.2.3"])
    with pytest.raises(ConfigError, match="pass one of them"):
        cli_policy(network=True, allow_hosts=["a.example"])


def test_the_proxy_matches_names_ports_and_addresses():
    allow = Allowlist(["a.example", "*.b.example", "c.example:8080", "10.0.0.0/8"])
    assert allow.allows_name("a.example", 443) and allow.allows_name("a.example", 80)
    assert not allow.allows_name("a.example", 22)  # no port listed: 80 and 443 only
    assert allow.allows_name("x.y.b.example", 443) and not allow.allows_name("b.example", 443)
    assert not allow.allows_name("evilb.example", 443) and not allow.allows_name("a.example.evil", 443)
    assert allow.allows_name("c.example", 8080) and not allow.allows_name("c.example", 443)
    ip = ipaddress.ip_address
    assert allow.allows_address(ip("10.2.3.4")) and not allow.allows_address(ip("192.168.1.1"))
    for refused in ("127.0.0.1", "169.254.169.254", "fd00::1", "::1", "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1"):
        assert not allow.allows_address(ip(refused)), refused
    assert allow.allows_address(ip("11.0.0.1"))  # a public address: matching only, nothing is sent


def test_exec_and_mcp_share_the_allow_host_option(monkeypatch):
    from pygent.cli import mcp
    from pygent.cli.exec import build_policy, parse_args

    monkeypatch.chdir("/")
    monkeypatch.delenv("PYGENT_ALLOW_HOSTS", raising=False)
    assert build_policy(parse_args(["--allow-host", "a.example:8080", "--", "true"])).network == ("a.example:8080",)
    assert build_policy(mcp.parse(["--allow-host", "b.example", "--allow-host", "c.example"])).network == ("b.example", "c.example")
