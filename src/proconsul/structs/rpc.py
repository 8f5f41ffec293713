"""Payloads of the RPC methods between agents, for both ends of each call.

Job: the request and reply structs that the calling side encodes and the
serving side decodes ("Apply" and "Raft.Apply", "ACL.*", "Operator.*",
"AutoEncrypt.Sign", "ConnectCA.Sign", "ConnectCA.ConfigurationSet",
"Session.Renew"); the
reads' `ReadRequest`/`ReadResponse` are in structs/requests.py, which the
HTTP layer shares.

Rules:
- msgpack via msgspec; agents of different versions meet on the wire, so a
  struct only grows: new fields at the end, with defaults.
- A secret travels as `token`/`caller` and is never logged.
"""

from __future__ import annotations

from typing import Any

import msgspec

from proconsul.structs.acl import ACLPolicy, ACLRole, ACLToken
from proconsul.structs.commands import Command
from proconsul.structs.connect import CAConfiguration


class ApplyRequest(msgspec.Struct):
    """The payload of "Apply" (a write) and "Raft.Apply" (a follower forwarding one)."""

    command: Command
    token: str = ""  # the caller's secret; "" is the anonymous token


class ACLCall(msgspec.Struct, omit_defaults=True):
    """The payload of every "ACL.*" RPC; which fields matter depends on the method."""

    caller: str = ""  # the caller's secret ("" is the anonymous token)
    id: str = ""  # accessor, policy or role ID
    text: str = ""  # a name (ReadByName) or a description (TokenClone)
    policy: str = ""  # list filters (TokenList, RoleList)
    role: str = ""
    service: str = ""
    token_row: ACLToken | None = None
    policy_row: ACLPolicy | None = None
    role_row: ACLRole | None = None


class ResolveReply(msgspec.Struct):
    """The reply to "ACL.Resolve": the token (SecretID blanked), its policies and roles."""

    token: ACLToken
    policies: list[ACLPolicy] = []
    roles: list[ACLRole] = []


class OperatorRequest(msgspec.Struct, omit_defaults=True):
    """The payload of every `Operator.*` and `Snapshot.*` RPC; `id`/`address`
    for RaftRemovePeer and RaftTransferLeader."""

    token: str = ""  # the caller's secret ("" is the anonymous token)
    id: str = ""
    address: str = ""
    stale: bool = False  # Snapshot.Save: any server may answer
    data: bytes = b""  # Snapshot.Restore: the archive
    cas_index: int | None = None  # Operator.AutopilotSetConfiguration: ?cas (None: no CAS)
    config: dict[str, Any] = {}  # Operator.AutopilotSetConfiguration: the new settings

    def __repr__(self) -> str:  # the token and the archive's ACL secrets stay out of logs
        return (
            f"OperatorRequest(id={self.id!r}, address={self.address!r}, "
            f"data=<{len(self.data)} bytes>)"
        )


class SignRequest(msgspec.Struct):
    """The payload of "AutoEncrypt.Sign": a client agent asks for its RPC certificate."""

    public_key_pem: str
    node: str = ""  # the requesting agent's node name
    token: str = ""  # its agent token ("" is the anonymous token)


class SignReply(msgspec.Struct):
    """The reply to "AutoEncrypt.Sign": the certificate and the roots to trust with it."""

    cert_pem: str
    root_pems: list[str]


class CASignRequest(msgspec.Struct, omit_defaults=True):
    """The payload of "ConnectCA.Sign": a service's CSR, signed on the leader.

    `service`, when set, is the service the caller asks for: the CSR's SPIFFE
    ID must name exactly it. The token needs service:write on that service."""

    csr: str  # PEM
    token: str = ""  # the caller's secret ("" is the anonymous token)
    datacenter: str = ""
    service: str = ""

    def __repr__(self) -> str:  # never the token
        return f"CASignRequest(service={self.service!r}, datacenter={self.datacenter!r})"


class CAConfigRequest(msgspec.Struct, omit_defaults=True):
    """The payload of "ConnectCA.ConfigurationSet" (operator:write)."""

    config: CAConfiguration
    token: str = ""

    def __repr__(self) -> str:
        return f"CAConfigRequest(config={self.config!r})"


class SessionRenewRequest(msgspec.Struct, omit_defaults=True):
    """The payload of "Session.Renew" (served on the leader, which keeps the TTL
    timers); the reply is the session in a list, or an empty list when unknown."""

    id: str
    token: str = ""

    def __repr__(self) -> str:
        return f"SessionRenewRequest(id={self.id!r})"
