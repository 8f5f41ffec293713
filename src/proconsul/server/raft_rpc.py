"""The server's Raft log on the RPC port: `Raft.Step` and the leader's end of forwarding.

Job: `raft_handlers` gives the handlers a server adds to its `RPCServer`:
"Raft.Step" (consensus messages) and "Raft.Apply", where a write that landed
on a follower (sent on by server/leader_router.py) reaches the leader.

Rules:
- Under verify_incoming, `Raft.Step` and `Raft.Apply` only accept peers whose
  verified certificate names `server.<dc>.<domain>`: a client certificate from
  the same CA must not be able to vote or append entries.
- "Raft.Apply" carries the command and the secret of the caller it is applied
  for, and the leader authorizes it again before it enters the log, as Consul's
  leader checks the RPCs forwarded to it (`authorize_forwarded`): catalog and
  KV commands, and config entries, get the vetting "Apply" makes (`vet_write`); ACL commands need
  `acl:write` (and ACLs on); a bootstrap is allowed while none happened, or
  when this leader's own `acl-bootstrap-reset` file holds its reset index;
  anything else (the CA roots: only the leader writes them) is refused, ACLs
  on or off. Refusals are `ACLDenied` (`ACLNotFound` for an unknown
  secret), which the caller gets as an "acl_denied" error. The first server's check is not
  trusted: a peer reaching port 8300 without a server certificate (when
  verify_incoming is off) is just another caller.
- This is where a forwarded write is authorized, and the only place: the
  forwarding server does not check it (server/leader_router.py). A forwarded
  config entry is validated again here (kind, entry, discovery chains), as
  the first server's checks are not trusted either.
- The leader's own writes (`ServerDelegate.leader_write`: reconcile, its
  registration, the CA roots; ACL establish and reaping) apply locally and
  never come through here.
"""

from __future__ import annotations

from proconsul.acl.errors import ACLDenied
from proconsul.rpc.codec import FORWARD_METHOD, decode_apply_request, encode
from proconsul.rpc.errors import NO_LEADER, ErrorCode, RPCError
from proconsul.rpc.server import Handler
from proconsul.rpc.tls import PeerInfo
from proconsul.server.acl_endpoints import bootstrap_denied, read_reset_index
from proconsul.server.config_endpoints import check_config_request, check_graph
from proconsul.server.endpoint_acl import CALLER_COMMANDS, vet_write
from proconsul.server.endpoints import ServerEndpoints
from proconsul.server.raft_errors import NotLeaderError
from proconsul.server.raft_log import RaftLog
from proconsul.server.raft_transport import STEP_METHOD
from proconsul.structs.commands import (
    ACLBootstrapRequest,
    ACLCommand,
    Command,
    ConfigEntryRequest,
    CoordinateBatchUpdate,
)
from proconsul.tls.agent import server_name

ACL_DISABLED = "ACL support disabled"
UNKNOWN_COMMAND = "Permission denied: this command cannot be forwarded"


def authorize_forwarded(
    endpoints: ServerEndpoints, command: Command, token: str, *, data_dir: str = ""
) -> None:
    """Raise `ACLDenied` unless the caller holding `token` may have `command`
    applied (see the module rules). `data_dir` holds this server's
    `acl-bootstrap-reset` file."""
    if isinstance(command, ACLBootstrapRequest):
        if endpoints.acl is None:
            raise ACLDenied(ACL_DISABLED)
        tables = endpoints.store.acl
        if tables.bootstrapped:
            reset, _ = read_reset_index(data_dir)
            if not reset or command.reset_index != reset:
                raise bootstrap_denied(tables.bootstrap_index)
        return
    if isinstance(command, ACLCommand):
        if endpoints.acl is None:
            raise ACLDenied(ACL_DISABLED)
        resolved = endpoints.resolve(token)
        if resolved is not None and not resolved.authorizer.acl_write():
            raise resolved.deny("acl", "write")
        return
    if isinstance(command, CoordinateBatchUpdate):
        # A server's batch of agents' coordinates: each entry was checked
        # (node:write) by the server that took it (server/coordinate_endpoints.py).
        return
    if isinstance(command, CALLER_COMMANDS):
        resolved = endpoints.resolve(token)
        if resolved is not None:
            vet_write(endpoints.store, resolved, command)
        return
    raise ACLDenied(UNKNOWN_COMMAND)


def only_servers(handler: Handler, *, datacenter: str, domain: str) -> Handler:
    """`handler`, refusing peers that did not prove with a verified certificate
    that they are `server.<dc>.<domain>`."""
    name = server_name(datacenter, domain)

    async def handle(payload: bytes, peer: PeerInfo) -> bytes:
        if not peer.has_dns_name(name):
            raise RPCError(
                f"Permission denied: {peer.describe()} is not {name}", ErrorCode.PERMISSION_DENIED
            )
        return await handler(payload, peer)

    return handle


def raft_handlers(
    raft_log: RaftLog,
    endpoints: ServerEndpoints,
    *,
    data_dir: str = "",
    require_server_cert: bool = False,
    datacenter: str = "dc1",
    domain: str = "consul",
) -> dict[str, Handler]:
    """Handlers to add to the server's RPCServer. `endpoints` is the server's own
    (its store and, with ACLs on, its resolver authorize forwarded commands);
    `data_dir` its data directory. Pass `require_server_cert=True` when the
    server runs with verify_incoming."""

    async def forwarded_apply(payload: bytes, peer: PeerInfo) -> bytes:
        # One hop only: if leadership moved on meanwhile, the sender hears "not
        # the leader" and the write is the caller's to retry.
        request = decode_apply_request(payload, FORWARD_METHOD)
        command = request.command
        if isinstance(command, ConfigEntryRequest):
            command = check_config_request(command)
            check_graph(endpoints.store, command, datacenter)
        authorize_forwarded(endpoints, command, request.token, data_dir=data_dir)
        try:
            return encode(await raft_log.apply(command))
        except NotLeaderError as exc:
            raise RPCError(str(exc) or NO_LEADER, ErrorCode.NOT_LEADER) from None

    handlers: dict[str, Handler] = {
        STEP_METHOD: raft_log.handle_step,
        FORWARD_METHOD: forwarded_apply,
    }
    if require_server_cert:
        handlers = {
            method: only_servers(handler, datacenter=datacenter, domain=domain)
            for method, handler in handlers.items()
        }
    return handlers
