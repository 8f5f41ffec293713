"""The agent's LAN gossip pool: start it from config and give the agent one handle.

Job: build the gossip parameters (`gossip_lan`), tags, keyring (`encrypt`,
`data_dir/serf/local.keyring`) and encryption policy from `RuntimeConfig`;
run the transport on `serf_lan:ports.serf_lan`; join (`start_join`,
`retry_join` with `retry_interval`/`retry_max`, `proconsul join`); and answer
for the pool: members, force-leave, pool-wide keyring operations, user events,
and stats. Member changes are passed on (`on_member_change`: servers
reconcile them into the catalog).

Rules:
- `start_join` failing is fatal at start, as in Consul; `retry_join` retries in
  the background and, when `retry_max` attempts are spent, stops the agent
  (through `on_fatal`).
- It takes values and callables (`PoolIdentity`), never the agent.
- Keys never reach the log; keyring changes are persisted (0600, atomic) by
  every member that applies them.
- Member `Status` numbers are serf's: 1 alive, 2 leaving, 3 left, 4 failed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from proconsul.agent import user_events
from proconsul.config.schema import RuntimeConfig
from proconsul.gossip import (
    EncryptionPolicy,
    GossipCore,
    GossipParams,
    KeyringError,
    Member,
    MemberEvent,
    State,
    UserEventRecord,
    decode_key,
    lan,
    local,
)
from proconsul.gossip import control as ctl
from proconsul.gossip.keyring_file import KeyringStore, load_lan_keyring
from proconsul.gossip.lifeguard import AWARENESS_TAG, awareness_publish_due
from proconsul.gossip.messages import Address, MessageError
from proconsul.gossip.transport import GossipTransport, StreamError
from proconsul.structs.coordinate import Coordinate
from proconsul.structs.hostport import split_host_port

log = logging.getLogger("proconsul.agent")

_DEFAULT_RECONNECT_TIMEOUT = 72 * 3600.0
_TUNABLE = (
    "gossip_nodes",
    "gossip_interval",
    "probe_interval",
    "probe_timeout",
    "retransmit_mult",
    "suspicion_mult",
)
_STATUS = {State.ALIVE: 1, State.SUSPECT: 1, State.LEFT: 3, State.DEAD: 4}
_EVENT_LOG = {
    "member-join": "EventMemberJoin",
    "member-leave": "EventMemberLeave",
    "member-failed": "EventMemberFailed",
    "member-update": "EventMemberUpdate",
    "member-reap": "EventMemberReap",
}
_MAX_ADDRESSES_PER_NAME = 16


class GossipError(RuntimeError):
    """A gossip operation that failed; the message is user-facing."""


def gossip_params(config: RuntimeConfig) -> GossipParams:
    """The pool's parameters: the profile, then `gossip_lan` keys, then `reconnect_timeout`."""
    block = config.gossip_lan
    base = local() if block.profile == "local" else lan()
    changes: dict[str, Any] = {}
    for key in _TUNABLE:
        value = getattr(block, key)
        if value is not None:
            changes[key] = float(value) if key.endswith(("interval", "timeout")) else value
    if float(config.reconnect_timeout) != _DEFAULT_RECONNECT_TIMEOUT:
        changes["reconnect_timeout"] = float(config.reconnect_timeout)
    try:
        return base.replace(**changes)
    except ValueError as exc:
        raise ValueError(f"gossip_lan: {exc}") from None


def split_join_address(text: str, default_port: int) -> tuple[str, int]:
    """`ip`, `ip:port`, `[v6]:port`, `v6`, `name` or `name:port` -> (host, port)."""
    text = text.strip()
    if text.startswith("provider="):
        raise GossipError(f"cloud auto-join is not supported: {text.split()[0]}")
    try:
        host, port = split_host_port(text, default_port)
    except ValueError:
        raise GossipError(f"invalid port in join address {text!r}") from None
    if not host:
        raise GossipError(f"invalid join address {text!r}")
    if port == 0:
        raise GossipError(f"invalid port in join address {text!r}")
    return host, port


async def resolve_join_address(text: str, default_port: int) -> list[Address]:
    """The addresses a join address names (a DNS name may give several; at most 16)."""
    host, port = split_join_address(text, default_port)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise GossipError(f"lookup {host}: {exc.strerror or exc}") from None
    found: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        addr = (str(sockaddr[0]), int(sockaddr[1]))
        if addr not in found:
            found.append(addr)
    return found[:_MAX_ADDRESSES_PER_NAME]


def member_json(member: Member, status: int) -> dict[str, Any]:
    """One member as /v1/agent/members shows it (Consul's api.AgentMember)."""
    return {
        "Name": member.name,
        "Addr": member.addr[0],
        "Port": member.addr[1],
        "Tags": dict(member.tags),
        "Status": status,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


# How often our awareness score is compared with the one in our tags, and the
# least time between two tag updates that publish it.
AWARENESS_CHECK_S = 0.5
AWARENESS_PUBLISH_MIN_INTERVAL_S = 2.0


@dataclass(frozen=True)
class PoolIdentity:
    """What the pool needs of its agent: who it is, and whom to tell what."""

    node_name: str
    advertise_addr: str
    datacenter: str
    tags: dict[str, str]
    # (name, tags) of the local services: user events may filter on them.
    local_services: Callable[[], Iterable[tuple[str, list[str]]]]
    on_member_change: Callable[[str], None]
    on_fatal: Callable[[], None]


class GossipHandle:
    """The running LAN pool of one agent."""

    def __init__(self, config: RuntimeConfig, identity: PoolIdentity) -> None:
        self.identity = identity
        self.config = config
        self.params = gossip_params(config)
        self.events = user_events.EventBuffer()
        self.keyring_store = KeyringStore(None)
        self.policy = EncryptionPolicy(
            None, config.encrypt_verify_incoming, config.encrypt_verify_outgoing
        )
        self.bind_host = config.serf_lan or config.bind_addr
        self.port = config.ports.serf_lan
        self.core: GossipCore | None = None
        self.transport: GossipTransport | None = None
        self.left = False
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        config = self.config
        loaded = load_lan_keyring(
            config.encrypt,
            config.data_dir,
            in_memory=config.dev_mode or config.disable_keyring_file,
            warn=lambda text: log.warning("agent: %s", text),
        )
        self.keyring_store = loaded.store
        self.policy.keyring = loaded.keyring
        if loaded.keyring is not None and not (
            config.encrypt_verify_incoming and config.encrypt_verify_outgoing
        ):
            log.warning(
                "agent: gossip encryption is in rollout mode: encrypt_verify_incoming=%s "
                "encrypt_verify_outgoing=%s",
                config.encrypt_verify_incoming,
                config.encrypt_verify_outgoing,
            )
        identity = self.identity
        advertise: Address = (identity.advertise_addr, self.port)
        loop = asyncio.get_running_loop()
        # Every member publishes its Lifeguard score (DESIGN.md, "The web UI").
        tags = {**identity.tags, AWARENESS_TAG: "0"}
        self.core = GossipCore(
            identity.node_name, advertise, tags, self.params, random.Random(), loop.time()
        )
        self.transport = GossipTransport(
            self.core,
            self.policy,
            self.bind_host,
            self.port,
            on_member_event=self._on_member_event,
            on_user_event=self._on_user_event,
            control_handler=self._on_control,
        )
        try:
            await self.transport.start()
        except OSError as exc:
            raise OSError(
                f"Failed to start LAN Serf on {self.bind_host}:{self.port}: {exc.strerror or exc}"
            ) from None
        log.info(
            "agent: started LAN gossip on %s:%d (udp and tcp): encrypted=%s",
            self.bind_host,
            self.port,
            self.policy.keyring is not None,
        )
        if config.start_join:
            joined, errors = await self.join(list(config.start_join))
            if joined == 0:
                raise ValueError("Failed to join: " + "; ".join(errors))
        if config.retry_join:
            self._spawn(self._retry_join(list(config.retry_join)), "retry-join")
        self._spawn(self._publish_awareness(), "publish-awareness")

    async def _publish_awareness(self) -> None:
        """Keep our `awareness` tag near our Lifeguard score, at most one tag
        update per `AWARENESS_PUBLISH_MIN_INTERVAL_S` (`awareness_publish_due`)."""
        loop = asyncio.get_running_loop()
        published, published_at = 0, float("-inf")
        while True:
            await asyncio.sleep(AWARENESS_CHECK_S)
            core, transport = self.core, self.transport
            if core is None or transport is None or self.left:
                continue
            score, now = core.awareness, loop.time()
            if not awareness_publish_due(
                score, published, published_at, now, AWARENESS_PUBLISH_MIN_INTERVAL_S
            ):
                continue
            own = core.member(core.name)
            if own is None:
                continue
            tags = {**own.tags, AWARENESS_TAG: str(score)}
            transport.apply(functools.partial(core.update_meta, tags))
            published, published_at = score, now

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def leave(self) -> None:
        """Gracefully leave the pool: the others see this member as left, not failed."""
        if self.transport is None or self.left:
            return
        self.left = True
        log.info("agent: (LAN) leaving the gossip pool")
        await self.transport.leave(self.params.leave_propagate_delay)

    async def stop(self, leave: bool = False) -> None:
        if leave:
            await self.leave()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.transport is not None:
            await self.transport.close()

    # ------------------------------------------------------------ joining

    async def resolve(self, text: str) -> list[Address]:
        return await resolve_join_address(text, self.port)

    async def join(self, texts: list[str]) -> tuple[int, list[str]]:
        """Join through each address; returns (members contacted, errors)."""
        assert self.transport is not None
        log.info("agent: (LAN) joining: lan_addresses=%s", texts)
        errors: list[str] = []
        targets: list[Address] = []
        for text in texts:
            try:
                targets += [a for a in await self.resolve(text) if a not in targets]
            except GossipError as exc:
                errors.append(f"Failed to resolve {text}: {exc}")
        results = await self.transport.join(targets)
        joined = 0
        for addr, error in results.items():
            if error is None:
                joined += 1
            else:
                errors.append(f"Failed to join {addr[0]}:{addr[1]}: {error}")
        if joined:
            log.info("agent: (LAN) joined: number_of_nodes=%d", joined)
        for error in errors:
            log.warning("agent: (LAN) couldn't join: %s", error)
        return joined, errors

    async def join_lan(self, address: str) -> int:
        """`PUT /v1/agent/join/:address`: raises GossipError when nothing was joined."""
        joined, errors = await self.join([address])
        if joined == 0:
            raise GossipError("; ".join(errors) or f"Failed to join {address}")
        return joined

    async def _retry_join(self, texts: list[str]) -> None:
        interval = max(float(self.config.retry_interval), 0.1)
        retry_max = self.config.retry_max
        attempt = 0
        while True:
            attempt += 1
            log.info("agent: Joining cluster...: cluster=LAN")
            joined, errors = await self.join(texts)
            if joined:
                log.info(
                    "agent: Join cluster completed. Synced with initial agents: "
                    "cluster=LAN num_agents=%d",
                    joined,
                )
                return
            if retry_max and attempt >= retry_max:
                log.error("agent: max join retry exhausted, exiting: cluster=LAN")
                self.identity.on_fatal()
                return
            log.warning(
                "agent: Join cluster failed, will retry: cluster=LAN retry_interval=%gs error=%s",
                interval,
                "; ".join(errors) or "no address joined",
            )
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ members

    def _status(self, member: Member) -> int:
        core = self.core
        if core is not None and member.name == core.name and core.leaving:
            return 3 if self.left and core.leave_propagated() else 2
        return _STATUS.get(member.state, 0)

    def members(self) -> list[dict[str, Any]]:
        assert self.core is not None
        rows = sorted(self.core.members(), key=lambda m: m.name)
        return [member_json(m, self._status(m)) for m in rows]

    def coordinate(self) -> Coordinate | None:
        """This agent's network coordinate (None before gossip runs)."""
        return None if self.core is None else self.core.coordinate()

    def member_count(self) -> int:
        return 0 if self.core is None else len(self.core.members())

    def local_member(self) -> dict[str, Any]:
        assert self.core is not None
        own = self.core.member(self.core.name)
        assert own is not None
        return member_json(own, self._status(own))

    def force_leave(self, node: str, prune: bool = False) -> None:
        """Consul's force-leave: a failed member becomes left (others are left alone)."""
        assert self.transport is not None and self.core is not None
        log.info("agent: Force leaving node: node=%s", node)
        if self.core.member(node) is None:
            raise LookupError(f"agent: No node found with name '{node}'")
        core = self.core
        self.transport.apply(lambda now: core.force_leave(node, now))

    def _on_member_event(self, event: MemberEvent) -> None:
        member = event.member
        log.info(
            "agent: serf: %s: %s %s",
            _EVENT_LOG.get(str(event.kind), str(event.kind)),
            member.name,
            member.addr[0],
        )
        if member.name != self.identity.node_name:
            self.identity.on_member_change(member.name)

    # ------------------------------------------------------------ keyring

    async def keyring_operation(self, op: str, key_text: str) -> tuple[dict[str, Any], str | None]:
        """Run a keyring operation on every live member; (response, error text or None)."""
        assert self.core is not None and self.transport is not None
        if op not in ctl.KEYRING_OPS:
            raise ValueError(f"unknown keyring operation {op!r}")
        key = b""
        if op != "list":
            try:
                key = decode_key(key_text)
            except KeyringError as exc:
                raise ValueError(str(exc)) from None
        request = ctl.encode_control(ctl.KeyringRequest(op, key))
        own = self.core.name
        peers = [
            m
            for m in self.core.members()
            if m.name != own and m.state in (State.ALIVE, State.SUSPECT)
        ]

        async def ask(member: Member) -> ctl.KeyringReply | str:
            assert self.transport is not None
            try:
                raw = await self.transport.request_control(member.addr, request)
                reply = ctl.decode_control(raw)
            except (StreamError, MessageError) as exc:
                return f"no reply: {exc}"
            if not isinstance(reply, ctl.KeyringReply):
                return "no reply: unexpected answer"
            return reply

        replies: dict[str, ctl.KeyringReply | str] = {own: self._apply_keyring(op, key)}
        answers = await asyncio.gather(*(ask(m) for m in peers))
        for member, answer in zip(peers, answers, strict=True):
            replies[member.name] = answer
        summary = ctl.summarize(replies, len(peers) + 1)
        response = {
            "WAN": False,
            "Datacenter": self.identity.datacenter,
            "Segment": "",
            "Messages": summary.messages,
            "Keys": summary.keys,
            "PrimaryKeys": summary.primary_keys,
            "NumNodes": summary.num_nodes,
        }
        error = summary.error()
        if error is None:
            return response, None
        lines = [f"{self.identity.datacenter} (LAN) error: {error}"]
        lines += [f"{node}: {text}" for node, text in sorted(summary.messages.items())]
        count = len(lines)
        head = "1 error occurred:" if count == 1 else f"{count} errors occurred:"
        return response, head + "".join(f"\n\t* {line}" for line in lines) + "\n\n"

    def _apply_keyring(self, op: str, key: bytes) -> ctl.KeyringReply:
        if op != "list":
            log.info("agent: serf: Received %s-key query", op)
        reply = ctl.apply_keyring_op(self.policy.keyring, op, key)
        if reply.ok and op != "list" and self.policy.keyring is not None:
            try:
                self.keyring_store.save(self.policy.keyring)
            except OSError as exc:
                log.error("agent: serf: Failed to write keyring file: %s", exc.strerror)
                return msgspec.structs.replace(
                    reply, ok=False, message=f"Failed to write keyring file: {exc.strerror}"
                )
        elif not reply.ok:
            log.error("agent: serf: keyring %s failed: %s", op, reply.message)
        return reply

    async def _on_control(self, plain: bytes, peer: Address) -> bytes:
        try:
            request = ctl.decode_control(plain)
        except MessageError:
            return ctl.encode_control(ctl.KeyringReply(False, "malformed request", [], b""))
        if not isinstance(request, ctl.KeyringRequest):
            return ctl.encode_control(ctl.KeyringReply(False, "unexpected request", [], b""))
        return ctl.encode_control(self._apply_keyring(request.op, request.key))

    # ------------------------------------------------------------ user events

    def fire_user_event(
        self, name: str, payload: bytes, node_filter: str, service_filter: str, tag_filter: str
    ) -> dict[str, Any]:
        """Send a user event to the pool; the reply is Consul's (LTime 0).

        Raises ValueError (EventError) with Consul's wording for a bad event.
        """
        assert self.transport is not None and self.core is not None
        event = user_events.new_event(name, payload, node_filter, service_filter, tag_filter)
        data = user_events.encode(event)
        core = self.core
        try:
            self.transport.apply(lambda now: core.fire_event(event.name, data, now))
        except ValueError as exc:
            raise user_events.EventError(str(exc)) from None
        return event.to_json()

    def list_user_events(self, name: str = "") -> tuple[list[dict[str, Any]], int]:
        """The buffered events (oldest first, optionally one name) and their index."""
        found = self.events.events(name)
        return [e.to_json() for e in found], self.events.index_of(found)

    async def wait_user_events(self, timeout_s: float) -> bool:
        return await self.events.wait(timeout_s)

    def _on_user_event(self, record: UserEventRecord) -> None:
        event = user_events.decode(record.payload, record.ltime)
        if event is None or event.name != record.name:
            log.warning("agent: Failed to decode event: name=%s", record.name[:64])
            return
        if event.version > user_events.USER_EVENT_VERSION:
            log.warning("agent: Event version %d may have unsupported features", event.version)
        if not user_events.should_process(
            event, self.identity.node_name, self.identity.local_services()
        ):
            return
        if event.name == user_events.REMOTE_EXEC_NAME:
            log.info("agent: ignoring remote exec event (%s), disabled.", event.id)
            return
        log.debug("agent: new event: %s (%s)", event.name[:64], event.id)
        self.events.add(event)

    # ------------------------------------------------------------ stats

    def stats(self) -> dict[str, float]:
        return self.transport.stats() if self.transport is not None else {}

    def metrics(self) -> dict[str, float]:
        """Gauges for /v1/agent/metrics, Consul's names where Consul has one."""
        s = self.stats()
        out = {f"consul.gossip.{name}": float(value) for name, value in s.items()}
        aliases = {
            "consul.memberlist.health.score": "awareness",
            "consul.memberlist.udp.sent": "udp_out_bytes",
            "consul.memberlist.udp.received": "udp_in_bytes",
            "consul.memberlist.tcp.sent": "tcp_out_bytes",
            "consul.memberlist.tcp.accept": "tcp_in_streams",
            "consul.memberlist.tcp.connect": "tcp_out_streams",
            "consul.serf.members.alive": "members_alive",
            "consul.serf.members.suspect": "members_suspect",
            "consul.serf.members.failed": "members_failed",
            "consul.serf.members.left": "members_left",
        }
        for name, key in aliases.items():
            out[name] = float(s.get(key, 0))
        out["consul.memberlist.probe_rtt_ms"] = float(s.get("probe_rtt_us", 0)) / 1000.0
        out["consul.serf.events"] = float(self.events.received)
        return out

    def serf_stats(self) -> dict[str, str]:
        """`Stats.serf_lan` of /v1/agent/self (strings, as Consul reports them)."""
        s = self.stats()
        members = sum(int(s.get(k, 0)) for k in ("members_alive", "members_suspect"))
        return {
            "members": str(
                members + int(s.get("members_failed", 0)) + int(s.get("members_left", 0))
            ),
            "failed": str(int(s.get("members_failed", 0))),
            "left": str(int(s.get("members_left", 0))),
            "health_score": str(int(s.get("awareness", 0))),
            "event_time": str(int(s.get("event_ltime", 0))),
            "member_time": str(int(s.get("incarnation", 0))),
            "intent_queue": "0",
            "event_queue": "0",
            "query_queue": "0",
            "query_time": "1",
            "encrypted": "true" if self.policy.keyring is not None else "false",
        }


async def start_gossip(config: RuntimeConfig, identity: PoolIdentity) -> GossipHandle:
    handle = GossipHandle(config, identity)
    try:
        await handle.start()
    except BaseException:
        await handle.stop()
        raise
    return handle
