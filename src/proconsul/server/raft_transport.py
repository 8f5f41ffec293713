"""Raft messages over the RPC library: one-way `Raft.Step` calls, batched per peer.

Job: carry the messages of each Ready to their peers without ever making the
Ready loop wait on the network, and turn an incoming `Raft.Step` payload back
into messages.

Wire shape: the payload of `Raft.Step` is a msgpack `StepBatch`: the sender's
RPC address (so a server that is not yet in the receiver's configuration, a
freshly added one say, can still be answered) and a list of messages, each
encoded by `raft.messages.encode`. Append-only, like every wire struct.

Rules:
- `send` is synchronous and never blocks: each peer has a bounded queue and
  one sender task. A full queue drops the message and counts it; Raft already
  survives lost messages (heartbeats, probes and retries resend).
- A sender drains what is queued into one frame (bounded in count and bytes),
  so a busy leader pays one frame per peer per Ready, not one per message.
- A failed send (peer down, TLS refused, timeout) drops that batch; the sender
  then backs off (bounded) so a dead peer costs one dial per backoff period.
  The first failure in a row is logged as a warning, repeats at debug.
- Every send has a deadline (`send_timeout_s`); nothing here waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

import msgspec

from proconsul.raft.messages import Message, MessageError, decode_message, encode
from proconsul.rpc.client import RPCClient
from proconsul.rpc.codec import DECODE_ERRORS

log = logging.getLogger("proconsul.raft")

STEP_METHOD = "Raft.Step"
QUEUE_LIMIT = 1024  # messages waiting per peer
MAX_BATCH_MESSAGES = 128
# Well under the RPC frame limit (16 MiB): a snapshot chunk or an AppendEntries
# batch is about 1 MiB, so a frame holds a few of those at most.
MAX_BATCH_BYTES = 4 << 20
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0


class StepBatch(msgspec.Struct, array_like=True):
    """The `Raft.Step` payload. Append-only: new fields at the end, with defaults."""

    from_address: str
    messages: list[bytes]


_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(StepBatch)


def encode_batch(from_address: str, messages: list[bytes]) -> bytes:
    return _encoder.encode(StepBatch(from_address, messages))


def decode_batch(payload: bytes) -> tuple[str, list[Message], int]:
    """(sender address, messages that decoded, count of those that did not).

    Raises MessageError if the payload itself is not a StepBatch.
    """
    try:
        batch = _batch_decoder.decode(payload)
    except DECODE_ERRORS as exc:
        raise MessageError(f"bad Raft.Step payload: {exc}") from None
    messages: list[Message] = []
    bad = 0
    for raw in batch.messages:
        try:
            messages.append(decode_message(raw))
        except MessageError:
            bad += 1
    return batch.from_address, messages, bad


class _PeerSender:
    """One peer's queue and the task that empties it."""

    def __init__(self, transport: RaftTransport, peer_id: str) -> None:
        self.transport = transport
        self.peer_id = peer_id
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_LIMIT)
        self.failures = 0
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        carry: tuple[str, bytes] | None = None
        while True:
            address, first = carry if carry is not None else await self.queue.get()
            carry = None
            batch, size = [first], len(first)
            while (
                not self.queue.empty()
                and len(batch) < MAX_BATCH_MESSAGES
                and size < MAX_BATCH_BYTES
            ):
                next_address, data = self.queue.get_nowait()
                if next_address != address:
                    carry = (next_address, data)  # the peer moved: next frame
                    break
                batch.append(data)
                size += len(data)
            await self._send(address, batch)

    async def _send(self, address: str, batch: list[bytes]) -> None:
        transport = self.transport
        try:
            await transport.client.notify(
                address,
                STEP_METHOD,
                encode_batch(transport.local_address, batch),
                transport.send_timeout_s,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ConnectionError, TimeoutError, FrameTooLarge, ...
            transport.counters["send_failures"] += 1
            transport.counters["messages_lost"] += len(batch)
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            # Some failures (a bare TimeoutError) have no message: name the kind then.
            reason = str(exc) or type(exc).__name__
            log.log(level, "raft: cannot send to %s at %s: %s", self.peer_id, address, reason)
            backoff = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** min(self.failures - 1, 10))
            await asyncio.sleep(backoff)
            return
        if self.failures:
            log.info("raft: %s at %s is reachable again", self.peer_id, address)
            self.failures = 0
        transport.counters["batches_sent"] += 1
        transport.counters["messages_sent"] += len(batch)


class RaftTransport:
    """Outgoing Raft messages, one bounded queue and sender task per peer."""

    def __init__(self, client: RPCClient, local_address: str, *, send_timeout_s: float) -> None:
        self.client = client
        self.local_address = local_address
        self.send_timeout_s = send_timeout_s
        self.counters: Counter[str] = Counter()
        self._senders: dict[str, _PeerSender] = {}
        self._closed = False

    def send(self, message: Message, address: str | None) -> None:
        """Queue `message` for its receiver at `address` (dropped if None or full)."""
        if self._closed:
            return
        if address is None:
            self.counters["no_address"] += 1
            return
        sender = self._senders.get(message.to_id)
        if sender is None:
            sender = self._senders[message.to_id] = _PeerSender(self, message.to_id)
        try:
            sender.queue.put_nowait((address, encode(message)))
        except asyncio.QueueFull:
            self.counters["queue_full_drops"] += 1

    def retain(self, peer_ids: set[str]) -> None:
        """Stop the senders of servers not in `peer_ids` (they left the configuration);
        a message for one of them later simply starts a new sender."""
        for peer_id in [p for p in self._senders if p not in peer_ids]:
            self._senders.pop(peer_id).task.cancel()

    async def close(self) -> None:
        self._closed = True
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            sender.task.cancel()
        for sender in senders:
            with contextlib.suppress(asyncio.CancelledError):
                await sender.task

    def stats(self) -> dict[str, Any]:
        counters: dict[str, Any] = dict(self.counters)
        counters["peers"] = len(self._senders)
        counters["queued"] = sum(s.queue.qsize() for s in self._senders.values())
        return counters
