"""/v1/connect/intentions and /v1/agent/connect/authorize: Consul's intentions API.

Job: the legacy intentions API over the service-intentions config entries
(Consul 1.16 keeps it, mapped onto the entries since 1.9):
- `GET /v1/connect/intentions` lists them (`?filter=` as Consul's);
  `POST` is the legacy create, answering `{"ID": "<uuid>"}`;
- `GET|PUT|DELETE /v1/connect/intentions/exact?source=&destination=` read,
  upsert (`true`) and delete (`true`) one by its names;
- `GET /v1/connect/intentions/match?by=source|destination&name=` (repeatable)
  answers `{name: [intentions in evaluation order]}`;
- `GET /v1/connect/intentions/check?source=&destination=` answers `{"Allowed"}`;
- `GET|PUT|DELETE /v1/connect/intentions/:id` for intentions the legacy
  create made (the only ones with an ID);
- `POST /v1/agent/connect/authorize` `{Target, ClientCertURI,
  ClientCertSerial}` answers `{Authorized, Reason}` with Consul's reasons.

Rules:
- Every write is a read-modify-write of the destination's entry through the
  config entry write path: a consistent `ConfigEntry.Get`, one of the pure
  changes of connect/intention_writes.py, then a check-and-set write on the
  ModifyIndex read. A lost race reads again after a short random backoff,
  at most `MAX_WRITE_ATTEMPTS` times, so concurrent creates for one
  destination all land.
- Writes need `intentions = "write"` on the destination (checked here for
  Consul's 403 text, and again by the server that applies the write).
- Bad input is a 400 with Consul's text (`required query parameter 'source'
  not set`, `'by' parameter must be one of 'source' or 'destination'`, the
  entry's validation text); an unknown intention a 404 `Intention not found`.
- authorize: service:write on the target; the client certificate's URI must
  be a service's SPIFFE ID; the decision is connect/intentions.py's (L4: an
  L7 intention counts as deny); no match falls to the ACL default policy,
  allow when ACLs are off.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from proconsul.connect.intention_writes import (
    NOT_FOUND,
    UNCHANGED,
    Change,
    IntentionWriteError,
    check_legacy,
    check_upsert_meta,
    create_legacy,
    delete_by_id,
    delete_by_name,
    source_of,
    update_by_id,
    upsert,
)
from proconsul.connect.intentions import authorize as authorize_connection
from proconsul.connect.intentions import default_allow
from proconsul.connect.spiffe import SpiffeError, parse_cert_uri
from proconsul.http.acl_rules import authorize, ensure_resolved
from proconsul.http.api import agent_of, caller_token
from proconsul.http.common import (
    HTTPError,
    bad_request,
    decode_body,
    json_response,
    not_found,
    query_options,
)
from proconsul.structs.commands import ApplyError, ConfigEntryRequest
from proconsul.structs.config_entries import SERVICE_INTENTIONS, Intention, ServiceIntentions
from proconsul.structs.intentions import MATCH_DESTINATION, MATCH_SOURCE, IntentionQuery
from proconsul.structs.naming import pascal
from proconsul.structs.requests import QueryOptions, ReadRequest, ReadResponse

MAX_WRITE_ATTEMPTS = 16
# After a lost check-and-set, wait up to this much times the attempt number
# before reading again, so a crowd of writers to one entry spreads out.
RETRY_BACKOFF_S = 0.01
LIST_METHOD = "Intention.List"
MATCH_METHOD = "Intention.Match"
GET_METHOD = "Intention.Get"
CHECK_METHOD = "Intention.Check"
ENTRY_GET_METHOD = "ConfigEntry.Get"


class AuthorizeRequest(msgspec.Struct, rename=pascal):
    target: str = ""
    client_cert_uri: str = ""
    client_cert_serial: str = ""


class AuthorizeResponse(msgspec.Struct, rename=pascal):
    authorized: bool
    reason: str


class CreateResponse(msgspec.Struct, rename=pascal):
    id: str


def _now() -> str:
    """RFC 3339 in UTC, as Go prints a time.Time (microseconds here)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ----- query parameters -------------------------------------------------------------


def _param(request: web.Request, name: str) -> str:
    values = request.query.getall(name, [])
    if len(values) != 1 or not values[0]:
        bad_request(f"required query parameter '{name}' not set")
    return values[0]


def _service_name(text: str, what: str) -> str:
    """A source or destination as Consul reads it (`name`, `ns/name`); the
    open-source edition has one namespace, `default`."""
    if text.startswith("peer:"):
        bad_request(f'{what} "{text}" is invalid: cannot specify a peer here')
    parts = text.split("/")
    if len(parts) > 3:
        bad_request(f"{what} \"{text}\" is invalid: input can contain at most two '/'")
    if len(parts) > 1 and any(part not in ("", "default") for part in parts[:-1]):
        bad_request(f'{what} "{text}" is invalid: namespaces and partitions need Consul Enterprise')
    return parts[-1]


def _pair(request: web.Request) -> tuple[str, str]:
    source = _param(request, "source")
    destination = _param(request, "destination")
    return _service_name(source, "source"), _service_name(destination, "destination")


async def _read(request: web.Request, method: str, query: IntentionQuery) -> ReadResponse:
    read = ReadRequest(intention=query, options=query_options(request, caller_token(request)))
    return await agent_of(request).rpc_read(method, read)


def _check_legacy_body(body: Intention) -> None:
    """A legacy create's or update's body: names as Consul reads them, then
    Consul's legacy validation (every problem listed)."""
    if body.source_name:
        body.source_name = _service_name(body.source_name, "source")
    if body.destination_name:
        body.destination_name = _service_name(body.destination_name, "destination")
    try:
        check_legacy(body)
    except IntentionWriteError as exc:
        raise HTTPError(exc.status, exc.message) from None


async def _body(request: web.Request) -> Intention:
    # Consul's exact field names (SourceNS, DestinationName, ...): not respelled.
    return await decode_body(request, Intention, keys="as-is")


# ----- the read-modify-write ----------------------------------------------------------


async def _modify(
    request: web.Request, destination: str, change: Callable[[ServiceIntentions | None], Change]
) -> None:
    """Apply `change` to the destination's entry with check-and-set (see the rules)."""
    agent = agent_of(request)
    token = caller_token(request)
    options = QueryOptions(token=token, require_consistent=True)
    for attempt in range(MAX_WRITE_ATTEMPTS):
        if attempt:
            await asyncio.sleep(random.uniform(0, RETRY_BACKOFF_S * attempt))
        read = ReadRequest(kind=SERVICE_INTENTIONS, name=destination, options=options)
        current = (await agent.rpc_read(ENTRY_GET_METHOD, read)).value
        stored = current if isinstance(current, ServiceIntentions) else None
        try:
            changed = change(stored)
        except IntentionWriteError as exc:
            raise HTTPError(exc.status, exc.message) from None
        if changed is UNCHANGED:
            return
        cas = 0 if stored is None else stored.modify_index
        if isinstance(changed, ServiceIntentions):
            command = ConfigEntryRequest(
                op="upsert-cas", entry=changed, cas_index=cas, intentions_api=True
            )
        else:  # None: the last source is gone, and the entry goes with it
            command = ConfigEntryRequest(
                op="delete-cas", entry=ServiceIntentions(name=destination), cas_index=cas
            )
        _, result = await agent.rpc_write(command, token)
        if isinstance(result, ApplyError):
            raise HTTPError(500, result.message)
        if result is True:
            return
    raise HTTPError(
        500,
        f'service-intentions entry "{destination}" kept changing: '
        f"gave up after {MAX_WRITE_ATTEMPTS} attempts",
    )


def _may_write(request: web.Request, destination: str) -> None:
    authorize(request, "intention", "write", destination)


# ----- handlers ----------------------------------------------------------------------


async def intention_list(request: web.Request) -> web.Response:
    response = await _read(request, LIST_METHOD, IntentionQuery())
    return json_response(request, response.value, response.meta)


async def intention_create(request: web.Request) -> web.Response:
    body = await _body(request)
    if body.id:
        bad_request("ID must be empty when creating a new intention")
    _check_legacy_body(body)
    _may_write(request, body.destination_name)
    legacy_id = str(uuid.uuid4())
    source = source_of(body, legacy_id=legacy_id, now=_now())
    destination = body.destination_name
    await _modify(request, destination, lambda entry: create_legacy(entry, destination, source))
    return json_response(request, CreateResponse(legacy_id))


async def intention_exact_get(request: web.Request) -> web.Response:
    source, destination = _pair(request)
    query = IntentionQuery(source=source, destination=destination)
    response = await _read(request, GET_METHOD, query)
    if response.value is None:
        not_found(NOT_FOUND)
    return json_response(request, response.value, response.meta)


async def intention_exact_put(request: web.Request) -> web.Response:
    source_name, destination = _pair(request)
    body = await _body(request)
    body.source_name, body.destination_name, body.id = source_name, destination, ""
    _may_write(request, destination)
    source = source_of(body)

    def change(entry: ServiceIntentions | None) -> Change:
        check_upsert_meta(entry, body.meta)
        return upsert(entry, destination, source)

    await _modify(request, destination, change)
    return json_response(request, True)


async def intention_exact_delete(request: web.Request) -> web.Response:
    source, destination = _pair(request)
    _may_write(request, destination)
    await _modify(request, destination, lambda entry: delete_by_name(entry, source))
    return json_response(request, True)


async def intention_match(request: web.Request) -> web.Response:
    by = request.query.getall("by", [])
    if len(by) != 1:
        bad_request("required query parameter 'by' not set")
    if by[0] not in (MATCH_SOURCE, MATCH_DESTINATION):
        bad_request("'by' parameter must be one of 'source' or 'destination'")
    names = request.query.getall("name", [])
    if not names:
        bad_request("required query parameter 'name' not set")
    parsed = [_service_name(name, "name") for name in names]
    response = await _read(request, MATCH_METHOD, IntentionQuery(match_by=by[0], names=parsed))
    matches: dict[str, list[Intention]] = response.value
    # Keyed by the names as asked (Consul preserves their spelling).
    result = {name: matches.get(plain, []) for name, plain in zip(names, parsed, strict=True)}
    return json_response(request, result, response.meta)


async def intention_check(request: web.Request) -> web.Response:
    source, destination = _pair(request)
    response = await _read(
        request, CHECK_METHOD, IntentionQuery(source=source, destination=destination)
    )
    return json_response(request, response.value, response.meta)


async def _by_id(request: web.Request) -> tuple[str, Intention | None, ReadResponse]:
    legacy_id = request.match_info["id"]
    response = await _read(request, GET_METHOD, IntentionQuery(id=legacy_id))
    found: Intention | None = response.value
    return legacy_id, found, response


async def intention_get(request: web.Request) -> web.Response:
    _, found, response = await _by_id(request)
    if found is None:
        not_found(NOT_FOUND)
    return json_response(request, found, response.meta)


async def intention_update(request: web.Request) -> web.Response:
    body = await _body(request)
    legacy_id, found, _ = await _by_id(request)
    if found is None:
        raise HTTPError(500, f"Cannot modify non-existent intention: '{legacy_id}'")
    _check_legacy_body(body)
    destination = found.destination_name
    _may_write(request, destination)
    now = _now()
    await _modify(
        request, destination, lambda entry: update_by_id(entry, legacy_id, destination, body, now)
    )
    return web.Response(status=200)


async def intention_delete(request: web.Request) -> web.Response:
    legacy_id, found, _ = await _by_id(request)
    if found is None:
        raise HTTPError(500, f"Cannot delete non-existent intention: '{legacy_id}'")
    _may_write(request, found.destination_name)
    await _modify(request, found.destination_name, lambda entry: delete_by_id(entry, legacy_id))
    return web.Response(status=200)


async def agent_connect_authorize(request: web.Request) -> web.Response:
    body = await decode_body(request, AuthorizeRequest)
    if not body.target:
        bad_request("Target service must be specified")
    try:
        client = parse_cert_uri(body.client_cert_uri)
    except SpiffeError:
        bad_request("ClientCertURI not a valid Connect identifier")
    if client is None:
        bad_request("ClientCertURI not a valid Service identifier")
    resolved = await ensure_resolved(request)
    authorize(request, "service", "write", body.target)
    response = await _read(
        request, MATCH_METHOD, IntentionQuery(match_by=MATCH_DESTINATION, names=[body.target])
    )
    rows: list[Intention] = response.value.get(body.target, [])
    if client.namespace != "default":
        rows = []  # every intention here is from the default namespace: none matches
    allow_by_default = default_allow(
        resolved is not None, "allow" if resolved is None else resolved.authorizer.default_policy
    )
    decision = authorize_connection(
        rows, client.service, body.target, default_allow=allow_by_default
    )
    return json_response(request, AuthorizeResponse(decision.allowed, decision.reason))


def add_routes(app: web.Application) -> None:
    router = app.router
    # The fixed paths first: `{id}` would take them otherwise.
    router.add_get("/v1/connect/intentions", intention_list)
    router.add_post("/v1/connect/intentions", intention_create)
    router.add_get("/v1/connect/intentions/exact", intention_exact_get)
    router.add_put("/v1/connect/intentions/exact", intention_exact_put)
    router.add_delete("/v1/connect/intentions/exact", intention_exact_delete)
    router.add_get("/v1/connect/intentions/match", intention_match)
    router.add_get("/v1/connect/intentions/check", intention_check)
    router.add_get("/v1/connect/intentions/{id}", intention_get)
    router.add_put("/v1/connect/intentions/{id}", intention_update)
    router.add_delete("/v1/connect/intentions/{id}", intention_delete)
    router.add_post("/v1/agent/connect/authorize", agent_connect_authorize)
