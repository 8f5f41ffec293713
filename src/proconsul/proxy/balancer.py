"""A cluster's endpoints: round robin, circuit breaking and outlier ejection.

Job: `Balancer` holds one cluster's healthy endpoints and picks the next
one (`pick(now)`), counts open connections and pending requests against the
circuit breaker's limits, and ejects an endpoint after too many consecutive
failures (`report(endpoint, ok, now)`).

Rules (Envoy's, for what our translator emits):
- Only endpoints EDS called healthy are here (config.py). The lowest
  priority with an endpoint not ejected is used (failover targets sit at
  priorities 1, 2, ...). No panic mode: the translator sets the panic
  threshold to 0, so with none left `pick` gives None (503, no healthy
  upstream).
- Round robin, each endpoint `weight` times per round.
- Outlier detection: `consecutive_5xx` failures in a row (a 5xx answer or a
  connect failure) eject an endpoint for `base_ejection_s` times the number
  of times it has been ejected, unless that would eject more than
  `max_ejection_percent` (at least one endpoint may always be ejected).
- Circuit breaker: `connections`, `pending` (connecting) and `requests` (HTTP
  in flight) against the cluster's limits (Envoy's default 1024 each).
- Pure apart from the caller's `now`: no clocks, sockets or randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

from proconsul.proxy.config import ClusterConfig, Endpoint, Outlier


@dataclass(slots=True)
class EndpointState:
    endpoint: Endpoint
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0


class Balancer:
    def __init__(self, cluster: ClusterConfig, endpoints: tuple[Endpoint, ...]) -> None:
        self.cluster = cluster
        self.outlier: Outlier | None = cluster.outlier
        self.states: dict[tuple[str, int], EndpointState] = {}
        self._rotation: list[EndpointState] = []
        self._next = 0
        self.connections = 0
        self.pending = 0
        self.requests = 0  # HTTP requests in flight
        self.set_endpoints(endpoints)

    def set_endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        """New endpoints (EDS): ejection state of the ones that stay is kept."""
        old = self.states
        self.states = {}
        for endpoint in endpoints:
            key = (endpoint.host, endpoint.port)
            state = old.get(key) or EndpointState(endpoint)
            state.endpoint = endpoint
            self.states[key] = state
        self._rotation = []
        for state in sorted(self.states.values(), key=lambda s: s.endpoint.priority):
            self._rotation.extend([state] * state.endpoint.weight)

    def update_cluster(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self.outlier = cluster.outlier

    def pick(self, now: float) -> Endpoint | None:
        rotation = self._rotation
        size = len(rotation)
        lowest = min(
            (s.endpoint.priority for s in self.states.values() if s.ejected_until <= now),
            default=None,
        )
        if lowest is None:
            return None
        for offset in range(size):
            index = (self._next + offset) % size
            state = rotation[index]
            if state.ejected_until <= now and state.endpoint.priority == lowest:
                self._next = index + 1
                return state.endpoint
        return None

    def report(self, endpoint: Endpoint, ok: bool, now: float) -> bool:
        """Record one result; True when it ejected the endpoint."""
        state = self.states.get((endpoint.host, endpoint.port))
        if state is None:
            return False
        if ok:
            state.failures = 0
            return False
        state.failures += 1
        outlier = self.outlier
        if outlier is None or state.failures < outlier.consecutive_5xx:
            return False
        ejected = sum(1 for s in self.states.values() if s.ejected_until > now)
        if ejected and ejected * 100 >= outlier.max_ejection_percent * len(self.states):
            return False
        state.ejections += 1
        state.failures = 0
        state.ejected_until = now + outlier.base_ejection_s * state.ejections
        return True

    def may_connect(self) -> bool:
        return self.connections < self.cluster.max_connections

    def may_request(self) -> bool:
        return self.requests < self.cluster.max_requests

    def may_queue(self) -> bool:
        return self.pending < self.cluster.max_pending

    def ejected_count(self, now: float) -> int:
        return sum(1 for s in self.states.values() if s.ejected_until > now)
