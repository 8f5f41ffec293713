"""Gossip encryption: the keyring, AES-GCM sealing and the plaintext policy.

Job: validate gossip keys, hold the keyring (one primary key that encrypts, any
number of others that are still accepted), seal outgoing packets and open
incoming ones under Consul's `encrypt_verify_incoming/outgoing` rules.

Rules:
- Pure: no I/O. Nonces come from a caller-supplied random source (the adapter
  passes `os.urandom`); the default is `os.urandom` so nothing ever reuses one.
- Sealed layout: version byte (1) | 12-byte nonce | ciphertext | 16-byte tag.
  The version byte can never start a plaintext message (those start with a
  msgpack array header), so sealed and plain packets are told apart by byte 0.
- Every refusal raises `GossipSecurityError` with a short `reason` the caller
  counts; key material never appears in an error message.
- Keyring operations follow Consul: install adds, use needs an installed key,
  the primary can never be removed.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCRYPTION_VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
# Bytes sealing adds to a packet; the core reserves this much in each datagram.
SEAL_OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
KEY_SIZES = (16, 24, 32)

RandomSource = Callable[[int], bytes]


class KeyringError(ValueError):
    """A key or keyring operation that Consul would refuse; the message is user-facing."""


class GossipSecurityError(Exception):
    """An incoming packet refused by the encryption policy. Drop it and count `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def decode_key(text: str) -> bytes:
    """A gossip key from its base64 form; 16, 24 or 32 bytes (AES-128/192/256)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError("Invalid key: not valid base64") from None
    if len(raw) not in KEY_SIZES:
        raise KeyringError(f"Invalid key: key size must be 16, 24 or 32 bytes, got {len(raw)}")
    return raw


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


class Keyring:
    """The primary key plus older keys still accepted on receive.

    Order matters only for the primary, which is always first in `keys()`.
    """

    __slots__ = ("_ciphers", "_keys")

    def __init__(self, primary: bytes, others: Iterable[bytes] = ()) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        self._add(primary)
        for key in others:
            self._add(key)

    @classmethod
    def from_base64(cls, primary: str, others: Iterable[str] = ()) -> Keyring:
        return cls(decode_key(primary), [decode_key(k) for k in others])

    @classmethod
    def from_list(cls, encoded: Sequence[str]) -> Keyring:
        """From the keyring file's JSON list: base64 keys, primary first."""
        if not encoded:
            raise KeyringError("keyring is empty")
        return cls.from_base64(encoded[0], encoded[1:])

    def to_list(self) -> list[str]:
        """The keyring file's JSON list: base64 keys, primary first."""
        return [encode_key(k) for k in self._keys]

    def _add(self, key: bytes) -> None:
        if len(key) not in KEY_SIZES:
            raise KeyringError(f"Invalid key: key size must be 16, 24 or 32 bytes, got {len(key)}")
        if key not in self._ciphers:
            self._keys.append(key)
            self._ciphers[key] = AESGCM(key)

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    def keys(self) -> tuple[bytes, ...]:
        return tuple(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._ciphers

    def __len__(self) -> int:
        return len(self._keys)

    def install(self, key: bytes) -> None:
        """Accept `key` on receive. Installing a key twice is not an error."""
        self._add(key)

    def use(self, key: bytes) -> None:
        """Make an installed key the primary (the one that encrypts)."""
        if key not in self._ciphers:
            raise KeyringError("Requested key is not in the keyring")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        if key not in self._ciphers:
            raise KeyringError("Requested key is not in the keyring")
        if key == self._keys[0]:
            raise KeyringError("Removing the primary key is not allowed")
        self._keys.remove(key)
        del self._ciphers[key]

    def seal(self, plaintext: bytes, nonce: bytes, aad: bytes = b"") -> bytes:
        """Encrypt with the primary key."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        sealed = self._ciphers[self._keys[0]].encrypt(nonce, plaintext, aad or None)
        return b"".join((bytes((ENCRYPTION_VERSION,)), nonce, sealed))

    def open(self, data: bytes, aad: bytes = b"") -> bytes:
        """Decrypt with whichever installed key works, primary first."""
        if len(data) < SEAL_OVERHEAD or data[0] != ENCRYPTION_VERSION:
            raise GossipSecurityError("malformed", "not a sealed gossip packet")
        nonce = data[1 : 1 + NONCE_SIZE]
        body = data[1 + NONCE_SIZE :]
        for key in self._keys:
            try:
                return self._ciphers[key].decrypt(nonce, body, aad or None)
            except InvalidTag:
                continue
        raise GossipSecurityError("decrypt_failed", "no installed key decrypts the packet")


def looks_sealed(data: bytes) -> bool:
    """True if `data` is shaped like a sealed packet (it may still fail to open)."""
    return len(data) >= 1 and data[0] == ENCRYPTION_VERSION


@dataclass(slots=True)
class EncryptionPolicy:
    """Consul's `encrypt`, `encrypt_verify_incoming` and `encrypt_verify_outgoing`.

    - No keyring: everything travels in plaintext; sealed packets are refused.
    - `verify_outgoing`: seal everything we send with the primary key; when
      false we send plaintext even though a key is set (rollout step 1).
    - `verify_incoming`: refuse plaintext; when false accept it (rollout steps 1-2).
    Sealed packets must always open, whatever the flags say.
    """

    keyring: Keyring | None = None
    verify_incoming: bool = True
    verify_outgoing: bool = True

    @property
    def encrypts(self) -> bool:
        return self.keyring is not None and self.verify_outgoing

    def seal(
        self, plaintext: bytes, aad: bytes = b"", random_bytes: RandomSource | None = None
    ) -> bytes:
        """What to put on the wire for `plaintext`."""
        if self.keyring is None or not self.verify_outgoing:
            return plaintext
        source = random_bytes if random_bytes is not None else os.urandom
        return self.keyring.seal(plaintext, source(NONCE_SIZE), aad)

    def open(self, data: bytes, aad: bytes = b"") -> bytes:
        """The plaintext of a received packet, or GossipSecurityError."""
        if not data:
            raise GossipSecurityError("malformed", "empty packet")
        if looks_sealed(data):
            if self.keyring is None:
                raise GossipSecurityError(
                    "no_keyring", "encrypted packet but encryption is not configured"
                )
            return self.keyring.open(data, aad)
        if self.keyring is not None and self.verify_incoming:
            raise GossipSecurityError(
                "plaintext_refused", "plaintext packet refused: encryption is required"
            )
        return data
