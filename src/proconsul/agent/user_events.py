"""Consul user events on top of gossip: the event envelope, filters and the agent's buffer.

Job: turn `PUT /v1/event/fire/:name` into a gossip user event and back, decide
whether this agent keeps an incoming event (node, service and tag filters),
and remember the most recent ones for `GET /v1/event/list`, which blocks on an
index that changes with every new event.

Rules (Consul's):
- An event is `{ID, Name, Payload, NodeFilter, ServiceFilter, TagFilter,
  Version, LTime}`; the ID is a fresh UUID, Version is 1, and LTime is the
  Lamport time gossip gave it (0 in the reply to a fire).
- A tag filter needs a service filter; filters are regular expressions matched
  anywhere in the name (Go's MatchString); an event whose filter does not
  compile is dropped.
- The buffer keeps the last 256 events; the list index is the event ID's two
  64-bit halves XORed (1 when there are no events).
- The envelope travels msgpack-encoded as the gossip payload; its size counts
  against the gossip user-event limit. Decoding never raises past `decode`.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec

USER_EVENT_VERSION = 1
EVENT_BUFFER_SIZE = 256
# Consul's internal remote-exec event; remote exec is not supported, so it is dropped.
REMOTE_EXEC_NAME = "_rexec"


class EventError(ValueError):
    """A user event Consul would refuse; the message is user-facing."""


class UserEvent(msgspec.Struct, omit_defaults=True):
    """The envelope carried in the gossip payload (Consul's codec keys)."""

    id: str = msgspec.field(name="ID")
    name: str = msgspec.field(name="n")
    payload: bytes = msgspec.field(default=b"", name="p")
    node_filter: str = msgspec.field(default="", name="nf")
    service_filter: str = msgspec.field(default="", name="sf")
    tag_filter: str = msgspec.field(default="", name="tf")
    version: int = msgspec.field(default=USER_EVENT_VERSION, name="v")
    # Not sent: the gossip layer carries the Lamport time.
    ltime: int = msgspec.field(default=0, name="l")

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Payload": base64.b64encode(self.payload).decode("ascii") if self.payload else None,
            "NodeFilter": self.node_filter,
            "ServiceFilter": self.service_filter,
            "TagFilter": self.tag_filter,
            "Version": self.version,
            "LTime": self.ltime,
        }


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserEvent)


def new_event(
    name: str, payload: bytes, node_filter: str = "", service_filter: str = "", tag_filter: str = ""
) -> UserEvent:
    """A validated event with a fresh ID; raises EventError with Consul's wording."""
    if not name:
        raise EventError("User event missing name")
    if tag_filter and not service_filter:
        raise EventError("Cannot provide tag filter without service filter")
    for what, text in (("node", node_filter), ("service", service_filter), ("tag", tag_filter)):
        if text:
            try:
                re.compile(text)
            except re.error as exc:
                raise EventError(f"Invalid {what} filter: {exc}") from None
    return UserEvent(
        id=str(uuid.uuid4()),
        name=name,
        payload=payload,
        node_filter=node_filter,
        service_filter=service_filter,
        tag_filter=tag_filter,
    )


def encode(event: UserEvent) -> bytes:
    return _encoder.encode(msgspec.structs.replace(event, ltime=0))


def decode(data: bytes, ltime: int) -> UserEvent | None:
    """The envelope from a gossip payload, or None if it is not one."""
    try:
        event = _decoder.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError):
        # RecursionError: an unknown key (skipped) nested past the recursion limit.
        return None
    event.ltime = ltime
    return event


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except (re.error, OverflowError, RecursionError):
        # The pattern comes from a peer: one that does not compile (OverflowError:
        # a repeat count such as a{99999999999}) matches nothing.
        return False


def should_process(
    event: UserEvent, node_name: str, services: Iterable[tuple[str, Iterable[str]]]
) -> bool:
    """Consul's filters: node name, then a local service (by name) and one of its tags."""
    if event.node_filter and not _matches(event.node_filter, node_name):
        return False
    if event.service_filter:
        for service_name, tags in services:
            if not _matches(event.service_filter, service_name):
                continue
            if not event.tag_filter or any(_matches(event.tag_filter, t) for t in tags):
                return True
        return False
    return True


def uuid_to_index(event_id: str) -> int:
    """Consul's event index: the two 64-bit halves of the UUID XORed."""
    try:
        value = uuid.UUID(event_id).int
    except ValueError:
        return 1
    return (value >> 64) ^ (value & 0xFFFFFFFFFFFFFFFF)


class EventBuffer:
    """The agent's most recent user events, and a way to wait for the next one."""

    def __init__(self, size: int = EVENT_BUFFER_SIZE) -> None:
        self._events: deque[UserEvent] = deque(maxlen=size)
        self._changed = asyncio.Event()
        self.received = 0

    def add(self, event: UserEvent) -> None:
        self._events.append(event)
        self.received += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def events(self, name: str = "") -> list[UserEvent]:
        return [e for e in self._events if not name or e.name == name]

    @staticmethod
    def index_of(events: list[UserEvent]) -> int:
        return uuid_to_index(events[-1].id) if events else 1

    async def wait(self, timeout_s: float) -> bool:
        """Wait for the next event; False when `timeout_s` passed first."""
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), max(timeout_s, 0.0))
        except TimeoutError:
            return False
        return True
