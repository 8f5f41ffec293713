"""Field naming between Python (snake_case) and Consul's JSON (PascalCase with acronyms).

Structs declare snake_case fields and `rename=pascal`; Consul spells acronyms in
capitals (`ServiceID`, `TLSSkipVerify`, `HTTP`), so a plain title-case is wrong.
`snake_keys` goes the other way for request bodies, which Consul accepts in
either spelling; values under user-data keys (meta, headers) are left alone.
`conform_keys` (request bodies) and `shape_keys` (config entries, read weakly
as HCL1) do the same guided by a msgspec type instead of a list of user-data
keys, so only keys that name struct fields are ever renamed; both use one key
table per type, built once (`key_plan`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

_ACRONYMS = {
    "id": "ID",
    "ttl": "TTL",
    "http": "HTTP",
    "https": "HTTPS",
    "tcp": "TCP",
    "udp": "UDP",
    "tls": "TLS",
    "grpc": "GRPC",
    "uri": "URI",
    "dns": "DNS",
    "acl": "ACL",
    "ip": "IP",
    "kv": "KV",
    "cas": "CAS",
    "pem": "PEM",
    "ca": "CA",
    "rpc": "RPC",
    "lan": "LAN",
    "wan": "WAN",
}


def pascal(name: str) -> str:
    """`service_id` -> `ServiceID`, `tls_skip_verify` -> `TLSSkipVerify`."""
    return "".join(_ACRONYMS.get(part) or part[:1].upper() + part[1:] for part in name.split("_"))


_SPLIT_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_SPLIT_WORD = re.compile(r"([a-z0-9])([A-Z])")

# Keys whose values are user data: their own keys are never renamed.
OPAQUE_KEYS = frozenset(
    {"meta", "node_meta", "service_meta", "header", "config", "tagged_addresses", "env"}
)


def snake(name: str) -> str:
    """`ServiceID` -> `service_id`, `TLSSkipVerify` -> `tls_skip_verify`."""
    if name.islower():
        return name
    name = _SPLIT_ACRONYM.sub(r"\1_\2", name)
    name = _SPLIT_WORD.sub(r"\1_\2", name)
    return name.lower()


def snake_keys(obj: Any) -> Any:
    """Recursively rename dict keys to snake_case, leaving user data alone."""
    return _rename_keys(obj, lambda key: key)


def pascal_keys(obj: Any) -> Any:
    """Recursively rename dict keys to Consul's PascalCase, whatever case they came in.

    Consul (Go's JSON decoder) matches field names case-insensitively, so clients
    send `node`, `Node` or `service_id`; our structs want one spelling.
    """
    return _rename_keys(obj, pascal)


def _rename_keys(obj: Any, spell: Callable[[str], str]) -> Any:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                out[key] = value
                continue
            snake_key = snake(key)
            out[spell(snake_key)] = (
                value if snake_key in OPAQUE_KEYS else _rename_keys(value, spell)
            )
        return out
    if isinstance(obj, list):
        return [_rename_keys(item, spell) for item in obj]
    return obj


# Consul's documented aliases beyond case and underscores (Go structs' UnmarshalJSON),
# folded: alias -> the field it stands for, applied wherever that field exists.
FIELD_ALIASES = {"args": "scriptargs"}


def fold(name: str) -> str:
    """The form two field names must share to be one field: Go's JSON matches
    names case-insensitively, and Consul also takes the snake_case spelling."""
    return name.replace("_", "").lower()


class UnknownField(ValueError):
    """A key that names no field of a struct declared complete (forbid_unknown_fields)."""

    def __init__(self, key: str) -> None:
        super().__init__(f'json: unknown field "{key}"')
        self.key = key


class _StructPlan:
    """One struct's keys: folded name -> (wire name, plan of the value)."""

    __slots__ = ("fields", "strict")

    def __init__(self, strict: bool) -> None:
        self.fields: dict[str, tuple[str, _Plan]] = {}
        self.strict = strict


class _DictPlan:
    __slots__ = ("value",)

    def __init__(self, value: _Plan) -> None:
        self.value = value


class _ListPlan:
    __slots__ = ("item",)

    def __init__(self, item: _Plan) -> None:
        self.item = item


class _StrPlan:
    __slots__ = ()


_Plan = _StructPlan | _DictPlan | _ListPlan | _StrPlan | None
_PLANS: dict[Any, _Plan] = {}


def key_plan(kind: Any) -> _Plan:
    """The precomputed plan for `kind` (built once per type, then a dict lookup)."""
    try:
        return _PLANS[kind]
    except KeyError:
        pass
    except TypeError:  # an unhashable type annotation: plan it each time
        return _plan(msgspec.inspect.type_info(kind), {})
    plan = _plan(msgspec.inspect.type_info(kind), {})
    _PLANS[kind] = plan
    return plan


def _plan(info: msgspec.inspect.Type, structs: dict[type, _StructPlan]) -> _Plan:
    if isinstance(info, msgspec.inspect.UnionType):
        members = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return _plan(members[0], structs) if len(members) == 1 else None
    if isinstance(info, msgspec.inspect.StructType):
        known = structs.get(info.cls)
        if known is not None:
            return known  # a recursive type: the plan being built
        plan = _StructPlan(bool(info.forbid_unknown_fields))
        structs[info.cls] = plan
        for field in info.fields:
            entry = (field.encode_name, _plan(field.type, structs))
            plan.fields.setdefault(fold(field.encode_name), entry)
            plan.fields.setdefault(fold(field.name), entry)
        for alias, canonical in FIELD_ALIASES.items():
            if canonical in plan.fields:
                plan.fields.setdefault(alias, plan.fields[canonical])
        return plan
    if isinstance(info, msgspec.inspect.DictType):
        return _DictPlan(_plan(info.value_type, structs))
    if isinstance(info, msgspec.inspect.ListType):
        return _ListPlan(_plan(info.item_type, structs))
    if isinstance(info, msgspec.inspect.StrType):
        return _StrPlan()
    return None


def conform_keys(value: Any, kind: Any, *, keep_unknown: bool = False) -> Any:
    """`value` (decoded JSON) with every key that names a field of a struct in
    `kind` spelled as the struct encodes it; the one rule for request bodies.

    A key matches its field in any case, with or without underscores, or by a
    Consul alias (`FIELD_ALIASES`). Keys of dict-typed fields are user data and
    kept. A key that names no field raises `UnknownField` in a struct declared
    complete (Consul's strict decoding) and is dropped elsewhere; with
    `keep_unknown` it is kept as written, for a decoder that names its path
    (config files).
    """
    return _conform(value, key_plan(kind), keep_unknown)


def _conform(value: Any, plan: _Plan, keep: bool) -> Any:
    if plan is None:
        return value
    if isinstance(plan, _StructPlan):
        if not isinstance(value, dict):
            return value
        fields = plan.fields
        out: dict[str, Any] = {}
        for key, item in value.items():
            entry = fields.get(fold(key)) if isinstance(key, str) else None
            if entry is None:
                if keep:
                    out[key] = item
                elif plan.strict:
                    raise UnknownField(str(key))
                continue
            out[entry[0]] = _conform(item, entry[1], keep)
        return out
    if isinstance(plan, _DictPlan):
        if not isinstance(value, dict) or plan.value is None:
            return value
        return {key: _conform(item, plan.value, keep) for key, item in value.items()}
    if isinstance(plan, _ListPlan):
        if not isinstance(value, list) or plan.item is None:
            return value
        return [_conform(item, plan.item, keep) for item in value]
    return value


def shape_keys(value: Any, kind: Any) -> tuple[Any, list[str]]:
    """`value` with every key that names a field of a struct in `kind` spelled
    the way the struct encodes it, and the paths of keys that name no field.

    Keys match fields by the same rule and tables as `conform_keys` (any case,
    with or without underscores, so `ServiceSubset`, `service_subset` and
    `serviceSubset` are one field). Keys of dict-typed fields are user data and
    kept as they are. Input is read weakly, as Consul's decoder reads HCL1: a
    list of one object stands for an object, an object for a list of one, a
    number for a string.
    """
    unknown: list[str] = []
    return _shape(value, key_plan(kind), "", unknown), unknown


def _shape(value: Any, plan: _Plan, path: str, unknown: list[str]) -> Any:
    if plan is None:
        return value
    if isinstance(plan, _StructPlan | _DictPlan):
        # HCL1 parses a block inside a list as a list of one object.
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            value = value[0]
        if not isinstance(value, dict):
            return value
        if isinstance(plan, _DictPlan):
            return {
                key: _shape(item, plan.value, f"{path}[{key}]", unknown)
                for key, item in value.items()
            }
        out: dict[str, Any] = {}
        for key, item in value.items():
            entry = plan.fields.get(fold(key)) if isinstance(key, str) else None
            if entry is None:
                unknown.append(f"{path}.{key}" if path else str(key))
                continue
            wire, inner = entry
            out[wire] = _shape(item, inner, f"{path}.{wire}" if path else wire, unknown)
        return out
    if isinstance(plan, _ListPlan):
        if isinstance(value, dict):
            value = [value]  # one HCL block where a list of them is expected
        if not isinstance(value, list):
            return value
        return [
            _shape(item, plan.item, f"{path}[{index}]", unknown) for index, item in enumerate(value)
        ]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # a string field: `Meta = { build = 42 }`
    return value
