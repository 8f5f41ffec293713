"""Gossip wire messages: msgspec structs encoded as msgpack.

Job: define every message members exchange, encode them, pack several into one
datagram (a compound message), and decode bytes from the network.

Rules:
- Each message is an array-like msgspec struct whose first element is a numbered
  tag. THE TAGS ARE APPEND-ONLY: never renumber or reuse one, never reorder or
  remove fields; add new optional fields at the end only.
- A datagram is one message; several messages travel as one `Compound`.
  Compounds never nest, and push-pull state only travels over streams.
- Decoding bad bytes of any kind raises `MessageError` and nothing else; the
  caller drops the packet and counts it. Field bounds are part of the schema so
  that a hostile peer cannot make us allocate without limit.
- Plaintext messages always start with a msgpack array header (0x90-0x9f or
  0xdc), never with the encryption version byte, so sealed and plain packets can
  be told apart by their first byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Annotated

import msgspec

from proconsul.structs.coordinate import Coordinate

# Field bounds. Generous for honest peers, small enough that a forged packet
# cannot blow up memory.
# The largest incarnation or Lamport time on the wire. Our own counters stop
# here (`saturated`): a peer's value at the bound must never push ours past
# it, or every peer would refuse everything we send from then on.
MAX_COUNTER = 2**63 - 1
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Incarnation = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
LTime = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNTER)]
NodeName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TargetName = Annotated[str, msgspec.Meta(max_length=128)]
Host = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
TagKey = Annotated[str, msgspec.Meta(max_length=128)]
TagValue = Annotated[str, msgspec.Meta(max_length=512)]
Tags = Annotated[dict[TagKey, TagValue], msgspec.Meta(max_length=64)]
EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
EventPayload = Annotated[bytes, msgspec.Meta(max_length=9 * 1024)]
WireAddr = tuple[Host, Port]

# An address is (host, port); the core treats it as opaque and hashable.
Address = tuple[str, int]


class MessageError(ValueError):
    """Bytes that are not a valid gossip message. Drop the packet and count it."""


class Tag(IntEnum):
    """Message type numbers. Append-only: see the module docstring."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    SUSPECT = 5
    ALIVE = 6
    DEAD = 7
    PUSH_PULL = 8
    USER_EVENT = 9
    COMPOUND = 10


class State(IntEnum):
    """A member's state as carried in push-pull. Append-only."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class Ping(msgspec.Struct, tag=int(Tag.PING), array_like=True, frozen=True):
    """Are you there? `node` names the intended target so a ping that reaches a
    new owner of a recycled address is not acked by the wrong member."""

    seq: Seq
    node: TargetName


class IndirectPing(msgspec.Struct, tag=int(Tag.INDIRECT_PING), array_like=True, frozen=True):
    """Please ping `node` at `addr` for me; answer Nack if it stays silent."""

    seq: Seq
    node: NodeName
    addr: WireAddr
    nack: bool


class Ack(msgspec.Struct, tag=int(Tag.ACK), array_like=True, frozen=True):
    """`coord`: the acker's network coordinate, as Serf carries it in its ack
    payload (absent on relayed acks: their round trip is not the acker's)."""

    seq: Seq
    coord: Coordinate | None = None


class Nack(msgspec.Struct, tag=int(Tag.NACK), array_like=True, frozen=True):
    """Sent by an indirect prober whose target did not answer (Lifeguard): it
    proves the prober itself is reachable, so the requester's own health is fine."""

    seq: Seq


class Suspect(msgspec.Struct, tag=int(Tag.SUSPECT), array_like=True, frozen=True):
    incarnation: Incarnation
    node: NodeName
    from_node: NodeName


class Alive(msgspec.Struct, tag=int(Tag.ALIVE), array_like=True, frozen=True):
    incarnation: Incarnation
    node: NodeName
    addr: WireAddr
    tags: Tags


class Dead(msgspec.Struct, tag=int(Tag.DEAD), array_like=True, frozen=True):
    """`left` marks a graceful leave (or a force-leave) rather than a failure."""

    incarnation: Incarnation
    node: NodeName
    from_node: NodeName
    left: bool


class UserEvent(msgspec.Struct, tag=int(Tag.USER_EVENT), array_like=True, frozen=True):
    ltime: LTime
    name: EventName
    payload: EventPayload


class NodeState(msgspec.Struct, array_like=True, frozen=True):
    """One member as carried in push-pull."""

    name: NodeName
    addr: WireAddr
    tags: Tags
    incarnation: Incarnation
    state: State


class PushPull(msgspec.Struct, tag=int(Tag.PUSH_PULL), array_like=True, frozen=True):
    """Full state exchanged over a stream; the receiver answers with `reply=True`."""

    from_node: NodeName
    join: bool
    reply: bool
    nodes: Annotated[list[NodeState], msgspec.Meta(max_length=100_000)]
    event_ltime: LTime
    events: Annotated[list[UserEvent], msgspec.Meta(max_length=4096)]


# Messages that may appear inside a compound.
Simple = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | UserEvent


class Compound(msgspec.Struct, tag=int(Tag.COMPOUND), array_like=True, frozen=True):
    msgs: Annotated[list[Simple], msgspec.Meta(max_length=255)]


Message = Simple | PushPull | Compound

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)

# Outer [tag, [..]] header of a compound: fixarray(2) then the positive-fixint tag.
_COMPOUND_PREFIX = bytes((0x92, int(Tag.COMPOUND)))
# Worst-case framing a compound adds around its parts: prefix plus array16 header.
COMPOUND_OVERHEAD = len(_COMPOUND_PREFIX) + 3
MAX_COMPOUND_PARTS = 255


def saturated(counter: int) -> int:
    """`counter`, but never past what the wire carries (see MAX_COUNTER)."""
    return min(counter, MAX_COUNTER)


def encode(msg: Message) -> bytes:
    """One message as msgpack bytes."""
    return _encoder.encode(msg)


def compound(parts: Sequence[bytes]) -> bytes:
    """Pack already-encoded messages into one datagram.

    Built by concatenation so that each broadcast is encoded once, when queued,
    however many datagrams it later rides in. One part is sent as itself.
    """
    n = len(parts)
    if n == 1:
        return parts[0]
    if not 1 < n <= MAX_COMPOUND_PARTS:
        raise ValueError(f"a compound holds 2..{MAX_COMPOUND_PARTS} messages, not {n}")
    header = bytes((0x90 | n,)) if n < 16 else bytes((0xDC, n >> 8, n & 0xFF))
    return b"".join((_COMPOUND_PREFIX, header, *parts))


def decode(data: bytes) -> Message:
    """Decode one message (possibly a compound). Raises MessageError on bad input."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        # ValidationError is a DecodeError; the rest are belt and braces so that
        # nothing else ever reaches the receive loop.
        raise MessageError(str(exc)) from None


def flatten(msg: Message) -> Sequence[Simple | PushPull]:
    """The messages a decoded packet carries, in order."""
    if isinstance(msg, Compound):
        return msg.msgs
    return (msg,)


def decode_packet(data: bytes) -> Sequence[Simple | PushPull]:
    """Decode a datagram or stream frame into its messages."""
    return flatten(decode(data))
