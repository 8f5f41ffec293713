"""Agent config -> DNS settings and listeners (no sockets)."""

from __future__ import annotations

import pytest

from proconsul.agent.dns_setup import parse_recursor, settings_from_config
from proconsul.config.agent_args import parse_agent_args
from proconsul.config.loader import load_config
from proconsul.config.schema import RuntimeConfig


def load(*argv: str) -> RuntimeConfig:
    return load_config(parse_agent_args(list(argv)), hostname=lambda: "box").config


def test_dev_agent_serves_dns_on_localhost_8600() -> None:
    config = load("-dev")
    assert config.ports.dns == 8600
    assert config.listen_addresses("dns") == ["127.0.0.1"]
    assert load("-dev", "-dns-port", "-1").listen_addresses("dns") == []


def test_defaults_match_consul() -> None:
    settings = settings_from_config(load("-dev"))
    assert settings.domain == "consul."
    assert settings.datacenter == "dc1"
    assert (settings.node_ttl, settings.service_ttl, settings.only_passing) == (0, {}, False)
    assert (settings.udp_answer_limit, settings.a_record_limit) == (3, 0)
    assert (settings.soa_refresh, settings.soa_retry, settings.soa_expire) == (3600, 600, 86400)
    assert settings.soa_min_ttl == 0
    assert settings.recursors == ()
    assert settings.recursor_timeout_s == 2.0


def test_dns_config_keys() -> None:
    hcl = """
    domain = "Example"
    alt_domain = "alt.test"
    recursors = ["192.0.2.1", "192.0.2.2:5353", "[2001:db8::1]:53", "2001:db8::2", "192.0.2.1"]
    dns_config {
      node_ttl = "10s"
      service_ttl { "*" = "5s", "web" = "1m" }
      only_passing = true
      enable_truncate = true
      recursor_timeout = "500ms"
    }
    acl { tokens { default = "dns-token" } }
    """
    settings = settings_from_config(load("-dev", "-hcl", hcl))
    assert (settings.domain, settings.alt_domain) == ("example.", "alt.test.")
    assert settings.node_ttl == 10
    assert settings.service_ttl == {"*": 5, "web": 60}
    assert settings.only_passing and settings.enable_truncate
    assert settings.recursors == (
        ("192.0.2.1", 53),
        ("192.0.2.2", 5353),
        ("2001:db8::1", 53),
        ("2001:db8::2", 53),
    )
    assert settings.recursor_timeout_s == 0.5
    assert settings.token == "dns-token"


@pytest.mark.parametrize("bad", ["", ":53", "1.2.3.4:x", "1.2.3.4:70000", "[::1]:0"])
def test_bad_recursors(bad: str) -> None:
    with pytest.raises(ValueError, match="recursor"):
        parse_recursor(bad)
