"""Why can or can't `source` reach `destination` through the mesh: checks in order.

Job: `lab explain web api` (inside the lab) and `proconsul troubleshoot web api
-http-addr ...` (any cluster) ask the agents, in this order: the catalog (the
destination registered, healthy instances, a sidecar), the source sidecar's
upstream, the certificates (the destination's leaf chains to the active
root and is in date), the intentions (the match and its precedence, or the
default), the tokens (each sidecar's token exists and has service:write),
the proxies (the public listener accepts; the admin's /ready is LIVE; the
xDS versions it applied, from /stats, equal what its agent last sent, from
/v1/agent/connect/proxy/<id>/xds; its RBAC denies, upstream connect
failures and 5xx counters). Each prints ✓/✗ with its evidence and, on ✗,
the fix. Outside the lab the admin addresses come from -source-admin-addr /
-destination-admin-addr, else Envoy's default 127.0.0.1:19000 (said so).

Rules: read-only; one `Probe` (an ApiClient plus optional sidecar tokens)
for both callers; a failed read is itself a ✗ with the error as evidence.
`checks` returns values; printing and exit codes are the callers'.
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from proconsul.cli.api_client import (
    ApiClient,
    ApiError,
    ClientConfig,
    CliError,
    add_api_flags,
    client_from,
    parse_args,
)
from proconsul.config.flags import FlagSet
from proconsul.xds.common import VERSION_STATS


@dataclass(frozen=True)
class Check:
    ok: bool
    area: str
    evidence: str
    fix: str = ""
    skipped: bool = False


@dataclass
class Probe:
    """How to ask: a client with a read-everything token, and each sidecar's token if known."""

    client: ApiClient
    tokens: dict[str, str] = field(default_factory=dict)  # service -> its sidecar's token
    # Extra checks a caller adds first (the lab: leader, agent certificates).
    extra: list[Callable[[], Check]] = field(default_factory=list)
    admin: dict[str, str] = field(default_factory=dict)  # service -> its sidecar's admin host:port
    agents: dict[str, ApiClient] = field(default_factory=dict)  # service -> its sidecar's agent


def _with_token(client: ApiClient, token: str) -> ApiClient:
    config = client.config
    return ApiClient(
        ClientConfig(
            endpoint=config.endpoint,
            token=token,
            datacenter=config.datacenter,
            stale=config.stale,
            ca_file=config.ca_file,
            ca_path=config.ca_path,
            client_cert=config.client_cert,
            client_key=config.client_key,
            tls_server_name=config.tls_server_name,
            timeout_s=config.timeout_s,
        )
    )


def _instances(probe: Probe, source: str, destination: str) -> Iterator[Check]:
    for service in (destination, source):
        yield from _health(probe, service)


def _health(probe: Probe, service: str) -> Iterator[Check]:
    rows = probe.client.get_json(f"/v1/health/service/{service}")
    if not rows:
        yield Check(
            False,
            "catalog",
            f"{service} is not registered",
            f"register {service} (a service file and `proconsul reload`)",
        )
        return
    healthy = [r for r in rows if all(c["Status"] == "passing" for c in r.get("Checks", []))]
    if healthy:
        nodes = ", ".join(r["Node"]["Node"] for r in healthy)
        yield Check(True, "catalog", f"{service} has {len(healthy)} healthy instance(s): {nodes}")
        return
    bad = [
        f"{r['Node']['Node']}: {c['Name']} {c['Status']}"
        for r in rows
        for c in r.get("Checks", [])
        if c["Status"] != "passing"
    ]
    yield Check(
        False,
        "catalog",
        f"no healthy {service} instance ({'; '.join(bad)})",
        f"make {service} and its node healthy again (`proconsul lab heal` if it was broken "
        "on purpose)",
    )


def _sidecars(probe: Probe, source: str, destination: str) -> Iterator[Check]:
    for service in (destination, source):
        proxies = probe.client.get_json(f"/v1/health/connect/{service}")
        if proxies:
            yield Check(True, "catalog", f"{service} has a sidecar: {proxies[0]['Service']['ID']}")
        else:
            yield Check(
                False,
                "catalog",
                f"{service} has no sidecar registered",
                f"add connect {{ sidecar_service {{}} }} to {service}'s service file",
            )


def _upstream(probe: Probe, source: str, destination: str) -> Check:
    proxies = probe.client.get_json(f"/v1/health/connect/{source}")
    for row in proxies or []:
        for upstream in (row["Service"].get("Proxy") or {}).get("Upstreams") or []:
            if upstream.get("DestinationName") == destination:
                bind = upstream.get("LocalBindAddress") or "127.0.0.1"
                port = upstream.get("LocalBindPort")
                return Check(
                    True, "upstream", f"{source}'s sidecar binds {destination} on {bind}:{port}"
                )
    return Check(
        False,
        "upstream",
        f"{source}'s sidecar has no upstream for {destination}",
        f'add upstreams = [{{ destination_name = "{destination}", local_bind_port = ... }}] '
        f"to {source}'s sidecar_service.proxy",
    )


def _certificates(probe: Probe, destination: str) -> Check:
    roots = probe.client.get_json("/v1/connect/ca/roots")
    active = next((r for r in roots.get("Roots", []) if r.get("Active")), None)
    if active is None:
        return Check(
            False,
            "certificates",
            "the Connect CA has no active root",
            "check the servers' logs for the ca-root duty",
        )
    leaf = probe.client.get_json(f"/v1/agent/connect/ca/leaf/{destination}")
    cert = x509.load_pem_x509_certificate(leaf["CertPEM"].encode())
    root = x509.load_pem_x509_certificate(active["RootCert"].encode())
    now = dt.datetime.now(dt.UTC)
    try:
        cert.verify_directly_issued_by(root)
        chained = True
    except (InvalidSignature, ValueError, TypeError):  # signed by an older root's chain?
        chained = any(
            x509.load_pem_x509_certificate(p.encode()).issuer == root.subject
            for p in active.get("IntermediateCerts") or []
        )
    if not chained:
        return Check(
            False,
            "certificates",
            f"{destination}'s leaf does not chain to the active root",
            "the agent renews leaves after a root rotation; wait or restart the sidecar",
        )
    if cert.not_valid_after_utc <= now:
        return Check(
            False,
            "certificates",
            f"{destination}'s leaf expired {cert.not_valid_after_utc:%F %T}",
            "the agent's leaf cache renews it; check the agent's log",
        )
    return Check(
        True,
        "certificates",
        f"{destination}'s leaf chains to root {active['ID'][:17]}… and is valid until "
        f"{cert.not_valid_after_utc:%F %T} UTC",
    )


def _intentions(probe: Probe, source: str, destination: str) -> Check:
    answer = probe.client.get_json(
        "/v1/connect/intentions/check", [("source", source), ("destination", destination)]
    )
    matches = probe.client.get_json(
        "/v1/connect/intentions/match", [("by", "destination"), ("name", destination)]
    )
    found = [
        m for m in (matches or {}).get(destination, []) if m.get("SourceName") in (source, "*")
    ]
    if found:
        top = found[0]
        why = (
            f"intention {top['SourceName']} => {top['DestinationName']} ({top.get('Action')}, "
            f"precedence {top.get('Precedence')})"
        )
    else:
        why = "no intention matches: the default applies (acl.default_policy)"
    if answer.get("Allowed"):
        return Check(True, "intentions", f"allowed by {why}")
    return Check(
        False,
        "intentions",
        f"denied by {why}",
        f"proconsul intention create -allow -replace {source} {destination}",
    )


def _tokens(probe: Probe, services: tuple[str, str]) -> Iterator[Check]:
    for service in services:
        token = probe.tokens.get(service)
        if not token:
            yield Check(True, "tokens", f"{service}'s sidecar token: not known here, not checked")
            continue
        client = _with_token(probe.client, token)
        try:
            client.get_json("/v1/acl/token/self")
        except ApiError as exc:
            yield Check(
                False,
                "tokens",
                f"{service}'s sidecar token is refused: {exc}",
                f"create a new token with -service-identity {service} and give it to "
                f"{service}'s service file and sidecar",
            )
            continue
        try:
            client.get_json(f"/v1/agent/connect/ca/leaf/{service}")
        except ApiError as exc:
            yield Check(
                False,
                "tokens",
                f"{service}'s sidecar token lacks service:write: {exc}",
                f'give it `service "{service}" {{ policy = "write" }}` (a service identity)',
            )
            continue
        yield Check(True, "tokens", f"{service}'s sidecar token exists and has service:write")


DEFAULT_ADMIN = "127.0.0.1:19000"  # Envoy's (and the built-in proxy's) admin default
COUNTERS = {  # what a /stats name ends with -> what it says and where to look
    "rbac.denied": "an intention refused callers (see intentions above)",
    "upstream_cx_connect_fail": "the upstream did not accept connections (its sidecar "
    "or service down, a certificate refused)",
    "_rq_5xx": "requests ended in 5xx (the service failing, or no healthy upstream)",
}


def _admin_get(address: str, path: str) -> tuple[int, str]:
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2.0)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode("utf-8", "replace")
    finally:
        conn.close()


def parse_stats(text: str) -> tuple[dict[str, int], dict[str, str]]:
    """(counters, text readouts) of an admin /stats page."""
    counters: dict[str, int] = {}
    texts: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.startswith('"'):
            texts[name] = value.strip('"')
        elif value.isdigit():
            counters[name] = int(value)
    return counters, texts


def _agent_view(probe: Probe, service: str, proxy_id: str) -> dict[str, Any] | None:
    """What the agent running the proxy last sent it; None if that agent is not asked."""
    client = probe.agents.get(service, probe.client)
    try:
        found: dict[str, Any] = client.get_json(f"/v1/agent/connect/proxy/{proxy_id}/xds")
    except ApiError as exc:
        if exc.status == 404:
            return None  # the proxy runs on another agent than the one asked
        raise
    return found


def _proxy(probe: Probe, service: str, row: dict[str, Any]) -> Iterator[Check]:
    proxy_id = row["Service"]["ID"]
    address = row["Service"].get("Address") or row["Node"]["Address"]
    port = int(row["Service"]["Port"])
    try:
        with socket.create_connection((address, port), timeout=1.0):
            pass
    except OSError as exc:
        yield Check(
            False,
            "proxies",
            f"{proxy_id} does not listen on {address}:{port} ({exc.strerror or exc})",
            f"start it: proconsul connect envoy -sidecar-for {service}; if it exits at once, "
            "its output says why (a refused token — see tokens above — is the usual cause)",
        )
        return
    admin = probe.admin.get(service, "")
    where = admin or (
        f"{DEFAULT_ADMIN} (Envoy's default; -source-admin-addr / "
        "-destination-admin-addr name another)"
    )
    admin = admin or DEFAULT_ADMIN
    try:
        ready_status, ready = _admin_get(admin, "/ready")
        _, stats_text = _admin_get(admin, "/stats")
    except OSError as exc:
        yield Check(
            False,
            "proxies",
            f"{proxy_id} listens on {address}:{port}, but its admin at {where} does not answer "
            f"({exc.strerror or exc})",
            f"point the check at the sidecar's -admin-bind address, or restart {proxy_id}",
        )
        return
    counters, texts = parse_stats(stats_text)
    view = _agent_view(probe, service, proxy_id)
    refused = (view or {}).get("Error", "")
    token_fix = (
        f"give {service}'s sidecar a token with service:write on {service} "
        f"(-service-identity {service}) and restart it"
    )
    if ready_status != 200:
        because = f"; the agent ended its xDS stream: {refused}" if refused else ""
        yield Check(
            False,
            "proxies",
            f"{proxy_id} (admin {where}) is not ready: {ready.strip()}, no configuration "
            f"applied{because}",
            token_fix if refused else "check the sidecar's log and its -grpc-addr",
        )
        return
    if view is None:
        freshness = "versions not compared (ask the agent it runs on with -http-addr)"
    else:
        stale = [
            f"{VERSION_STATS[t].split('.')[-2]} {texts.get(VERSION_STATS[t], '(none)')[:8]} "
            f"vs the agent's {v[:8]}"
            for t, v in sorted((view.get("Versions") or {}).items())
            if t in VERSION_STATS and texts.get(VERSION_STATS[t]) != v
        ]
        if refused and not view.get("Streams"):
            yield Check(
                False,
                "proxies",
                f"{proxy_id} (admin {where}) serves an old configuration: the agent ended its "
                f"xDS stream: {refused}",
                token_fix,
            )
            return
        if stale:
            yield Check(
                False,
                "proxies",
                f"{proxy_id} (admin {where}) is behind the agent: {'; '.join(stale)}",
                f"check {proxy_id}'s log for rejected (NACK) updates; restart it",
            )
            return
        freshness = f"up to date with the agent ({len(view.get('Versions') or {})} xDS types)"
    yield Check(True, "proxies", f"{proxy_id} listens, admin {where} is LIVE, {freshness}")
    seen = {
        suffix: sum(v for name, v in counters.items() if name.endswith(suffix))
        for suffix in COUNTERS
    }
    shown = ", ".join(f"{suffix.lstrip('_')} {count}" for suffix, count in seen.items())
    bad = [suffix for suffix, count in seen.items() if count]
    if not bad:
        yield Check(True, "proxies", f"{proxy_id} counters: {shown}")
        return
    yield Check(
        False,
        "proxies",
        f"{proxy_id} counters: {shown}",
        "; ".join(f"{suffix.lstrip('_')}: {COUNTERS[suffix]}" for suffix in bad)
        + " (totals since the sidecar started: if they stop growing, the cause is gone)",
    )


def _proxies(probe: Probe, services: tuple[str, str]) -> Iterator[Check]:
    for service in services:
        for row in probe.client.get_json(f"/v1/health/connect/{service}") or []:
            yield from _proxy(probe, service, row)


# Checks that sign or resolve on the leader; without one they would only wait.
NEEDS_LEADER = ("certificates", "tokens")


def checks(probe: Probe, source: str, destination: str) -> list[Check]:
    """Every check, in order; a read that fails is a ✗ for its area."""
    out: list[Check] = []
    for extra in probe.extra:
        out.append(extra())
    steps: list[tuple[str, Callable[[], Iterator[Check] | Check]]] = [
        ("catalog", lambda: _instances(probe, source, destination)),
        ("catalog", lambda: _sidecars(probe, source, destination)),
        ("upstream", lambda: _upstream(probe, source, destination)),
        ("certificates", lambda: _certificates(probe, destination)),
        ("intentions", lambda: _intentions(probe, source, destination)),
        ("tokens", lambda: _tokens(probe, (source, destination))),
        ("proxies", lambda: _proxies(probe, (source, destination))),
    ]
    leaderless = any(c.area == "cluster" and not c.ok for c in out)
    for area, step in steps:
        if leaderless and area in NEEDS_LEADER:
            out.append(Check(True, area, "not checked: it needs a leader", skipped=True))
            continue
        try:
            result = step()
            out.extend([result] if isinstance(result, Check) else list(result))
        except (ApiError, KeyError, ValueError, TypeError) as exc:
            out.append(Check(False, area, f"could not read: {exc}", "is the agent reachable?"))
    return out


def render(found: list[Check]) -> str:
    lines = []
    for check in found:
        mark = "·" if check.skipped else "✓" if check.ok else "✗"
        lines.append(f"{mark} {check.area}: {check.evidence}")
        if not check.ok and check.fix:
            lines.append(f"    fix: {check.fix}")
    return "\n".join(lines)


def troubleshoot(argv: list[str]) -> int:
    """`proconsul troubleshoot SRC DST [-http-addr ...] [-source-token T]`"""
    flags = FlagSet("troubleshoot")
    add_api_flags(flags)
    flags.string("source-token", "", "The source sidecar's token, to check its rights.")
    flags.string("destination-token", "", "The destination sidecar's token, to check its rights.")
    flags.string("source-admin-addr", "", f"The source sidecar's admin address ({DEFAULT_ADMIN}).")
    flags.string(
        "destination-admin-addr", "", f"The destination sidecar's admin address ({DEFAULT_ADMIN})."
    )
    try:
        values, args = parse_args(flags, argv, max_args=2)
        if len(args) != 2:
            raise CliError("troubleshoot needs a source and a destination service: web api")
    except CliError as exc:
        print(exc.message)
        return 2
    source, destination = args
    tokens = {}
    if values["source-token"]:
        tokens[source] = values["source-token"]
    if values["destination-token"]:
        tokens[destination] = values["destination-token"]
    admin = {
        service: values[f"{role}-admin-addr"]
        for service, role in ((source, "source"), (destination, "destination"))
        if values[f"{role}-admin-addr"]
    }
    found = checks(Probe(client_from(values), tokens, admin=admin), source, destination)
    print(render(found))
    return 0 if all(c.ok for c in found) else 1
