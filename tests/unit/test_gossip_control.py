"""Control frames (keyring requests, replies, refusals), keyring ops and the reply summary;
and the Consul user-event envelope, filters and index."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proconsul.agent import user_events as ue
from proconsul.gossip import control as ctl
from proconsul.gossip.crypto import Keyring, encode_key
from proconsul.gossip.messages import MessageError

A, B, C = b"a" * 32, b"b" * 16, b"c" * 24


def test_control_round_trip_and_marker() -> None:
    for msg in (
        ctl.KeyringRequest("install", A),
        ctl.KeyringReply(True, "", [A, B], A),
        ctl.Refusal("decrypt_failed"),
    ):
        data = ctl.encode_control(msg)
        assert data[:1] == b"\xc1" and ctl.is_control(data)
        assert ctl.decode_control(data) == msg


@given(st.binary(max_size=300))
def test_decode_control_raises_only_message_error(data: bytes) -> None:
    for candidate in (data, b"\xc1" + data):
        with contextlib.suppress(MessageError):
            ctl.decode_control(candidate)


def test_keyring_ops_follow_consul() -> None:
    ring = Keyring(A)
    assert ctl.apply_keyring_op(ring, "install", B).ok
    reply = ctl.apply_keyring_op(ring, "use", C)
    assert not reply.ok and reply.message == "Requested key is not in the keyring"
    assert ctl.apply_keyring_op(ring, "use", B).primary == B
    reply = ctl.apply_keyring_op(ring, "remove", B)
    assert (reply.ok, reply.message) == (False, "Removing the primary key is not allowed")
    assert ctl.apply_keyring_op(ring, "remove", A).keys == [B]
    assert ctl.apply_keyring_op(ring, "list", b"").keys == [B]
    assert ctl.apply_keyring_op(ring, "bogus", b"").ok is False
    none = ctl.apply_keyring_op(None, "install", A)
    assert (none.ok, none.message) == (False, ctl.NO_KEYRING)


def test_summary_counts_keys_primaries_and_errors() -> None:
    replies: dict[str, ctl.KeyringReply | str] = {
        "n1": ctl.KeyringReply(True, "", [A, B], A),
        "n2": ctl.KeyringReply(True, "", [A], A),
        "n3": ctl.KeyringReply(False, "Removing the primary key is not allowed", [B, A], B),
    }
    summary = ctl.summarize(replies, 3)
    assert summary.keys == {encode_key(A): 3, encode_key(B): 2}
    assert summary.primary_keys == {encode_key(A): 2, encode_key(B): 1}
    assert summary.error() == "1/3 nodes reported failure"
    assert summary.messages == {"n3": "Removing the primary key is not allowed"}
    replies["n3"] = "no reply: connection refused"
    assert ctl.summarize(replies, 4).error() == "1/4 nodes reported failure"
    ok = ctl.summarize({"n1": ctl.KeyringReply(True, "", [A], A)}, 2)
    assert ok.error() == "1/2 nodes reported success"
    assert ctl.summarize({"n1": ctl.KeyringReply(True, "", [A], A)}, 1).error() is None


# --------------------------------------------------------------------------- user events


def test_event_validation_uses_consuls_words() -> None:
    with pytest.raises(ue.EventError, match="User event missing name"):
        ue.new_event("", b"")
    with pytest.raises(ue.EventError, match="Cannot provide tag filter without service filter"):
        ue.new_event("deploy", b"", tag_filter="v1")
    with pytest.raises(ue.EventError, match="Invalid node filter"):
        ue.new_event("deploy", b"", node_filter="(")
    event = ue.new_event("deploy", b"x", "web.*", "api", "v[0-9]")
    assert uuid.UUID(event.id).version == 4
    assert event.to_json() == {
        "ID": event.id,
        "Name": "deploy",
        "Payload": "eA==",
        "NodeFilter": "web.*",
        "ServiceFilter": "api",
        "TagFilter": "v[0-9]",
        "Version": 1,
        "LTime": 0,
    }
    assert ue.new_event("deploy", b"").to_json()["Payload"] is None


def test_envelope_round_trip_carries_ltime_from_gossip() -> None:
    event = ue.new_event("deploy", b"payload", service_filter="web")
    event.ltime = 99
    back = ue.decode(ue.encode(event), 7)
    assert back is not None and back.ltime == 7 and back.name == "deploy"
    assert back.payload == b"payload" and back.service_filter == "web"
    assert ue.decode(b"\x00garbage", 1) is None


@given(st.binary(max_size=200))
def test_envelope_decode_never_raises(data: bytes) -> None:
    ue.decode(data, 1)


def test_filters_match_like_go_regexp() -> None:
    services = [("web", ["v1", "blue"]), ("db", [])]
    assert ue.should_process(ue.new_event("e", b"", node_filter="node-1"), "my-node-12", [])
    assert not ue.should_process(ue.new_event("e", b"", node_filter="^node"), "my-node", [])
    assert ue.should_process(ue.new_event("e", b"", service_filter="we"), "n", services)
    assert not ue.should_process(ue.new_event("e", b"", service_filter="api"), "n", services)
    tagged = ue.new_event("e", b"", service_filter="web", tag_filter="^blue$")
    assert ue.should_process(tagged, "n", services)
    assert not ue.should_process(
        ue.new_event("e", b"", service_filter="db", tag_filter="v1"), "n", services
    )
    broken = ue.UserEvent(id="x", name="e", node_filter="(")
    assert not ue.should_process(broken, "n", services)


async def test_buffer_keeps_the_last_256_and_index_moves() -> None:
    buffer = ue.EventBuffer()
    assert buffer.index_of(buffer.events()) == 1
    assert not await buffer.wait(0.01)
    last = None
    for i in range(300):
        last = ue.new_event("a" if i % 2 else "b", b"")
        buffer.add(last)
    assert len(buffer.events()) == 256 and len(buffer.events("a")) == 128
    assert last is not None
    value = uuid.UUID(last.id).int
    assert buffer.index_of(buffer.events()) == (value >> 64) ^ (value & (2**64 - 1))
    assert ue.uuid_to_index("not-a-uuid") == 1
