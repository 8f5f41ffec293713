"""What the gossip core asks its adapter to do: one frozen `Ready` value.

Job: describe, as plain data, the datagrams to send, the streams to open, and
the membership and user events to report, so the core never touches a socket.

Ordering rules the adapter must keep (they are written on the fields too):
- `send_udp`: send in order, each datagram sealed by the encryption policy.
  Losing some is fine; SWIM expects loss.
- `send_tcp`: each request is independent and may run concurrently. Open a
  stream to `addr` (timeout `GossipParams.tcp_timeout`), write the sealed
  payload as one frame; if `expects_reply`, read one frame back, open it and
  pass it to `GossipCore.receive_stream(addr, frame, now)`. A failed stream is
  reported with `GossipCore.stream_failed(request, now)`; there is nothing to
  retry, the core does its own retries.
- `member_events` and `user_events`: deliver in order, after the sends of the
  same Ready (the core's state already reflects them).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from .messages import Address
from .state import Member


class MemberEventKind(StrEnum):
    """serf's member events."""

    JOIN = "member-join"
    LEAVE = "member-leave"
    FAIL = "member-failed"
    UPDATE = "member-update"
    REAP = "member-reap"


class StreamPurpose(StrEnum):
    JOIN = "join"  # push-pull with a join address; reply means the join worked
    PUSH_PULL = "push-pull"  # periodic anti-entropy
    RECONNECT = "reconnect"  # push-pull with a failed member, to heal partitions
    PING = "ping"  # fallback probe over TCP; the reply is an ack
    MESSAGE = "message"  # a message too large for a datagram; no reply


class StreamRequest(msgspec.Struct, frozen=True):
    """Open a stream to `addr`, send `payload`; read one reply frame if `expects_reply`."""

    addr: Address
    payload: bytes
    purpose: StreamPurpose
    expects_reply: bool
    # Correlates stream_failed() with the request (e.g. which join address failed).
    ident: int


class MemberEvent(msgspec.Struct, frozen=True):
    kind: MemberEventKind
    member: Member


class UserEventRecord(msgspec.Struct, frozen=True):
    """A user event delivered to this member (including ones it fired itself)."""

    ltime: int
    name: str
    payload: bytes


class Ready(msgspec.Struct, frozen=True):
    """Everything the core wants done since the previous `take_actions()`."""

    # Datagrams (plaintext; the adapter seals them), in send order.
    send_udp: tuple[tuple[Address, bytes], ...] = ()
    # Stream exchanges; independent of each other.
    send_tcp: tuple[StreamRequest, ...] = ()
    # Membership changes as serf reports them, in order.
    member_events: tuple[MemberEvent, ...] = ()
    # New user events, in the order they were learnt.
    user_events: tuple[UserEventRecord, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.send_udp or self.send_tcp or self.member_events or self.user_events)


EMPTY_READY = Ready()
