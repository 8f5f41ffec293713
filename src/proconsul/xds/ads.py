"""The ADS protocol, both flavours, as pure state machines over `Resources`.

Job: `SotwStream` (StreamAggregatedResources) and `DeltaStream`
(DeltaAggregatedResources) track what one Envoy asked for and was sent, per
type, and answer each request or new set of resources with the responses to
send. The gRPC adapter (xds/server.py) feeds them and writes what they
return; nothing here does I/O.

Rules (Envoy's xDS protocol):
- Types: listeners and clusters are subscribed to as a whole (wildcard);
  endpoints, routes and secrets by name. An empty or unknown `type_url` is a
  `ProtocolError`.
- Every response has a fresh nonce (per stream, increasing). A request that
  carries the nonce of the type's latest response acknowledges it (ACK); with
  `error_detail` set it rejects it (NACK). A request carrying an older nonce
  is stale and its ACK part is ignored.
- A NACK leaves the client on the version it had; it is reported (`Step.
  nacks`, with Envoy's error detail) and the rejected content is not sent
  again: only a change of the resources (or of what the client asks for)
  produces a new response.
- State of the world: a response carries every resource of the type the
  client subscribes to; `version_info` is a hash of them, so unchanged
  resources send nothing.
- Delta: a response carries only resources whose version the client does not
  hold, plus `removed_resources` for ones it holds that are gone.
  `initial_resource_versions` of a reconnecting client count as held.
- Responses within one step go in xDS order: clusters, endpoints,
  listeners, routes, secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from proconsul.xds.common import TYPE_ORDER, WILDCARD_TYPES
from proconsul.xds.translate import Resources

WILDCARD = "*"


class ProtocolError(ValueError):
    """A request no Envoy sends; the stream ends with INVALID_ARGUMENT and this text."""


@dataclass(frozen=True)
class Nack:
    type_url: str
    nonce: str
    version_kept: str  # the version the client stays on ("" if none)
    code: int
    message: str


@dataclass
class Step:
    """What one input produced: responses to write, NACKs to report, ACK count."""

    responses: list[Any] = field(default_factory=list)
    nacks: list[Nack] = field(default_factory=list)
    acks: int = 0


def check_type(type_url: str) -> None:
    if not type_url:
        raise ProtocolError("type URL is required for ADS")
    if type_url not in TYPE_ORDER:
        raise ProtocolError(f'unknown type URL "{type_url}"')


class _Nonces:
    def __init__(self) -> None:
        self._next = 0

    def new(self) -> str:
        self._next += 1
        return f"{self._next:08x}"


class _Stream:
    """What both flavours share: the latest resources and the per-type push."""

    def __init__(self) -> None:
        self.types: dict[str, Any] = {}
        self.resources: Resources | None = None
        self._nonces = _Nonces()

    def on_resources(self, resources: Resources) -> Step:
        """New resources (a new snapshot): push what changed, type by type."""
        self.resources = resources
        step = Step()
        for type_url in TYPE_ORDER:
            if type_url in self.types:
                self._push(type_url, step)
        return step

    def _push(self, type_url: str, step: Step) -> None:
        raise NotImplementedError


# ------------------------------------------------------- state of the world


@dataclass
class _SotwType:
    names: set[str] | None  # None: wildcard
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    rejected_version: str = ""


class SotwStream(_Stream):
    types: dict[str, _SotwType]

    def on_request(self, request: Any) -> Step:
        type_url = request.type_url
        check_type(type_url)
        step = Step()
        state = self.types.get(type_url)
        if request.response_nonce and state is not None:
            if request.response_nonce != state.sent_nonce:
                return step  # stale: a newer response is on its way
            if request.HasField("error_detail"):
                state.rejected_version = state.sent_version
                step.nacks.append(_nack(request, request.version_info))
                return step
            state.acked_version = request.version_info
            step.acks += 1
            if state.names is not None:
                state.names = set(request.resource_names)
            self._send(type_url, step)
            return step
        names = set(request.resource_names)
        wildcard = type_url in WILDCARD_TYPES and (not names or WILDCARD in names)
        state = _SotwType(names=None if wildcard else names, acked_version=request.version_info)
        self.types[type_url] = state
        self._send(type_url, step, initial=True)
        return step

    def _push(self, type_url: str, step: Step) -> None:
        self._send(type_url, step, initial=not self.types[type_url].sent_nonce)

    def _send(self, type_url: str, step: Step, initial: bool = False) -> None:
        if self.resources is None:
            return
        state = self.types[type_url]
        available = self.resources.of(type_url)
        chosen = sorted(available if state.names is None else state.names & set(available))
        version = self.resources.type_version(type_url, chosen)
        if not initial and version in (state.sent_version, state.rejected_version):
            return
        nonce = self._nonces.new()
        step.responses.append(
            discovery_pb2.DiscoveryResponse(
                version_info=version,
                type_url=type_url,
                nonce=nonce,
                resources=[available[name].packed for name in chosen],
            )
        )
        state.sent_version, state.sent_nonce = version, nonce


def _nack(request: Any, version_kept: str) -> Nack:
    detail = request.error_detail
    return Nack(request.type_url, request.response_nonce, version_kept, detail.code, detail.message)


# ------------------------------------------------------------------ delta


@dataclass
class _DeltaType:
    wildcard: bool
    names: set[str] = field(default_factory=set)
    sent: dict[str, str] = field(default_factory=dict)  # what the client has or is being sent
    acked: dict[str, str] = field(default_factory=dict)  # what it confirmed
    pending: dict[str, dict[str, str | None]] = field(default_factory=dict)  # nonce -> changes
    rejected: dict[str, str] = field(default_factory=dict)


class DeltaStream(_Stream):
    types: dict[str, _DeltaType]

    def on_request(self, request: Any) -> Step:
        type_url = request.type_url
        check_type(type_url)
        step = Step()
        state = self.types.get(type_url)
        if state is None:
            subscribe = set(request.resource_names_subscribe)
            wildcard = type_url in WILDCARD_TYPES and (not subscribe or WILDCARD in subscribe)
            state = _DeltaType(wildcard=wildcard)
            state.sent = dict(request.initial_resource_versions)
            state.acked = dict(state.sent)
            self.types[type_url] = state
        if request.response_nonce:
            changes = state.pending.pop(request.response_nonce, None)
            if changes is not None and request.HasField("error_detail"):
                for name, version in changes.items():
                    _restore(state, name)
                    if version is not None:
                        state.rejected[name] = version
                step.nacks.append(_nack(request, ""))
            elif changes is not None:
                for name, version in changes.items():
                    if version is None:
                        state.acked.pop(name, None)
                    else:
                        state.acked[name] = version
                step.acks += 1
        for name in request.resource_names_subscribe:
            if name == WILDCARD:
                state.wildcard = True
            else:
                state.names.add(name)
        for name in request.resource_names_unsubscribe:
            if name == WILDCARD:
                state.wildcard = False
            else:
                state.names.discard(name)
                state.sent.pop(name, None)
                state.acked.pop(name, None)
        self._send(type_url, step)
        return step

    def _push(self, type_url: str, step: Step) -> None:
        self._send(type_url, step)

    def _send(self, type_url: str, step: Step) -> None:
        if self.resources is None:
            return
        state = self.types[type_url]
        available = self.resources.of(type_url)
        scope = set(available) if state.wildcard else state.names & set(available)
        changed = [
            available[name]
            for name in sorted(scope)
            if available[name].version not in (state.sent.get(name), state.rejected.get(name))
        ]
        removed = sorted(
            name
            for name in state.sent
            if name not in available and (state.wildcard or name in state.names)
        )
        if not changed and not removed:
            return
        nonce = self._nonces.new()
        step.responses.append(
            discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=self.resources.type_version(type_url),
                type_url=type_url,
                nonce=nonce,
                resources=[
                    discovery_pb2.Resource(name=r.name, version=r.version, resource=r.packed)
                    for r in changed
                ],
                removed_resources=removed,
            )
        )
        changes: dict[str, str | None] = {r.name: r.version for r in changed}
        changes.update(dict.fromkeys(removed))
        state.pending[nonce] = changes
        for name, version in changes.items():
            if version is None:
                state.sent.pop(name, None)
            else:
                state.sent[name] = version


def _restore(state: _DeltaType, name: str) -> None:
    """After a NACK: the client holds what it last confirmed."""
    if name in state.acked:
        state.sent[name] = state.acked[name]
    else:
        state.sent.pop(name, None)
