"""The `gossip_lan { }` block and the gossip parameters the agent derives from config."""

from __future__ import annotations

from pathlib import Path

import pytest

from proconsul.agent.gossip_setup import gossip_params
from proconsul.config.agent_args import parse_agent_args
from proconsul.config.errors import ConfigError
from proconsul.config.interfaces import make_ifaddr
from proconsul.config.loader import LoadedConfig, load_config, load_paths
from proconsul.gossip import lan, local

TABLE = [make_ifaddr("lo", "127.0.0.1/8", "up|loopback")]


def load(tmp_path: Path, text: str, name: str = "a.hcl") -> LoadedConfig:
    path = tmp_path / name
    path.write_text(text)
    return load_paths([str(path)], interfaces=lambda: TABLE, hostname=lambda: "host-1")


def test_defaults_are_consuls_lan_parameters(tmp_path: Path) -> None:
    config = load(tmp_path, 'data_dir = "d"\nbind_addr = "127.0.0.1"\n').config
    assert config.gossip_lan.profile == "lan"
    assert config.gossip_lan.probe_interval is None
    assert gossip_params(config) == lan()


def test_hcl_block_overrides_consuls_keys(tmp_path: Path) -> None:
    text = """
data_dir = "d"
bind_addr = "127.0.0.1"
gossip_lan {
  gossip_nodes = 4
  gossip_interval = "100ms"
  probe_interval = "2s"
  probe_timeout = "750ms"
  retransmit_mult = 5
  suspicion_mult = 6
}
"""
    params = gossip_params(load(tmp_path, text).config)
    assert (params.gossip_nodes, params.gossip_interval) == (4, 0.1)
    assert (params.probe_interval, params.probe_timeout) == (2.0, 0.75)
    assert (params.retransmit_mult, params.suspicion_mult) == (5, 6)
    # Keys the block does not name keep Consul's values.
    assert params.push_pull_interval == lan().push_pull_interval


def test_json_and_local_profile(tmp_path: Path) -> None:
    text = '{"data_dir": "d", "bind_addr": "127.0.0.1", "gossip_lan": {"profile": "local"}}'
    params = gossip_params(load(tmp_path, text, "a.json").config)
    assert params == local()


def test_later_source_overrides_one_key(tmp_path: Path) -> None:
    first = tmp_path / "a.hcl"
    first.write_text('data_dir = "d"\nbind_addr = "127.0.0.1"\ngossip_lan { profile = "local" }\n')
    args = parse_agent_args(
        ["-config-file", str(first), "-hcl", 'gossip_lan { probe_interval = "1s" }']
    )
    config = load_config(args, interfaces=lambda: TABLE, hostname=lambda: "h").config
    params = gossip_params(config)
    assert params.probe_interval == 1.0
    assert params.probe_timeout == local().probe_timeout


def test_reconnect_timeout_reaches_the_pool(tmp_path: Path) -> None:
    config = load(tmp_path, 'data_dir = "d"\nbind_addr = "127.0.0.1"\nreconnect_timeout = "8h"\n')
    assert gossip_params(config.config).reconnect_timeout == 8 * 3600.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('gossip_lan { probe_intervall = "1s" }', "probe_intervall"),
        ('gossip_lan { profile = "fast" }', "profile"),
        ('gossip_lan { gossip_nodes = "many" }', "gossip_nodes"),
    ],
)
def test_bad_keys_and_values_are_refused(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'data_dir = "d"\n{text}\n')
    assert key in str(info.value)


def test_parameters_that_cannot_work_are_refused(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        'data_dir = "d"\nbind_addr = "127.0.0.1"\n'
        'gossip_lan {\n probe_interval = "100ms"\n probe_timeout = "1s"\n}\n',
    ).config
    with pytest.raises(ValueError, match=r"gossip_lan: .*probe_timeout"):
        gossip_params(config)
