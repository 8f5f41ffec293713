"""agent/connect_ca.py: the leader initializes the CA once (built-in root, or the
one in ca_config), a racing leader keeps the winner's root, and a server's TLS
context trusts the root as soon as it is applied -- a client certificate it
signed then completes a handshake that verify_incoming requires."""

from __future__ import annotations

import random
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from proconsul.connect.ca import generate_root, root_row, sign_agent_client
from proconsul.rpc.tls import present_certificate_pem
from proconsul.server.connect_ca import (
    CAInitError,
    RootTrust,
    active_signing_ca,
    ensure_ca_root,
    trusted_roots_pem,
)
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore
from proconsul.structs.commands import ApplyResult, CARootsSetRequest, Command
from proconsul.tls.agent import agent_cert_spec
from proconsul.tls.certs import (
    generate_ca,
    generate_private_key,
    issue_leaf,
    load_ca,
    load_certificate,
    private_key_to_pem,
    verify_leaf,
)

NOW = datetime.now(UTC)
CLUSTER = "c0ffee00-0000-0000-0000-000000000000"


class Log:
    """A leader's log over one store: applies each command at the next index."""

    def __init__(self, store: StateStore) -> None:
        self.fsm = FSM(store)
        self.index = 0
        self.commands: list[Command] = []

    async def apply(self, command: Command) -> tuple[int, ApplyResult]:
        self.commands.append(command)
        self.index += 1
        return self.index, self.fsm.apply(self.index, command)


async def test_leader_generates_a_built_in_root_once() -> None:
    store = StateStore()
    log = Log(store)
    root = await ensure_ca_root(store, log.apply, NOW, random.Random(1))
    assert root is not None and root.active
    assert root.name == "Consul CA Primary Cert"
    assert root.root_cert.startswith("-----BEGIN CERTIFICATE-----")
    assert store.ca.cluster_id and root.external_trust_domain == store.ca.cluster_id
    assert f".consul.ca.{store.ca.cluster_id[:8]}.consul" in str(
        load_certificate(root.root_cert).subject.rfc4514_string()
    )
    signing = active_signing_ca(store)
    assert signing is not None and signing[0] == root.root_cert
    load_ca(*signing)  # the key matches the root
    # Again (a new leadership term): nothing is written.
    again = await ensure_ca_root(store, log.apply, NOW, random.Random(2))
    assert again == root and len(log.commands) == 1


async def test_configured_root_becomes_the_active_root(tmp_path: Path) -> None:
    agent_ca = generate_ca(now=NOW)
    cert_file, key_file = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    cert_file.write_text(agent_ca.cert_pem)
    key_file.write_text(agent_ca.key_pem)
    for ca_config in (
        {"root_cert": str(cert_file), "private_key": str(key_file)},
        {"RootCert": agent_ca.cert_pem, "PrivateKey": agent_ca.key_pem},
    ):
        store = StateStore()
        root = await ensure_ca_root(
            store, Log(store).apply, NOW, random.Random(1), ca_config=ca_config
        )
        assert root is not None
        assert load_certificate(root.root_cert) == load_certificate(agent_ca.cert_pem)
        assert active_signing_ca(store) is not None


async def test_a_bad_configured_root_is_an_error_without_the_key(tmp_path: Path) -> None:
    one, other = generate_ca(now=NOW), generate_ca(now=NOW)
    store = StateStore()
    with pytest.raises(CAInitError) as caught:
        await ensure_ca_root(
            store,
            Log(store).apply,
            NOW,
            random.Random(1),
            ca_config={"root_cert": one.cert_pem, "private_key": other.key_pem},
        )
    assert "PRIVATE" not in str(caught.value)
    assert store.ca.roots == {}


async def test_a_racing_leader_keeps_the_winners_root() -> None:
    store = StateStore()
    log = Log(store)
    winner = generate_root(cluster_id=CLUSTER, now=NOW, rng=random.Random(5))

    async def late_apply(command: Command) -> tuple[int, ApplyResult]:
        # Another leader's root lands first; ours then fails its check-and-set.
        row = root_row(winner.cert_pem, cluster_id=CLUSTER)
        await log.apply(
            CARootsSetRequest(
                roots=[row],
                cluster_id=CLUSTER,
                signing_keys={row.id: winner.key_pem},
            )
        )
        return await log.apply(command)

    root = await ensure_ca_root(store, late_apply, NOW, random.Random(1))
    assert root is not None and root.root_cert == winner.cert_pem
    assert len(store.ca.roots) == 1


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """A TLS handshake in memory; raises ssl.SSLError when either side refuses."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="server.dc1.consul")
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, side, out, peer_in in (
            ("client", client, c_out, s_in),
            ("server", server, s_out, c_in),
        ):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            data = out.read()
            if data:
                peer_in.write(data)
        if all(done.values()):
            # TLS 1.3: the server's verdict on the client certificate reaches
            # the client after its handshake; a read surfaces a refusal.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


async def test_server_trusts_the_root_once_applied_and_accepts_its_clients(
    tmp_path: Path,
) -> None:
    # The walkthrough's server: agent CA certificate, verify_incoming on.
    agent_ca = generate_ca(now=NOW)
    server_pair = issue_leaf(
        load_ca(agent_ca.cert_pem, agent_ca.key_pem),
        agent_cert_spec("server", datacenter="dc1", domain="consul", valid_for=timedelta(days=1)),
        now=NOW,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    present_certificate_pem(server_ctx, server_pair.cert_pem, server_pair.key_pem)
    server_ctx.load_verify_locations(cadata=agent_ca.cert_pem)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    store = StateStore()
    trust = RootTrust(store, server_ctx)
    assert trust.trusted == set()
    await ensure_ca_root(store, Log(store).apply, NOW, random.Random(1))
    assert trust.trusted == set(trusted_roots_pem(store)) and len(trust.trusted) == 1

    # An auto_encrypt client: its key, a certificate from the active root.
    signing = active_signing_ca(store)
    assert signing is not None
    client_key = generate_private_key()
    leaf = sign_agent_client(
        *signing,
        client_key.public_key(),
        datacenter="dc1",
        domain="consul",
        valid_for=timedelta(hours=1),
        now=NOW,
    )
    verify_leaf(load_certificate(signing[0]), load_certificate(leaf), now=NOW)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=agent_ca.cert_pem)
    present_certificate_pem(client_ctx, leaf, private_key_to_pem(client_key))
    _handshake(server_ctx, client_ctx)

    # The same client against a server that never trusted the root is refused.
    plain_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    present_certificate_pem(plain_ctx, server_pair.cert_pem, server_pair.key_pem)
    plain_ctx.load_verify_locations(cadata=agent_ca.cert_pem)
    plain_ctx.verify_mode = ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLError):
        _handshake(plain_ctx, client_ctx)
    trust.close()


async def test_root_trust_follows_a_snapshot_restore() -> None:
    leader = StateStore()
    await ensure_ca_root(leader, Log(leader).apply, NOW, random.Random(1))
    follower = StateStore()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trust = RootTrust(follower, ctx)
    follower.restore(leader.snapshot())
    assert trust.trusted == set(trusted_roots_pem(leader))
    assert trust.stats() == {"trusted": 1, "errors": 0}


def test_a_root_that_does_not_load_is_counted_not_raised_into_apply() -> None:
    store = StateStore()
    trust = RootTrust(store, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    pair = generate_root(cluster_id=CLUSTER, now=NOW, rng=random.Random(2))
    row = root_row(pair.cert_pem, cluster_id=CLUSTER)
    row.root_cert = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    command = CARootsSetRequest(roots=[row], cluster_id=CLUSTER)
    assert FSM(store).apply(3, command) is None
    assert trust.stats() == {"trusted": 0, "errors": 1}
