"""The DNS server: asyncio UDP and TCP listeners around the pure answer core.

Job: receive queries, answer hot ones from the wire-format cache by copying
bytes, send the rest through `query` -> `core` -> `render` with catalog rows
from a `CatalogReader`, forward names outside the domain to the recursors, and
count everything in `stats()`.

Rules:
- Nothing a client sends can raise out of a callback: malformed datagrams and
  TCP frames are dropped and counted; a failed catalog read is SERVFAIL.
- The UDP hot path (a cache hit) is one dict lookup, an index probe per
  dependency and one `sendto`; it parses nothing and creates no task.
- Identical queries that miss at the same time share one lookup.
- Everything is bounded: pending lookups, waiters per lookup, TCP connections,
  frame sizes (the 2-byte prefix), and each TCP read has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol, cast

from proconsul.dns import core
from proconsul.dns.cache import AnswerCache, CacheEntry
from proconsul.dns.query import FLAG_QR, HEADER, MalformedQuery, Query, parse_query
from proconsul.dns.render import render, simple_response
from proconsul.structs.catalog import CheckServiceNode, Node

log = logging.getLogger("proconsul.dns")

MAX_PENDING = 1024  # distinct lookups in flight
MAX_WAITERS = 256  # identical queries parked on one lookup
MAX_TCP_CONNECTIONS = 512
TCP_IDLE_TIMEOUT_S = 30.0
TCP_FRAME_TIMEOUT_S = 5.0
_LOG_EVERY_S = 10.0
_U16 = struct.Struct("!H")
# A pseudo index key every catalog answer depends on: the reader reports a value
# that changes with the DNS token and the ACL tables (see CatalogReader.index).
ACL_DEP = "acl"


class CatalogReader(Protocol):
    """The catalog as DNS sees it. Reads run with the DNS token, stale allowed."""

    def index(self, key: str) -> int | None:
        """The state-store index of `key` now, or None when it cannot be known
        cheaply (answers are then not cached). For `ACL_DEP`, a value that
        changes whenever the DNS token or its rights may have changed."""

    async def service_nodes(
        self, service: str, tag: str, settings: core.DnsSettings, connect: bool = False
    ) -> tuple[str, list[CheckServiceNode]]:
        """(the service's name as stored, its instances with their checks); with
        `connect`, the connect-capable instances for it (its proxies) instead."""

    async def node(self, name: str, settings: core.DnsSettings) -> tuple[str, Node | None]:
        """(the node's name as stored, the node or None)."""

    async def nodes(self, settings: core.DnsSettings) -> list[Node]: ...

    async def prepared_query(
        self, query: str, settings: core.DnsSettings
    ) -> tuple[str, str, list[CheckServiceNode]] | None:
        """A prepared query executed: (service, its DNS TTL text, instances), None if none."""


class DnsStats:
    """Counters; the hot path bumps plain attributes."""

    def __init__(self) -> None:
        self.queries_udp = 0
        self.queries_tcp = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.dropped = 0  # malformed datagrams and TCP frames
        self.dropped_overload = 0
        self.trimmed = 0
        self.recursed = 0
        self.recursor_failures = 0
        self.lookup_errors = 0
        self.tcp_connections = 0
        self.tcp_rejected = 0
        self.rcodes = [0] * 16

    def count_response(self, body: bytes) -> None:
        # body starts at the flags word: the rcode is the low nibble of its 2nd byte.
        self.rcodes[body[1] & 0xF] += 1

    def as_dict(self) -> dict[str, int]:
        result = {
            "queries": self.queries_udp + self.queries_tcp,
            "queries_udp": self.queries_udp,
            "queries_tcp": self.queries_tcp,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "dropped": self.dropped,
            "dropped_overload": self.dropped_overload,
            "trimmed": self.trimmed,
            "recursed": self.recursed,
            "recursor_failures": self.recursor_failures,
            "lookup_errors": self.lookup_errors,
            "tcp_connections": self.tcp_connections,
            "tcp_rejected": self.tcp_rejected,
        }
        for code, name in core.RCODE_NAMES.items():
            result[f"answers.{name}"] = self.rcodes[code]
        result["answers.other"] = sum(self.rcodes) - sum(
            self.rcodes[code] for code in core.RCODE_NAMES
        )
        return result


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        # Set while the transport's send buffer is over its high-water mark: the
        # kernel is not keeping up, and buffering more replies would grow memory.
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's UDP transport is not a DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self.server
        stats = server.counters
        stats.queries_udp += 1
        if self.paused:
            stats.dropped_overload += 1
            return
        try:
            entry = server.udp_cache.entries.get(data[2:])
            if entry is not None and (not entry.deps or entry.valid(server.reader.index)):
                stats.cache_hits += 1
                stats.rcodes[entry.rcode] += 1
                if entry.trimmed:
                    stats.trimmed += 1
                self.transport.sendto(data[:2] + entry.packet(), addr)  # type: ignore[union-attr]
                return
            server.udp_miss(data, addr, self)
        except Exception:  # never let a packet take the listener down
            stats.lookup_errors += 1
            log.exception("dns: unexpected error answering a UDP query")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        log.debug("dns: UDP error: %s", exc)

    def send(self, packet: bytes, addr: tuple[str, int]) -> None:
        if self.paused:
            self.server.counters.dropped_overload += 1
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(packet, addr)


class _UpstreamUdp(asyncio.DatagramProtocol):
    def __init__(self, qid: int) -> None:
        self.qid = qid
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # Only a response to our id counts; anything else is ignored.
        ours = len(data) >= 12 and data[:2] == _U16.pack(self.qid) and data[2] & 0x80
        if ours and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


class DnsServer:
    def __init__(
        self,
        settings: core.DnsSettings,
        reader: CatalogReader,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.rng = rng or random.Random()
        self.counters = DnsStats()
        self.udp_cache = AnswerCache()
        self.tcp_cache = AnswerCache()
        self.addresses: list[tuple[str, int]] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._pending: dict[bytes, list[tuple[bytes, tuple[str, int]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._last_error_log = 0.0

    # ----- lifecycle -------------------------------------------------------------

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Serve UDP and TCP on host:port (port 0: any free port, the same for both)."""
        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):
            try:
                return await self._listen_once(host, port)
            except OSError:
                # With port 0 the UDP port the kernel picked may be taken for TCP.
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    async def _listen_once(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, port)
        )
        bound_port = int(transport.get_extra_info("sockname")[1])
        try:
            server = await asyncio.start_server(self._handle_tcp, host, bound_port)
        except OSError:
            transport.close()
            raise
        self._udp.append(transport)
        self._tcp.append(server)
        self.addresses.append((host, bound_port))
        return host, bound_port

    def reload(self, settings: core.DnsSettings) -> None:
        """New settings apply to the next query; cached answers were built with the old."""
        self.settings = settings
        self.udp_cache.clear()
        self.tcp_cache.clear()

    async def close(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        for writer in list(self._tcp_writers):
            writer.close()
        for server in self._tcp:
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._udp.clear()
        self._tcp.clear()

    def stats(self) -> dict[str, int]:
        """Counters for the metrics endpoint and tests."""
        result = self.counters.as_dict()
        result["cache_entries"] = len(self.udp_cache) + len(self.tcp_cache)
        return result

    # ----- UDP -------------------------------------------------------------------

    def udp_miss(self, data: bytes, addr: tuple[str, int], proto: _UdpProtocol) -> None:
        stats = self.counters
        try:
            query = parse_query(data)
        except MalformedQuery as exc:
            stats.dropped += 1
            log.debug("dns: dropped a malformed datagram from %s: %s", addr, exc)
            return
        key = data[2:]
        waiters = self._pending.get(key)
        if waiters is not None:
            if len(waiters) >= MAX_WAITERS:
                stats.dropped_overload += 1
            else:
                waiters.append((data[:2], addr))
            return
        if len(self._pending) >= MAX_PENDING:
            stats.dropped_overload += 1
            return
        stats.cache_misses += 1
        self._pending[key] = [(data[:2], addr)]
        self._spawn(self._udp_lookup(key, data, query, proto))

    async def _udp_lookup(self, key: bytes, data: bytes, query: Query, proto: _UdpProtocol) -> None:
        try:
            body = await self.answer(key, data, query, udp=True)
        finally:
            waiters = self._pending.pop(key, [])
        for qid, addr in waiters:
            self.counters.count_response(body)
            proto.send(qid + body, addr)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- TCP -------------------------------------------------------------------

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = self.counters
        if len(self._tcp_writers) >= MAX_TCP_CONNECTIONS:
            stats.tcp_rejected += 1
            writer.close()
            return
        stats.tcp_connections += 1
        self._tcp_writers.add(writer)
        try:
            while True:
                try:
                    prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT_S)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        stats.dropped += 1  # one byte of a length prefix, then EOF
                    return
                (length,) = _U16.unpack(prefix)
                try:
                    data = await asyncio.wait_for(reader.readexactly(length), TCP_FRAME_TIMEOUT_S)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    stats.dropped += 1  # the prefix promised more than arrived
                    return
                stats.queries_tcp += 1
                body = await self._tcp_answer(data)
                if body is None:
                    return  # a malformed frame: framing can no longer be trusted
                stats.count_response(body)
                writer.write(_U16.pack(len(body) + 2) + data[:2] + body)
                await writer.drain()
        except Exception:
            stats.lookup_errors += 1
            log.exception("dns: unexpected error on a TCP connection")
        finally:
            self._tcp_writers.discard(writer)
            writer.close()

    async def _tcp_answer(self, data: bytes) -> bytes | None:
        key = data[2:]
        entry = self.tcp_cache.get(key)
        if entry is not None and (not entry.deps or entry.valid(self.reader.index)):
            self.counters.cache_hits += 1
            return entry.packet()
        try:
            query = parse_query(data)
        except MalformedQuery as exc:
            self.counters.dropped += 1
            log.debug("dns: dropped a malformed TCP frame: %s", exc)
            return None
        self.counters.cache_misses += 1
        return await self.answer(key, data, query, udp=False)

    # ----- answering -------------------------------------------------------------

    async def answer(self, key: bytes, data: bytes, query: Query, udp: bool) -> bytes:
        """The response to `query` without its id; caches it when it can."""
        settings = self.settings
        ra = bool(settings.recursors)
        if query.opcode != 0:
            return simple_response(query, core.NOTIMP, ra)[2:]
        serial = int(time.time())
        lookup = core.classify(settings, query.lower_labels, query.qtype, serial)
        try:
            result = await self._lookup(settings, lookup, query.qtype, serial)
        except Exception as exc:
            self.counters.lookup_errors += 1
            self._log_lookup_error(exc)
            return simple_response(query, core.SERVFAIL, ra)[2:]
        if result is None:
            return await self.recurse(data, query, udp)
        answer, deps = result

        def render_order(order: Sequence[int] | None) -> tuple[bytes, bool]:
            rendered = render(
                query,
                answer,
                order,
                udp=udp,
                udp_answer_limit=settings.udp_answer_limit,
                enable_truncate=settings.enable_truncate,
                recursion_available=ra,
            )
            return rendered.packet[2:], rendered.trimmed

        entry = CacheEntry(
            tuple((k, v) for k, v in deps if v is not None),
            answer.rcode,
            len(answer.groups),
            answer.shuffle,
            render_order,
            self.rng,
        )
        try:
            body = entry.packet()
        except Exception as exc:  # a record dnslib cannot encode: a bug, not the client's
            self.counters.lookup_errors += 1
            self._log_lookup_error(exc)
            return simple_response(query, core.SERVFAIL, ra)[2:]
        if entry.trimmed:
            self.counters.trimmed += 1
        if all(v is not None for _, v in deps) and settings is self.settings:
            (self.udp_cache if udp else self.tcp_cache).put(key, entry)
        return body

    async def _lookup(
        self, settings: core.DnsSettings, lookup: core.Lookup, qtype: int, serial: int
    ) -> tuple[core.Answer, list[tuple[str, int | None]]] | None:
        """(answer, the index keys it depends on with their values), None to recurse."""
        reader = self.reader
        key = core.watch_key(lookup)
        deps: list[tuple[str, int | None]] = [] if key is None else [(key, reader.index(key))]
        if isinstance(lookup, core.Fixed):
            return lookup.answer, deps
        if isinstance(lookup, core.Recurse):
            return None
        # What the catalog shows depends on the token's rights too.
        deps.append((ACL_DEP, reader.index(ACL_DEP)))
        if isinstance(lookup, core.ServiceLookup):
            name, rows = await reader.service_nodes(
                lookup.service, lookup.tag, settings, lookup.connect
            )
            kind = "connect" if lookup.connect else "service"
            self._depend(deps, f"{kind}:{name}", not rows)
            return core.answer_service(settings, lookup, qtype, rows, serial), deps
        if isinstance(lookup, core.QueryLookup):
            executed = await reader.prepared_query(lookup.query, settings)
            # Every execution shuffles or sorts anew: never cached.
            deps.append(("prepared-query", None))
            return core.answer_query(settings, lookup, qtype, executed, serial), deps
        if isinstance(lookup, core.NodeLookup):
            name, node = await reader.node(lookup.node, settings)
            self._depend(deps, f"node:{name}", node is None)
            return core.answer_node(settings, lookup, qtype, node, serial), deps
        if isinstance(lookup, core.NameserverLookup):
            _, servers = await reader.service_nodes("consul", "", settings)
            return core.answer_nameservers(settings, lookup, servers, serial), deps
        nodes = await reader.nodes(settings)
        answer = core.answer_ptr(settings, lookup, nodes)
        return None if answer is None else (answer, deps)

    def _depend(self, deps: list[tuple[str, int | None]], key: str, missing: bool) -> None:
        if all(k != key for k, _ in deps):
            deps.append((key, self.reader.index(key)))
        if missing:
            # A name that is absent may appear under another spelling of its case.
            table = "nodes" if key.startswith("node:") else "services"
            deps.append((table, self.reader.index(table)))

    def _log_lookup_error(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _LOG_EVERY_S:
            self._last_error_log = now
            log.warning("dns: catalog lookup failed: %s", exc)

    # ----- recursion -------------------------------------------------------------

    async def recurse(self, data: bytes, query: Query, udp: bool) -> bytes:
        """Ask each recursor in turn; REFUSED without any, SERVFAIL when all fail."""
        settings = self.settings
        if not settings.recursors:
            return simple_response(query, core.REFUSED, False)[2:]
        self.counters.recursed += 1
        for host, port in settings.recursors:
            try:
                reply = await asyncio.wait_for(
                    self._exchange(data, query.id, host, port, udp), settings.recursor_timeout_s
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("dns: recursor %s:%d failed: %s", host, port, exc)
                continue
            if len(reply) < HEADER.size or not reply[2] & (FLAG_QR >> 8):
                continue
            if reply[3] & 0xF not in (core.NOERROR, core.NXDOMAIN):
                continue  # try the next recursor, as Consul does
            return reply[2:]
        self.counters.recursor_failures += 1
        return simple_response(query, core.SERVFAIL, True)[2:]

    async def _exchange(self, data: bytes, qid: int, host: str, port: int, udp: bool) -> bytes:
        loop = asyncio.get_running_loop()
        if udp:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _UpstreamUdp(qid), remote_addr=(host, port)
            )
            try:
                transport.sendto(data)
                return await proto.reply
            finally:
                transport.close()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(_U16.pack(len(data)) + data)
            await writer.drain()
            (length,) = _U16.unpack(await reader.readexactly(2))
            reply = await reader.readexactly(length)
            if reply[:2] != data[:2]:
                raise OSError("recursor answered another id")
            return reply
        finally:
            writer.close()
