"""The ACL API's operations, declared once: `ACLService` and its table.

Job: one typed interface for the ACL operations (bootstrap, tokens, policies,
roles, and the resolution of a token for client agents), served in process
on servers (`ACLEndpoints`, server/acl_endpoints.py) and over RPC on client
agents (`RemoteACLEndpoints`, rpc/acl_codec.py), so the HTTP routes
(http/acl_routes.py) call one thing either way. Each method is also the
declaration of its RPC: `@operation(rpc_name, *fields)` records its name, the
`ACLCall` field each positional argument travels in, and its result type (the
return annotation) in `ACL_OPERATIONS`, from which the RPC handlers
(server/acl_rpc.py) and the remote caller are derived.

Rules:
- Every method takes the caller's secret as the keyword `caller` ("" is the
  anonymous token), except `bootstrap` (no token needed) and `token_self`
  and `token_resolve`, whose one argument is the secret (field "caller").
- Refusals are `ACLDenied`, other failures `ACLError` (acl/errors.py), with
  Consul's texts.
- Reads answer `(index, rows)`; writes the stored row; deletes nothing.
- A new operation is a new method here with its `@operation` line, and the
  same method on `ACLEndpoints`; the RPC and the remote caller follow.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from proconsul.acl.errors import ACLError
from proconsul.structs.acl import ACLPolicy, ACLRole, ACLToken
from proconsul.structs.rpc import ACLCall, ResolveReply

RESOLVE_METHOD = "ACL.Resolve"
_CALL_FIELDS = frozenset(ACLCall.__struct_fields__)


@dataclass(frozen=True)
class ACLOperation:
    """One ACL operation: the `ACLService` method `name`, served as RPC method `rpc`."""

    name: str
    rpc: str
    # The ACLCall field each positional parameter (`params`) travels in, in order.
    fields: tuple[str, ...]
    params: tuple[str, ...]
    takes_caller: bool  # the method has the keyword `caller`
    result: Any  # what it answers: its return annotation
    signature: inspect.Signature
    # A write: served whole on the leader (a follower forwards the call as it came).
    write: bool = False

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ACLCall:
        """The request for a call with these arguments (bound as the method binds them)."""
        bound = self.signature.bind(None, *args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        call = {"caller": values["caller"]} if self.takes_caller else {}
        call.update(
            {field: values[param] for field, param in zip(self.fields, self.params, strict=True)}
        )
        return ACLCall(**call)

    def decode(self, call: ACLCall) -> tuple[list[Any], dict[str, Any]]:
        """The method's arguments from its request; a row it needs but did not
        get (a `*_row` field) is a 400."""
        args = []
        for field in self.fields:
            value = getattr(call, field)
            if value is None:
                missing = field.removesuffix("_row")
                raise ACLError(400, f"Request decode failed: missing {missing}")
            args.append(value)
        return args, {"caller": call.caller} if self.takes_caller else {}


# RPC method name -> its operation, in declaration order.
ACL_OPERATIONS: dict[str, ACLOperation] = {}

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def operation(rpc: str, *fields: str, write: bool = False) -> Callable[[_Method], _Method]:
    """Declare an `ACLService` method as the ACL operation served as `rpc`, its
    positional arguments travelling in the `ACLCall` `fields`; `write` for
    the operations that change rows."""

    def declare(method: _Method) -> _Method:
        signature = inspect.signature(method)
        params = [p for p in signature.parameters.values() if p.name != "self"]
        positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
        takes_caller = any(p.name == "caller" and p.kind is p.KEYWORD_ONLY for p in params)
        if len(positional) != len(fields) or not _CALL_FIELDS.issuperset(fields):
            raise TypeError(f"{rpc}: fields {fields} do not carry the arguments {positional}")
        ACL_OPERATIONS[rpc] = ACLOperation(
            name=method.__name__,
            rpc=rpc,
            fields=fields,
            params=positional,
            takes_caller=takes_caller,
            result=typing.get_type_hints(method)["return"],
            signature=signature,
            write=write,
        )
        return method

    return declare


class ACLService(Protocol):
    """The ACL operations; `caller` is the caller's secret."""

    @operation("ACL.Bootstrap", write=True)
    async def bootstrap(self) -> ACLToken: ...

    @operation("ACL.TokenRead", "id")
    async def token_read(self, accessor_id: str, *, caller: str = "") -> tuple[int, ACLToken]: ...

    @operation("ACL.TokenSelf", "caller")
    async def token_self(self, secret: str) -> tuple[int, ACLToken]: ...

    @operation("ACL.TokenList", "policy", "role", "service")
    async def token_list(
        self, policy: str = "", role: str = "", service: str = "", *, caller: str = ""
    ) -> tuple[int, list[ACLToken]]: ...

    @operation("ACL.TokenCreate", "token_row", write=True)
    async def token_create(self, token: ACLToken, *, caller: str = "") -> ACLToken: ...

    @operation("ACL.TokenUpdate", "id", "token_row", write=True)
    async def token_update(
        self, accessor_id: str, update: ACLToken, *, caller: str = ""
    ) -> ACLToken: ...

    @operation("ACL.TokenClone", "id", "text", write=True)
    async def token_clone(
        self, accessor_id: str, description: str, *, caller: str = ""
    ) -> ACLToken: ...

    @operation("ACL.TokenDelete", "id", write=True)
    async def token_delete(self, accessor_id: str, *, caller: str = "") -> None: ...

    @operation("ACL.PolicySet", "policy_row", "id", write=True)
    async def policy_set(
        self, policy: ACLPolicy, policy_id: str = "", *, caller: str = ""
    ) -> ACLPolicy: ...

    @operation("ACL.PolicyRead", "id")
    async def policy_read(self, policy_id: str, *, caller: str = "") -> tuple[int, ACLPolicy]: ...

    @operation("ACL.PolicyReadByName", "text")
    async def policy_read_by_name(
        self, name: str, *, caller: str = ""
    ) -> tuple[int, ACLPolicy]: ...

    @operation("ACL.PolicyList")
    async def policy_list(self, *, caller: str = "") -> tuple[int, list[ACLPolicy]]: ...

    @operation("ACL.PolicyDelete", "id", write=True)
    async def policy_delete(self, policy_id: str, *, caller: str = "") -> None: ...

    @operation("ACL.RoleSet", "role_row", "id", write=True)
    async def role_set(self, role: ACLRole, role_id: str = "", *, caller: str = "") -> ACLRole: ...

    @operation("ACL.RoleRead", "id")
    async def role_read(self, role_id: str, *, caller: str = "") -> tuple[int, ACLRole | None]: ...

    @operation("ACL.RoleReadByName", "text")
    async def role_read_by_name(
        self, name: str, *, caller: str = ""
    ) -> tuple[int, ACLRole | None]: ...

    @operation("ACL.RoleList", "policy")
    async def role_list(
        self, policy: str = "", *, caller: str = ""
    ) -> tuple[int, list[ACLRole]]: ...

    @operation("ACL.RoleDelete", "id", write=True)
    async def role_delete(self, role_id: str, *, caller: str = "") -> None: ...

    @operation(RESOLVE_METHOD, "caller")
    async def token_resolve(self, secret: str) -> ResolveReply:
        """What a client agent needs to resolve `secret` itself (never the secret)."""
        ...
