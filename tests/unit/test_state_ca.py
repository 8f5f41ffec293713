"""Connect CA state: `CARootsSetRequest` through the FSM (check-and-set, one
active root, a fixed cluster ID), the roots view without keys, watches, and
snapshots (round trip with keys; an old snapshot restores empty)."""

from __future__ import annotations

import functools
import hashlib
import random
from datetime import UTC, datetime

import msgspec
import pytest

from proconsul.connect.ca import CAKeyPair, generate_root, root_row
from proconsul.state import snapshot as snapshot_mod
from proconsul.state.ca_tables import CONFIG_KEY, ROOTS_KEY
from proconsul.state.fsm import FSM, decode_command, encode_command
from proconsul.state.store import StateStore
from proconsul.structs.catalog import KVEntry
from proconsul.structs.commands import (
    ApplyError,
    CAConfigSetRequest,
    CARootsSetRequest,
    KVSRequest,
)
from proconsul.structs.connect import CAConfiguration, CARoot

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CLUSTER = "11111111-2222-3333-4444-555555555555"


@functools.cache
def pair(seed: int) -> CAKeyPair:
    # Cached: ECDSA signatures are randomized, so a second call would give a
    # different certificate (same key) and so a different root ID.
    return generate_root(cluster_id=CLUSTER, now=NOW, rng=random.Random(seed))


def set_request(
    *pairs: CAKeyPair, cas: int = 0, active: int = -1, cluster: str = CLUSTER
) -> CARootsSetRequest:
    rows = [root_row(p.cert_pem, cluster_id=cluster, active=False) for p in pairs]
    if rows:
        rows[active].active = True
    return CARootsSetRequest(
        roots=rows,
        cluster_id=cluster,
        signing_keys={row.id: p.key_pem for row, p in zip(rows, pairs, strict=True)},
        cas_index=cas,
    )


def test_set_roots_stores_rows_keys_and_cluster_id() -> None:
    store = StateStore()
    first = pair(1)
    assert FSM(store).apply(5, set_request(first)) is None
    root = store.ca.active_root()
    assert root is not None
    assert (root.create_index, root.modify_index) == (5, 5)
    assert store.ca.cluster_id == CLUSTER
    assert store.ca.active_signing() == (first.cert_pem, first.key_pem)
    index, view = store.ca_roots()
    assert index == 5 == store.ca.roots_index()
    assert view.active_root_id == root.id
    assert view.trust_domain == f"{CLUSTER}.consul"
    assert [r.id for r in view.roots] == [root.id]


def test_command_travels_through_the_log_encoding() -> None:
    request = set_request(pair(1))
    decoded = decode_command(encode_command(request))
    assert isinstance(decoded, CARootsSetRequest)
    assert decoded.signing_keys == request.signing_keys
    assert decoded.roots == request.roots
    store = StateStore()
    assert FSM(store).apply_bytes(3, encode_command(request)) is None
    assert store.ca.active_root() is not None


def test_the_view_and_its_json_never_hold_a_key() -> None:
    store = StateStore()
    FSM(store).apply(5, set_request(pair(1)))
    _, view = store.ca_roots()
    body = msgspec.json.encode(view).decode()
    assert "PRIVATE KEY" not in body
    assert 'PrivateKey"' not in body
    assert set(msgspec.json.decode(body)) == {"ActiveRootID", "TrustDomain", "Roots"}


def test_empty_state_answers_an_empty_view() -> None:
    store = StateStore()
    index, view = store.ca_roots()
    assert index == 0
    assert (view.active_root_id, view.trust_domain, view.roots) == ("", "", [])
    assert store.ca.active_signing() is None


def test_check_and_set_refuses_a_stale_writer() -> None:
    store = StateStore()
    fsm = FSM(store)
    assert fsm.apply(5, set_request(pair(1))) is None
    # A second leader that saw no roots (cas 0) loses and changes nothing.
    result = fsm.apply(6, set_request(pair(2)))
    assert isinstance(result, ApplyError) and "CAS" in result.message
    assert store.ca.active_signing() == (pair(1).cert_pem, pair(1).key_pem)
    assert store.index(ROOTS_KEY) == 5
    # With the right index it goes in; the old root stays, inactive, with its key.
    assert fsm.apply(7, set_request(pair(1), pair(2), cas=5)) is None
    active = store.ca.active_root()
    assert active is not None and active.root_cert == pair(2).cert_pem
    old = [r for r in store.ca.roots.values() if not r.active]
    assert len(old) == 1 and old[0].create_index == 5 and old[0].modify_index == 7
    assert store.ca.has_signing_key(old[0].id)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (set_request(pair(1), cluster="other"), "cluster ID"),
        (set_request(pair(1), cluster=""), "cluster ID"),
    ],
)
def test_cluster_id_is_required_and_fixed(request_: CARootsSetRequest, message: str) -> None:
    store = StateStore()
    fsm = FSM(store)
    if request_.cluster_id:  # a different one: set the real one first
        assert fsm.apply(5, set_request(pair(3))) is None
        request_.cas_index = 5
    result = fsm.apply(9, request_)
    assert isinstance(result, ApplyError) and message in result.message


def test_malformed_root_sets_are_refused() -> None:
    store = StateStore()
    fsm = FSM(store)
    two_active = set_request(pair(1), pair(2))
    for row in two_active.roots:
        row.active = True
    assert isinstance(fsm.apply(2, two_active), ApplyError)
    duplicate = set_request(pair(1))
    duplicate.roots = [duplicate.roots[0], duplicate.roots[0]]
    assert isinstance(fsm.apply(3, duplicate), ApplyError)
    foreign_key = set_request(pair(1))
    foreign_key.signing_keys["aa:bb"] = pair(2).key_pem
    assert isinstance(fsm.apply(4, foreign_key), ApplyError)
    empty_id = set_request(pair(1))
    empty_id.roots[0].id = ""
    assert isinstance(fsm.apply(5, empty_id), ApplyError)
    assert store.ca.roots == {} and store.index(ROOTS_KEY) == 0


def test_a_repeated_write_bumps_nothing_and_the_command_is_not_stamped() -> None:
    store = StateStore()
    fsm = FSM(store)
    request = set_request(pair(1))
    fsm.apply(5, request)
    assert request.roots[0].create_index == 0  # the log's copy is left alone
    same = set_request(pair(1), cas=5)
    assert fsm.apply(6, same) is None
    assert store.index(ROOTS_KEY) == 5 and store.ca.roots_index() == 5


def test_watchers_of_the_roots_wake_on_a_change() -> None:
    store = StateStore()
    woke: list[int] = []
    store.watches.subscribe([ROOTS_KEY], lambda: woke.append(1))
    FSM(store).apply(5, KVSRequest(op="set", dir_ent=KVEntry(key="k", value=b"v")))
    assert woke == []
    FSM(store).apply(6, set_request(pair(1)))
    assert woke == [1]


def test_snapshot_round_trip_keeps_rows_keys_and_index() -> None:
    store = StateStore()
    fsm = FSM(store)
    fsm.apply(5, set_request(pair(1)))
    fsm.apply(8, set_request(pair(1), pair(2), cas=5))
    restored = StateStore()
    restored.restore(store.snapshot())
    assert restored.ca.roots == store.ca.roots
    assert list(restored.ca.roots) == list(store.ca.roots)
    assert restored.ca.cluster_id == CLUSTER
    assert restored.ca.active_signing() == store.ca.active_signing()
    assert restored.ca_roots() == store.ca_roots()
    # The restored store keeps applying: CAS sees the same index.
    assert FSM(restored).apply(9, set_request(pair(3), cas=8)) is None


def test_snapshot_without_a_ca_section_restores_empty() -> None:
    store = StateStore()
    FSM(store).apply(5, set_request(pair(1)))
    old_body = snapshot_mod.decode_snapshot(StateStore().snapshot())
    old_body.ca = None  # what a snapshot written before the CA existed decodes to
    store.restore(snapshot_mod.encode_snapshot(old_body))
    assert store.ca.roots == {} and store.ca.cluster_id == "" and store.ca.roots_index() == 0
    assert store.ca.active_signing() is None


def test_snapshot_bytes_of_an_older_body_shape_still_decode() -> None:
    # An older server wrote the body array without the trailing `ca` field
    # (and so without the fields added after it).
    body = snapshot_mod.decode_snapshot(StateStore().snapshot())
    cut = snapshot_mod.SnapshotBody.__struct_fields__.index("ca")
    fields = msgspec.structs.astuple(body)[:cut]
    raw = msgspec.msgpack.encode(list(fields))
    data = msgspec.msgpack.encode(
        [snapshot_mod.MAGIC, snapshot_mod.VERSION, raw, hashlib.sha256(raw).digest()]
    )
    assert snapshot_mod.decode_snapshot(data).ca is None
    StateStore().restore(data)


def test_snapshot_repr_hides_keys() -> None:
    store = StateStore()
    FSM(store).apply(5, set_request(pair(1)))
    snap = store.ca.snapshot()
    assert "PRIVATE" not in repr(snap) and "PRIVATE" not in repr(store.ca)


def test_rows_are_caroot_structs() -> None:
    store = StateStore()
    FSM(store).apply(5, set_request(pair(1)))
    assert all(isinstance(r, CARoot) for r in store.ca.roots.values())


# ----- the CA configuration (CAConfigSetRequest) -----------------------------------


def config_request(
    leaf_ttl: str, *, config_cas: int = 0, roots: CARootsSetRequest | None = None
) -> CAConfigSetRequest:
    command = CAConfigSetRequest(
        config=CAConfiguration(config={"LeafCertTTL": leaf_ttl}), config_cas_index=config_cas
    )
    if roots is not None:
        command.roots = roots.roots
        command.cluster_id = roots.cluster_id
        command.signing_keys = roots.signing_keys
        command.cas_index = roots.cas_index
    return command


def test_config_and_roots_are_set_together_or_not_at_all() -> None:
    store = StateStore()
    fsm = FSM(store)
    woken: list[str] = []
    store.watches.subscribe([CONFIG_KEY], lambda: woken.append("config"))
    assert fsm.apply(3, config_request("72h", roots=set_request(pair(1)))) is None
    index, config = store.ca_config()
    assert index == 3 and config is not None and config.config["LeafCertTTL"] == "72h"
    assert (config.create_index, config.modify_index) == (3, 3) and woken == ["config"]
    assert store.ca.roots_index() == 3
    # A rotation whose roots CAS fails leaves the configuration alone too.
    stale = config_request("2h", config_cas=3, roots=set_request(pair(1), pair(2), cas=1))
    assert isinstance(fsm.apply(4, stale), ApplyError)
    assert store.ca_config()[1].config["LeafCertTTL"] == "72h"  # type: ignore[union-attr]
    # A configuration CAS on an old index is refused.
    assert isinstance(fsm.apply(5, config_request("2h", config_cas=1)), ApplyError)
    # The right indexes: both change at once.
    rotate = config_request("2h", config_cas=3, roots=set_request(pair(1), pair(2), cas=3))
    assert fsm.apply(6, rotate) is None
    active = store.ca.active_root()
    assert active is not None and store.ca.signing_key(active.id) == pair(2).key_pem
    assert store.ca_config()[1].modify_index == 6  # type: ignore[union-attr]
    # The same configuration again changes nothing and wakes no one.
    woken.clear()
    assert fsm.apply(7, config_request("2h", config_cas=6)) is None
    assert woken == [] and store.ca_config()[0] == 6


def test_config_survives_a_snapshot_and_hides_keys_in_reprs() -> None:
    store = StateStore()
    FSM(store).apply(3, config_request("72h", roots=set_request(pair(1))))
    copy = StateStore()
    copy.restore(store.snapshot())
    assert copy.ca_config() == store.ca_config()
    assert pair(1).key_pem not in repr(config_request("1h", roots=set_request(pair(1))))
