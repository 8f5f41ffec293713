"""Services and checks registered over the HTTP API, kept in the data dir across restarts.

Job: as Consul does, write one file per API-registered service
(`<data_dir>/services/<hash of ID>`) and per check (`<data_dir>/checks/<hash of ID>`),
and read them back at start. Config-file services and checks are not kept: their
files are their source.

Rules:
- Files hold the service token and check tokens, so they are written 0600,
  atomically (`fileio.write_private_file`), in 0700 directories.
- A service file holds the registration as built (before central config is
  merged, with a sidecar's assigned port) and, for a sidecar this agent
  expanded, its parent's ID; a check file holds the catalog row and the
  definition that runs it. A TTL check's file is rewritten on each update, so
  its last status survives a restart instead of flapping to critical.
- Removing a service or check removes its file; a file that is missing is fine.
- A file that does not decode is logged and moved aside (`<file>.corrupt`);
  it never stops the agent.
- Nothing here logs a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from proconsul.fileio import write_private_file
from proconsul.structs.catalog import HealthCheck, NodeService
from proconsul.structs.definitions import CheckDefinition
from proconsul.structs.duration import dec_hook, enc_hook

log = logging.getLogger("proconsul.agent")

T = TypeVar("T")

SERVICES_DIR = "services"
CHECKS_DIR = "checks"
CORRUPT_SUFFIX = ".corrupt"


class PersistedService(msgspec.Struct, rename="pascal"):
    service: NodeService
    token: str = ""
    sidecar_for: str = ""

    def __repr__(self) -> str:
        return f"PersistedService(id={self.service.id!r}, token=<redacted>)"


class PersistedCheck(msgspec.Struct, rename="pascal"):
    check: HealthCheck
    definition: CheckDefinition
    token: str = ""

    def __repr__(self) -> str:
        return f"PersistedCheck(id={self.check.check_id!r}, token=<redacted>)"


@dataclass
class Loaded:
    services: list[PersistedService]
    checks: list[PersistedCheck]


def file_name(item_id: str) -> str:
    """The file of a service or check ID (a hash: IDs may hold any character)."""
    return hashlib.sha256(item_id.encode()).hexdigest()


class PersistedRegistrations:
    """The data dir's copy of API registrations; a no-op without a data dir."""

    def __init__(self, data_dir: str) -> None:
        self.enabled = bool(data_dir)
        self._services_dir = os.path.join(data_dir, SERVICES_DIR)
        self._checks_dir = os.path.join(data_dir, CHECKS_DIR)
        self._encoder = msgspec.json.Encoder(enc_hook=enc_hook)
        self._service_decoder = msgspec.json.Decoder(PersistedService, dec_hook=dec_hook)
        self._check_decoder = msgspec.json.Decoder(PersistedCheck, dec_hook=dec_hook)

    def save_service(self, service: NodeService, token: str, sidecar_for: str = "") -> None:
        if self.enabled:
            item = PersistedService(service=service, token=token, sidecar_for=sidecar_for)
            self._write(self._services_dir, service.id, self._encoder.encode(item))

    def save_check(self, row: HealthCheck, definition: CheckDefinition, token: str) -> None:
        if self.enabled:
            item = PersistedCheck(check=row, definition=definition, token=token)
            self._write(self._checks_dir, row.check_id, self._encoder.encode(item))

    def remove_service(self, service_id: str) -> None:
        if self.enabled:
            self._remove(self._services_dir, service_id)

    def remove_check(self, check_id: str) -> None:
        if self.enabled:
            self._remove(self._checks_dir, check_id)

    def load(self) -> Loaded:
        """Every readable file; a corrupt one is logged and moved aside."""
        if not self.enabled:
            return Loaded([], [])
        services = self._load_dir(self._services_dir, self._service_decoder, "service")
        checks = self._load_dir(self._checks_dir, self._check_decoder, "check")
        return Loaded(services, checks)

    def _write(self, directory: str, item_id: str, body: bytes) -> None:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            write_private_file(os.path.join(directory, file_name(item_id)), body)
        except OSError as exc:
            # The registration stands; only its survival across a restart is lost.
            log.error("agent: failed to persist %s: %s", item_id, exc.strerror or exc)

    def _remove(self, directory: str, item_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, file_name(item_id)))

    def _load_dir(self, directory: str, decoder: msgspec.json.Decoder[T], what: str) -> list[T]:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        found: list[T] = []
        for name in names:
            path = os.path.join(directory, name)
            if name.startswith(".") or name.endswith(CORRUPT_SUFFIX) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as handle:
                    found.append(decoder.decode(handle.read()))
            except (OSError, msgspec.DecodeError) as exc:
                log.error(
                    "agent: failed decoding persisted %s file %s, moved aside: %s",
                    what,
                    path,
                    exc,
                )
                with contextlib.suppress(OSError):
                    os.replace(path, path + CORRUPT_SUFFIX)
        return found
