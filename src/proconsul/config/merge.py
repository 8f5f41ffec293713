"""Raw config trees: fixing HCL shapes, refusing legacy keys, and merging.

Sources are merged as parsed dicts, before decoding, because only the raw tree
knows which keys a source actually set. The schema's types (via
`msgspec.inspect`) say how each key merges, following Consul's rules:
- blocks (structs) merge key by key, recursively;
- lists are appended (so `retry_join` from two files is both lists);
- maps (`node_meta`, `ca_config`) are replaced whole by a later non-empty map;
- everything else: the later value wins.
`merge_into` also records which source last set each key path, so an error
found in the merged result can name the file responsible.

HCL1 shapes are fixed first: pyhcl turns a block written twice into a list of
dicts and a list written as one block into a dict; JSON `null` means unset.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec.inspect as mi

from proconsul.config.errors import ConfigError, join_path
from proconsul.config.schema import Block, ConfigFile

# Keys Consul removed (1.11+), each refused with the key that replaced it.
LEGACY_KEYS: dict[str, str] = {
    "acl_datacenter": "primary_datacenter",
    "acl_default_policy": "acl.default_policy",
    "acl_down_policy": "acl.down_policy",
    "acl_ttl": "acl.token_ttl",
    "acl_master_token": "acl.tokens.initial_management",
    "acl_token": "acl.tokens.default",
    "acl_agent_token": "acl.tokens.agent",
    "acl_agent_master_token": "acl.tokens.agent_recovery",
    "acl_replication_token": "acl.tokens.replication",
    "acl_enable_key_list_policy": "acl.enable_key_list_policy",
    "enable_acl_replication": "acl.enable_token_replication",
    "acl.tokens.master": "acl.tokens.initial_management",
    "acl.tokens.agent_master": "acl.tokens.agent_recovery",
}
REMOVED_KEYS: dict[str, str] = {
    "acl_enforce_version_8": "legacy ACLs are gone; remove this key",
    "addresses.rpc": "the RPC listener was removed; remove this key",
    "ports.rpc": "the RPC listener was removed; remove this key",
}

# Deprecated keys that still work: copied to their new key unless that is set.
DEPRECATED_KEYS: dict[str, str] = {
    "ui": "ui_config.enabled",
    "ui_dir": "ui_config.dir",
    "ui_content_path": "ui_config.content_path",
    "ca_file": "tls.defaults.ca_file",
    "ca_path": "tls.defaults.ca_path",
    "cert_file": "tls.defaults.cert_file",
    "key_file": "tls.defaults.key_file",
    "tls_cipher_suites": "tls.defaults.tls_cipher_suites",
    "tls_min_version": "tls.defaults.tls_min_version",
    "verify_incoming": "tls.defaults.verify_incoming",
    "verify_incoming_https": "tls.https.verify_incoming",
    "verify_incoming_rpc": "tls.internal_rpc.verify_incoming",
    "verify_outgoing": "tls.defaults.verify_outgoing",
    "verify_server_hostname": "tls.internal_rpc.verify_server_hostname",
}
_OLD_TLS_VERSIONS = {"tls10": "TLSv1_0", "tls11": "TLSv1_1", "tls12": "TLSv1_2", "tls13": "TLSv1_3"}


def refuse_legacy(raw: dict[str, Any], source: str) -> None:
    """Raise for the first removed key in a source, naming what replaced it."""
    for dotted_key, new_key in LEGACY_KEYS.items():
        if _lookup(raw, dotted_key) is not None:
            raise ConfigError(source, dotted_key, f"no longer supported; use {new_key} instead")
    for dotted_key, advice in REMOVED_KEYS.items():
        if _lookup(raw, dotted_key) is not None:
            raise ConfigError(source, dotted_key, f"no longer supported; {advice}")


def apply_deprecated(raw: dict[str, Any]) -> list[str]:
    """Copy deprecated keys into their new homes (in place); return the warnings."""
    warnings = []
    for old_key, new_key in DEPRECATED_KEYS.items():
        value = raw.get(old_key)
        if value is None:
            continue
        warnings.append(f"The '{old_key}' field is deprecated. Use the '{new_key}' field instead.")
        if old_key == "tls_min_version":
            value = _OLD_TLS_VERSIONS.get(value, value)
        if _lookup(raw, new_key) is None:
            _store(raw, new_key, value)
    return warnings


def _lookup(raw: Any, dotted_key: str) -> Any:
    for part in dotted_key.split("."):
        if not isinstance(raw, dict):
            return None
        raw = raw.get(part)
    return raw


def _store(raw: dict[str, Any], dotted_key: str, value: Any) -> None:
    *parents, last = dotted_key.split(".")
    for part in parents:
        child = raw.get(part)
        if not isinstance(child, dict):
            child = {}
            raw[part] = child
        raw = child
    raw[last] = value


# ------------------------------------------------------------------- shapes


@functools.cache
def schema_type(cls: type) -> mi.Type:
    return mi.type_info(cls)


def config_file_type() -> mi.StructType:
    info = schema_type(ConfigFile)
    assert isinstance(info, mi.StructType)
    return info


def _unwrap(kind: mi.Type) -> mi.Type:
    """`X | None` -> X, so optional blocks shape and merge like blocks."""
    if isinstance(kind, mi.UnionType):
        rest = [t for t in kind.types if not isinstance(t, mi.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return kind


def _is_block(kind: mi.Type) -> bool:
    return isinstance(kind, mi.StructType) and issubclass(kind.cls, Block)


def _fields(kind: mi.StructType) -> dict[str, mi.Type]:
    return {field.encode_name: field.type for field in kind.fields}


def _all_dicts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def shape(raw: Any, kind: mi.Type) -> Any:
    """Fix pyhcl's block shapes to what `kind` expects and drop nulls, recursively."""
    kind = _unwrap(kind)
    if isinstance(kind, mi.StructType):
        if _is_block(kind) and _all_dicts(raw):
            merged: dict[str, Any] = {}
            for item in raw:
                merged = merge_into(merged, shape(item, kind), kind)
            return merged
        if not isinstance(raw, dict):
            return raw
        fields = _fields(kind)
        return {
            key: shape(value, fields[key]) if key in fields else value
            for key, value in raw.items()
            if value is not None
        }
    if isinstance(kind, mi.ListType):
        item = _unwrap(kind.item_type)
        if isinstance(raw, dict) and isinstance(item, mi.StructType | mi.DictType):
            raw = [raw]
        if isinstance(raw, list):
            return [shape(value, kind.item_type) for value in raw]
        return raw
    if isinstance(kind, mi.DictType) and _all_dicts(raw):
        combined: dict[str, Any] = {}
        for value in raw:
            combined.update(value)
        return combined
    return raw


# -------------------------------------------------------------------- merge


def merge_into(
    base: dict[str, Any],
    update: dict[str, Any],
    kind: mi.StructType,
    origins: dict[str, str] | None = None,
    source: str = "",
    prefix: str = "",
) -> dict[str, Any]:
    """Return `base` with `update` merged on top by Consul's rules (inputs untouched)."""
    out = dict(base)
    fields = _fields(kind)
    for key, value in update.items():
        path = join_path(prefix, key)
        field_kind = _unwrap(fields[key]) if key in fields else None
        current = out.get(key)
        if (
            field_kind is not None
            and _is_block(field_kind)
            and isinstance(current, dict)
            and isinstance(value, dict)
        ):
            assert isinstance(field_kind, mi.StructType)
            out[key] = merge_into(current, value, field_kind, origins, source, path)
            continue
        if (
            isinstance(field_kind, mi.ListType)
            and isinstance(current, list)
            and isinstance(value, list)
        ):
            out[key] = [*current, *value]
            _record(origins, source, path, value, start=len(current))
            continue
        if isinstance(field_kind, mi.DictType) and isinstance(value, dict) and not value:
            continue
        out[key] = value
        _record(origins, source, path, value)
    return out


def _record(
    origins: dict[str, str] | None, source: str, path: str, value: Any, start: int = 0
) -> None:
    if origins is None:
        return
    origins[path] = source
    if isinstance(value, dict):
        for key, child in value.items():
            _record(origins, source, join_path(path, key), child)
    elif isinstance(value, list):
        for index, child in enumerate(value, start):
            _record(origins, source, f"{path}[{index}]", child)


def origin_of(origins: dict[str, str], path: str, fallback: str) -> str:
    """The source that set `path` (or its nearest recorded parent)."""
    while path:
        if path in origins:
            return origins[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return fallback
