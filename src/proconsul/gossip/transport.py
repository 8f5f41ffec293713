"""The asyncio adapter that runs a GossipCore on real sockets.

Job: one UDP endpoint and one TCP listener on the same `bind:port`; feed every
datagram and stream frame to the core, execute what `take_actions()` asks
(datagrams, streams, events), and wake the core's timers at `next_deadline()`.
Every datagram and frame is sealed and opened by the `EncryptionPolicy`.

Rules:
- Never raise out of a socket callback. Bad input of any kind (undecryptable,
  plaintext when encryption is required, oversized, malformed) is dropped and
  counted by reason; a warning naming the peer and the reason is logged at most
  once per reason and peer per `REFUSAL_LOG_INTERVAL_S`. Keys and packet
  contents never reach the log.
- Streams are one exchange per connection: a 4-byte big-endian length, then
  the (sealed) frame; at most one reply frame back. Frames are bounded
  (`MAX_FRAME_BYTES`), every read and write has the core's `tcp_timeout`, and
  inbound and outbound streams in flight are capped.
- A frame we refuse is answered with an unsealed `control.Refusal` carrying
  only the reason code, so the sender can say why its join failed.
- Control frames (`control.py`) are handed to `control_handler`; they must
  arrive sealed and their replies are sealed with the keyring.
- Time is `loop.time()`; the core never sees another clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .actions import MemberEvent, StreamPurpose, StreamRequest, UserEventRecord
from .control import CONTROL_MARK, Refusal, decode_control, encode_control
from .crypto import NONCE_SIZE, EncryptionPolicy, GossipSecurityError, looks_sealed
from .messages import Address, MessageError
from .swim import GossipCore

log = logging.getLogger("proconsul.gossip")

T = TypeVar("T")

FRAME_HEADER = struct.Struct(">I")
# A push-pull of ~20,000 members fits; anything larger is refused unread.
MAX_FRAME_BYTES = 16 * 1024 * 1024
# Our own datagrams are at most udp_buffer_size; a little slack for peers tuned higher.
MIN_DATAGRAM_LIMIT = 16 * 1024
MAX_INBOUND_STREAMS = 256
MAX_OUTBOUND_STREAMS = 128
REFUSAL_LOG_INTERVAL_S = 30.0
_MAX_LOG_KEYS = 1024

# Why we refused a packet (GossipSecurityError reasons and our own).
REFUSAL_TEXT = {
    "decrypt_failed": "no installed gossip key decrypts it (is the encrypt key the same?)",
    "plaintext_refused": "it is not encrypted and this agent requires encrypted gossip",
    "no_keyring": "it is encrypted but this agent has no gossip encryption key",
    "malformed": "it is not a gossip packet",
    "oversized": "it is larger than any gossip packet",
    "control_unsealed": "a keyring message must be encrypted",
}
# Why a peer refused ours, from its Refusal reason.
REMOTE_REFUSAL_TEXT = {
    "decrypt_failed": "the remote agent could not decrypt our gossip: the encryption keys differ",
    "plaintext_refused": (
        "the remote agent requires encrypted gossip but this agent sends plaintext "
        "(no encrypt key, or encrypt_verify_outgoing = false)"
    ),
    "no_keyring": (
        "the remote agent has no gossip encryption key but this agent sends encrypted gossip"
    ),
    "control_unsealed": "the remote agent refused an unencrypted keyring message",
}

MemberCallback = Callable[[MemberEvent], None]
UserEventCallback = Callable[[UserEventRecord], None]
# Gets an opened control frame and the peer; returns the plaintext reply frame.
ControlHandler = Callable[[bytes, Address], Awaitable[bytes]]


class StreamError(Exception):
    """A stream exchange that failed; the message says why, in words for the log."""


def _noop(_: Any) -> None:
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StreamError):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the remote agent closed the connection without replying"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME_BYTES) -> bytes:
    size = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))[0]
    if not 0 < size <= limit:
        raise StreamError(f"refused a frame of {size} bytes")
    return await reader.readexactly(size)


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload)) + payload


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: GossipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self.owner.counters["udp_errors"] += 1


class GossipTransport:
    """Drives one GossipCore over UDP and TCP on `host:port`."""

    def __init__(
        self,
        core: GossipCore,
        policy: EncryptionPolicy,
        host: str,
        port: int,
        *,
        on_member_event: MemberCallback = _noop,
        on_user_event: UserEventCallback = _noop,
        control_handler: ControlHandler | None = None,
    ) -> None:
        self.core = core
        self.policy = policy
        self.host = host
        self.port = port
        self.on_member_event = on_member_event
        self.on_user_event = on_user_event
        self.control_handler = control_handler
        self.counters: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._flushing = False
        self._closed = False
        self._outbound: set[asyncio.Task[None]] = set()
        self._inbound = 0
        self._join_waiters: dict[int, asyncio.Future[str | None]] = {}
        self._logged: dict[tuple[str, str], float] = {}
        params = core.params
        self._max_datagram = max(MIN_DATAGRAM_LIMIT, params.udp_buffer_size)
        self._timeout = params.tcp_timeout
        self.timer_lag_max = 0.0

    # ------------------------------------------------------------ lifecycle

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("gossip transport is not started")
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    async def start(self) -> None:
        """Bind UDP and TCP on the same port (port 0 picks a free one for both)."""
        self._loop = asyncio.get_running_loop()
        attempts = 8 if self.port == 0 else 1
        for attempt in range(attempts):
            udp, _ = await self._loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(self.host, self.port)
            )
            port = int(udp.get_extra_info("sockname")[1])
            try:
                self._server = await asyncio.start_server(
                    self._serve_stream, self.host, port, reuse_address=True, limit=64 * 1024
                )
            except OSError:
                udp.close()
                if attempt + 1 == attempts:
                    raise
                continue
            self._udp = udp
            self.port = port
            break
        self._flush()

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            self._server.close()
        for task in list(self._outbound):
            task.cancel()
        if self._outbound:
            await asyncio.gather(*self._outbound, return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
        for waiter in self._join_waiters.values():
            if not waiter.done():
                waiter.set_result("the agent is shutting down")
        self._join_waiters.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # ------------------------------------------------------------ API

    def apply(self, call: Callable[[float], T]) -> T:
        """Run a core call at `now`, then carry out what it asked for."""
        result = call(self.now())
        self._flush()
        return result

    async def join(self, addrs: Sequence[Address]) -> dict[Address, str | None]:
        """Push-pull with each address; maps each to None (joined) or why it failed."""
        if not addrs:
            return {}
        idents = self.core.join(list(addrs), self.now())
        waiters: dict[Address, asyncio.Future[str | None]] = {}
        for addr, ident in zip(addrs, idents, strict=True):
            waiter: asyncio.Future[str | None] = self.loop.create_future()
            self._join_waiters[ident] = waiter
            waiters[addr] = waiter
        self._flush()
        results: dict[Address, str | None] = {}
        for addr, waiter in waiters.items():
            try:
                results[addr] = await asyncio.wait_for(waiter, self._timeout + 1.0)
            except TimeoutError:
                results[addr] = "timed out"
        return results

    async def leave(self, max_wait: float) -> None:
        """Announce a graceful leave and keep gossiping until it has spread (or max_wait)."""
        self.apply(self.core.leave)
        end = self.now() + max_wait
        step = max(self.core.params.gossip_interval / 2, 0.01)
        while not self.core.leave_propagated() and self.now() < end:
            await asyncio.sleep(min(step, max(end - self.now(), 0.0)))

    async def request_control(self, addr: Address, payload: bytes) -> bytes:
        """Send a control frame (sealed with the keyring) and return the opened reply."""
        keyring = self.policy.keyring
        if keyring is None:
            raise StreamError("gossip encryption is not enabled")
        sealed = keyring.seal(payload, os.urandom(NONCE_SIZE))
        try:
            raw = await asyncio.wait_for(self._exchange(addr, sealed, True), self._timeout)
        except Exception as exc:
            raise StreamError(_describe(exc)) from None
        assert raw is not None
        self._raise_refusal(raw)
        keyring = self.policy.keyring
        if keyring is None or not looks_sealed(raw):
            raise StreamError("the reply was not encrypted")
        try:
            return keyring.open(raw)
        except GossipSecurityError as exc:
            self._refuse(exc.reason, addr, "tcp")
            raise StreamError(
                f"reply refused: {REFUSAL_TEXT.get(exc.reason, exc.reason)}"
            ) from None

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.core.stats())
        out.update(self.counters)
        for reason, count in self.refused.items():
            out[f"refused_{reason}"] = count
        out["refused_total"] = sum(self.refused.values())
        out["dropped_total"] = out["refused_total"] + out.get("malformed", 0)
        out["streams_in_flight"] = len(self._outbound) + self._inbound
        out["timer_lag_max_ms"] = round(self.timer_lag_max * 1000.0, 3)
        return out

    # ------------------------------------------------------------ core plumbing

    def _flush(self) -> None:
        if self._flushing or self._closed:
            return
        self._flushing = True
        try:
            core = self.core
            while core.ready():
                ready = core.take_actions()
                for addr, packet in ready.send_udp:
                    self._send_udp(addr, packet)
                for request in ready.send_tcp:
                    self._start_stream(request)
                for member_event in ready.member_events:
                    self._deliver(self.on_member_event, member_event)
                for user_event in ready.user_events:
                    self._deliver(self.on_user_event, user_event)
        finally:
            self._flushing = False
        self._arm_timer()

    @staticmethod
    def _deliver(callback: Callable[[Any], None], event: Any) -> None:
        try:
            callback(event)
        except Exception:
            log.exception("gossip: event handler failed")

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None or self._closed:
            return
        if self._timer is not None:
            if self._timer_when <= deadline:
                return
            self._timer.cancel()
        self._timer_when = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.now()
        self.timer_lag_max = max(self.timer_lag_max, now - self._timer_when)
        try:
            self.core.tick(now)
        except Exception:
            self.counters["core_errors"] += 1
            log.exception("gossip: timer tick failed")
        self._flush()

    def _send_udp(self, addr: Address, packet: bytes) -> None:
        if self._udp is None:
            return
        data = self.policy.seal(packet)
        try:
            self._udp.sendto(data, addr)
        except (OSError, ValueError, TypeError):
            self.counters["udp_send_errors"] += 1
            return
        self.counters["udp_out_packets"] += 1
        self.counters["udp_out_bytes"] += len(data)

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        counters = self.counters
        counters["udp_in_packets"] += 1
        counters["udp_in_bytes"] += len(data)
        if len(data) > self._max_datagram:
            self._refuse("oversized", addr, "udp")
            return
        try:
            plain = self.policy.open(data)
        except GossipSecurityError as exc:
            self._refuse(exc.reason, addr, "udp")
            return
        if plain[:1] == CONTROL_MARK:
            self._refuse("malformed", addr, "udp")
            return
        try:
            self.core.receive(addr, plain, self.now())
        except Exception:
            counters["core_errors"] += 1
            log.exception("gossip: handling a datagram failed")
        self._flush()

    def _refuse(self, reason: str, addr: Address, proto: str) -> None:
        self.refused[reason] += 1
        now = self.now()
        key = (reason, addr[0])
        last = self._logged.get(key)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL_S:
            return
        if len(self._logged) >= _MAX_LOG_KEYS:
            self._logged.clear()
        self._logged[key] = now
        log.warning(
            "gossip: refused %s packet from %s:%d: %s (%d refused for this reason so far)",
            proto,
            addr[0],
            addr[1],
            REFUSAL_TEXT.get(reason, reason),
            self.refused[reason],
        )

    # ------------------------------------------------------------ streams out

    def _start_stream(self, request: StreamRequest) -> None:
        if len(self._outbound) >= MAX_OUTBOUND_STREAMS:
            self.counters["tcp_out_dropped"] += 1
            self._stream_done(request, "too many gossip streams in flight")
            return
        task = self.loop.create_task(self._run_stream(request))
        self._outbound.add(task)
        task.add_done_callback(self._outbound.discard)

    async def _run_stream(self, request: StreamRequest) -> None:
        self.counters["tcp_out_streams"] += 1
        try:
            payload = self.policy.seal(request.payload)
            raw = await asyncio.wait_for(
                self._exchange(request.addr, payload, request.expects_reply), self._timeout
            )
            if raw is not None:
                self._raise_refusal(raw)
                try:
                    plain = self.policy.open(raw)
                except GossipSecurityError as exc:
                    self._refuse(exc.reason, request.addr, "tcp")
                    text = REFUSAL_TEXT.get(exc.reason, exc.reason)
                    raise StreamError(f"the reply was refused: {text}") from None
                self.core.receive_stream(request.addr, plain, self.now(), request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["tcp_out_failed"] += 1
            self._stream_done(request, _describe(exc))
        else:
            self._stream_done(request, None)
        self._flush()

    def _stream_done(self, request: StreamRequest, error: str | None) -> None:
        if error is not None:
            self.core.stream_failed(request, self.now())
            if request.purpose is not StreamPurpose.JOIN:
                log.debug(
                    "gossip: %s stream to %s failed: %s", request.purpose, request.addr, error
                )
        waiter = self._join_waiters.pop(request.ident, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(error)

    @staticmethod
    def _raise_refusal(raw: bytes) -> None:
        if raw[:1] != CONTROL_MARK:
            return
        try:
            msg = decode_control(raw)
        except MessageError:
            raise StreamError("the remote agent sent a malformed reply") from None
        if isinstance(msg, Refusal):
            raise StreamError(REMOTE_REFUSAL_TEXT.get(msg.reason, f"refused ({msg.reason})"))
        raise StreamError("the remote agent sent an unencrypted control reply")

    def _source(self, addr: Address) -> tuple[str, int] | None:
        """Dial from the bind address when it is one address of the same family."""
        host = self.host
        if host in ("", "0.0.0.0", "::") or (":" in host) != (":" in addr[0]):
            return None
        return (host, 0)

    async def _exchange(self, addr: Address, payload: bytes, expects_reply: bool) -> bytes | None:
        reader, writer = await asyncio.open_connection(
            addr[0], addr[1], limit=64 * 1024, local_addr=self._source(addr)
        )
        try:
            writer.write(frame(payload))
            await writer.drain()
            self.counters["tcp_out_bytes"] += len(payload) + FRAME_HEADER.size
            if not expects_reply:
                return None
            reply = await read_frame(reader)
            self.counters["tcp_in_bytes"] += len(reply) + FRAME_HEADER.size
            return reply
        finally:
            writer.close()

    # ------------------------------------------------------------ streams in

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        addr: Address = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        if self._inbound >= MAX_INBOUND_STREAMS or self._closed:
            self.counters["tcp_in_refused"] += 1
            writer.close()
            return
        self._inbound += 1
        self.counters["tcp_in_streams"] += 1
        try:
            data = await asyncio.wait_for(read_frame(reader), self._timeout)
            self.counters["tcp_in_bytes"] += len(data) + FRAME_HEADER.size
            reply = await self._handle_frame(data, addr)
            if reply is not None:
                writer.write(frame(reply))
                await asyncio.wait_for(writer.drain(), self._timeout)
                self.counters["tcp_out_bytes"] += len(reply) + FRAME_HEADER.size
        except asyncio.CancelledError:
            raise
        except StreamError:
            self._refuse("oversized", addr, "tcp")
        except Exception as exc:
            self.counters["tcp_in_errors"] += 1
            log.debug("gossip: stream from %s:%d failed: %s", addr[0], addr[1], _describe(exc))
        finally:
            self._inbound -= 1
            writer.close()

    async def _handle_frame(self, data: bytes, addr: Address) -> bytes | None:
        if data[:1] == CONTROL_MARK:
            # Unsealed control frames are only ever refusals, which answer us.
            self._refuse("control_unsealed", addr, "tcp")
            return encode_control(Refusal("control_unsealed"))
        try:
            plain = self.policy.open(data)
        except GossipSecurityError as exc:
            self._refuse(exc.reason, addr, "tcp")
            return encode_control(Refusal(exc.reason))
        if plain[:1] == CONTROL_MARK:
            return await self._handle_control(data, plain, addr)
        try:
            reply = self.core.receive_stream(addr, plain, self.now())
        except Exception:
            self.counters["core_errors"] += 1
            log.exception("gossip: handling a stream frame failed")
            reply = None
        self._flush()
        return self.policy.seal(reply) if reply is not None else None

    async def _handle_control(self, raw: bytes, plain: bytes, addr: Address) -> bytes | None:
        keyring = self.policy.keyring
        if not looks_sealed(raw) or keyring is None:
            self._refuse("control_unsealed", addr, "tcp")
            return encode_control(Refusal("control_unsealed"))
        if self.control_handler is None:
            return None
        self.counters["control_requests"] += 1
        reply = await self.control_handler(plain, addr)
        # The keyring may have changed (use/remove); seal with the current primary.
        keyring = self.policy.keyring
        if keyring is None:
            return None
        return keyring.seal(reply, os.urandom(NONCE_SIZE))
