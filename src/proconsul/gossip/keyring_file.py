"""The gossip keyring on disk: `data_dir/serf/local.keyring`.

Job: load the keyring an agent starts with and save it after every keyring
operation, so a restart keeps rotated keys, following Consul's rules:
- The file is a JSON list of base64 keys, primary first.
- `encrypt` only seeds a keyring that does not exist yet; once the file exists
  it wins, and a differing `encrypt` earns a warning (never the key itself).
- Dev mode, `disable_keyring_file` or no `data_dir`: the keyring lives in memory
  only (seeded from `encrypt`), and nothing is written.

Rules:
- Writes are atomic and 0600 (`fileio.write_private_file`); the `serf/`
  directory is created 0700.
- Errors name the file and the problem, never a key. A corrupt or empty file
  is an error at start (Consul refuses to start on one too), not silently replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from proconsul.fileio import write_private_file
from proconsul.gossip.crypto import Keyring, KeyringError, decode_key

KEYRING_DIR = "serf"
LAN_KEYRING_FILE = "local.keyring"
# Keyring files are a few hundred bytes; anything huge is not ours.
MAX_KEYRING_FILE_BYTES = 64 * 1024


class KeyringFileError(ValueError):
    """The keyring file cannot be used; the message names the file, never a key."""


def lan_keyring_path(data_dir: str) -> str:
    return os.path.join(data_dir, KEYRING_DIR, LAN_KEYRING_FILE)


@dataclass
class KeyringStore:
    """Where the keyring persists: a file path, or None for in-memory only."""

    path: str | None

    @property
    def persistent(self) -> bool:
        return self.path is not None

    def exists(self) -> bool:
        return self.path is not None and os.path.exists(self.path)

    def load(self) -> Keyring | None:
        """The keyring from the file; None if there is no file (or no path)."""
        if self.path is None:
            return None
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(MAX_KEYRING_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyringFileError(
                f"cannot read keyring file {self.path}: {exc.strerror}"
            ) from None
        if len(raw) > MAX_KEYRING_FILE_BYTES:
            raise KeyringFileError(f"keyring file {self.path} is too large")
        try:
            encoded = json.loads(raw)
        except ValueError:
            raise KeyringFileError(f"keyring file {self.path} is not valid JSON") from None
        if not isinstance(encoded, list) or not all(isinstance(k, str) for k in encoded):
            raise KeyringFileError(f"keyring file {self.path} must be a JSON list of keys")
        if not encoded:
            raise KeyringFileError(f"no keys present in keyring file {self.path}")
        try:
            return Keyring.from_list(encoded)
        except KeyringError as exc:
            raise KeyringFileError(f"keyring file {self.path}: {exc}") from None

    def save(self, keyring: Keyring) -> None:
        """Write the keyring atomically, 0600; a no-op for an in-memory keyring."""
        if self.path is None:
            return
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        data = json.dumps(keyring.to_list()).encode("ascii")
        write_private_file(self.path, data)


@dataclass(frozen=True)
class LoadedKeyring:
    keyring: Keyring | None
    store: KeyringStore
    # Set when `encrypt` was given but the existing keyring file won.
    warning: str | None = None


def load_lan_keyring(
    encrypt: str,
    data_dir: str,
    *,
    in_memory: bool,
    warn: Callable[[str], None] | None = None,
) -> LoadedKeyring:
    """The keyring an agent starts with (see the module docstring for the rules).

    `in_memory` is true for dev mode and `disable_keyring_file`. Raises
    KeyringFileError (or KeyringError for a bad `encrypt`) with a key-free message.
    """
    store = KeyringStore(None if in_memory or not data_dir else lan_keyring_path(data_dir))
    seed = decode_key(encrypt) if encrypt else None
    existing = store.load()
    if existing is None:
        if seed is None:
            return LoadedKeyring(None, store)
        keyring = Keyring(seed)
        store.save(keyring)
        return LoadedKeyring(keyring, store)
    warning = None
    if seed is not None and seed not in existing:
        warning = (
            f"the encrypt key from the configuration is not in the keyring file {store.path}; "
            "using the keyring file (encrypt only seeds a new keyring)"
        )
    elif seed is not None and seed != existing.primary:
        warning = (
            f"the encrypt key from the configuration is not the primary key of the keyring "
            f"file {store.path}; using the keyring file (encrypt only seeds a new keyring)"
        )
    if warning is not None and warn is not None:
        warn(warning)
    return LoadedKeyring(existing, store, warning)
