"""The Connect CA's configuration: Consul's keys, defaults and validation.

Job: turn a provider config map (Consul's API spelling `LeafCertTTL`, or the
agent file's `leaf_cert_ttl`) into `CASettings` with Consul's defaults and
checks, and into the map the state stores and `/v1/connect/ca/configuration`
shows (`stored_config`: API spelling, defaults filled, no key material).

Facts (Consul 1.16, `CommonCAProviderConfig.Validate` and the built-in
provider's docs):
- defaults: LeafCertTTL 72h, IntermediateCertTTL 8760h, RootCertTTL 87600h,
  RotationPeriod 2160h, PrivateKeyType "ec", PrivateKeyBits 256;
- LeafCertTTL within [1h, 8760h]; IntermediateCertTTL at least 3h and at
  least 3 x LeafCertTTL; RootCertTTL not below IntermediateCertTTL; EC keys
  of 224/256/384/521 bits or RSA of 2048/4096, with Consul's error texts;
- `SkipValidate` turns the checks off (Consul's, for tests and odd setups);
- keys are matched without regard to case or underscores, as Consul's
  decoder does, so both spellings work.

Rules:
- Pure: no clock, no I/O. Bad input raises `CAConfigError` with the text a
  user sees (HTTP 400).
- `PrivateKey` never appears in a repr, a stored map or an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proconsul.structs.duration import MAX_DURATION_S, format_duration, parse_duration

PROVIDER_CONSUL = "consul"
# Consul's API spelling of every key it documents for the built-in provider.
_API_KEYS = (
    "LeafCertTTL",
    "IntermediateCertTTL",
    "RootCertTTL",
    "RotationPeriod",
    "PrivateKeyType",
    "PrivateKeyBits",
    "PrivateKey",
    "RootCert",
    "SkipValidate",
    "CSRMaxPerSecond",
    "CSRMaxConcurrent",
)
_BY_FOLDED = {key.lower(): key for key in _API_KEYS}
DEFAULTS: dict[str, Any] = {
    "LeafCertTTL": "72h",
    "IntermediateCertTTL": "8760h",
    "RootCertTTL": "87600h",
    "RotationPeriod": "2160h",
    "PrivateKeyType": "ec",
    "PrivateKeyBits": 256,
}
# Never stored with the configuration: the key is provider state, the
# certificate is a root row.
SECRET_KEYS = frozenset({"PrivateKey", "RootCert"})
MIN_LEAF_TTL_S = 3600.0
MAX_LEAF_TTL_S = 365 * 24 * 3600.0
INTERMEDIATE_RENEW_S = 3600.0


class CAConfigError(ValueError):
    """A CA configuration Consul would refuse; the message is its text."""


@dataclass(frozen=True)
class CASettings:
    """The parsed provider settings. `private_key`/`root_cert` are "" unless given."""

    leaf_ttl_s: float
    intermediate_ttl_s: float
    root_ttl_s: float
    key_type: str
    key_bits: int
    private_key: str = ""
    root_cert: str = ""

    def __repr__(self) -> str:
        return (
            f"CASettings(leaf_ttl_s={self.leaf_ttl_s}, key_type={self.key_type!r}, "
            f"key_bits={self.key_bits}, private_key=<{'set' if self.private_key else 'unset'}>)"
        )


def api_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with every known key in Consul's API spelling (`leaf_cert_ttl` ->
    `LeafCertTTL`); unknown keys are kept as given."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        out[_BY_FOLDED.get(str(key).replace("_", "").lower(), str(key))] = value
    return out


def _seconds(config: Mapping[str, Any], key: str) -> float:
    value = config.get(key, DEFAULTS.get(key))
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"expected a duration, got {value!r}")
        if isinstance(value, int | float):
            seconds = value / 1e9  # Consul's decoder reads numbers as nanoseconds
        else:
            seconds = float(parse_duration(value))
        if not 0 <= seconds <= MAX_DURATION_S:  # also NaN
            raise ValueError(f"duration out of range: {value!r}")
        return seconds
    except (ValueError, OverflowError) as exc:
        raise CAConfigError(f"error decoding config: '{key}': {exc}") from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "t", "true")
    return bool(value)


def settings(raw: Mapping[str, Any]) -> CASettings:
    """The settings of a provider config map, validated as Consul validates them."""
    config = api_keys(raw)
    key_type = str(config.get("PrivateKeyType") or DEFAULTS["PrivateKeyType"])
    try:
        key_bits = int(config.get("PrivateKeyBits") or DEFAULTS["PrivateKeyBits"])
    except (TypeError, ValueError):
        raise CAConfigError(
            f"error decoding config: 'PrivateKeyBits': cannot parse {config['PrivateKeyBits']!r}"
        ) from None
    found = CASettings(
        leaf_ttl_s=_seconds(config, "LeafCertTTL"),
        intermediate_ttl_s=_seconds(config, "IntermediateCertTTL"),
        root_ttl_s=_seconds(config, "RootCertTTL"),
        key_type=key_type,
        key_bits=key_bits,
        private_key=str(config.get("PrivateKey") or ""),
        root_cert=str(config.get("RootCert") or ""),
    )
    if not _truthy(config.get("SkipValidate", False)):
        validate(found)
    return found


def validate(found: CASettings) -> None:
    """Consul's checks, in its order and with its texts."""
    if found.root_ttl_s < found.intermediate_ttl_s:
        raise CAConfigError(
            "root cert TTL is set and is not greater than intermediate cert ttl. "
            f"root cert ttl: {format_duration(found.root_ttl_s)}, "
            f"intermediate cert ttl: {format_duration(found.intermediate_ttl_s)}"
        )
    if found.leaf_ttl_s < MIN_LEAF_TTL_S:
        raise CAConfigError(
            f"leaf cert TTL must be greater or equal than {format_duration(MIN_LEAF_TTL_S)}"
        )
    if found.leaf_ttl_s > MAX_LEAF_TTL_S:
        raise CAConfigError(f"leaf cert TTL must be less than {format_duration(MAX_LEAF_TTL_S)}")
    if found.intermediate_ttl_s < 3 * INTERMEDIATE_RENEW_S:
        raise CAConfigError("Intermediate Cert TTL must be greater or equal than 3h")
    if found.intermediate_ttl_s < 3 * found.leaf_ttl_s:
        raise CAConfigError(
            "Intermediate Cert TTL must be greater or equal than 3 * LeafCertTTL "
            f"(>={format_duration(3 * found.leaf_ttl_s)})."
        )
    if found.key_type == "ec":
        if found.key_bits not in (224, 256, 384, 521):
            raise CAConfigError("EC key length must be one of (224, 256, 384, 521) bits")
    elif found.key_type == "rsa":
        if found.key_bits not in (2048, 4096):
            raise CAConfigError("RSA key length must be 2048 or 4096 bits")
    else:
        raise CAConfigError("private key type must be either 'ec' or 'rsa'")


def api_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a config map the built-in provider knows, in API spelling,
    each a plain string, number or boolean (what the log and RPC carry);
    CAConfigError for a value that is none of those or a number past int64."""
    out: dict[str, Any] = {}
    for key, value in api_keys(raw).items():
        if key not in _API_KEYS or value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise CAConfigError(f"error decoding config: '{key}': number out of range")
        if not isinstance(value, str | int | float | bool):
            raise CAConfigError(f"error decoding config: '{key}': expected a plain value")
        out[key] = value
    return out


def stored_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What the state keeps and the API shows: API spelling, Consul's defaults
    for what is missing, and neither `PrivateKey` nor `RootCert`."""
    config = {**DEFAULTS, **api_keys(raw)}
    return {key: value for key, value in config.items() if key not in SECRET_KEYS}


def generated_key_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the built-in provider would generate a different root key: the
    key type or size changed (Consul keys its provider state on them)."""
    before, after = stored_config(old), stored_config(new)
    return any(
        str(before.get(key)) != str(after.get(key)) for key in ("PrivateKeyType", "PrivateKeyBits")
    )
