"""Gossip encryption: key validation, keyring rules, sealing, and the policy matrix."""

from __future__ import annotations

import base64
import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proconsul.gossip import messages as m
from proconsul.gossip.crypto import (
    ENCRYPTION_VERSION,
    NONCE_SIZE,
    SEAL_OVERHEAD,
    EncryptionPolicy,
    GossipSecurityError,
    Keyring,
    KeyringError,
    decode_key,
    encode_key,
    looks_sealed,
)

K1, K2, K3 = bytes(range(32)), bytes(range(100, 116)), bytes(range(50, 74))
NONCE = b"\x07" * NONCE_SIZE
PLAIN = m.encode(m.Ping(1, "node-a"))


def counter_source() -> object:
    counter = itertools.count()

    def source(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return source


@pytest.mark.parametrize("size", [16, 24, 32])
def test_decode_key_accepts_aes_sizes(size: int) -> None:
    key = bytes(range(size))
    assert decode_key(base64.b64encode(key).decode()) == key
    assert decode_key(encode_key(key)) == key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!!", "not valid base64"),
        ("", "got 0"),
        (base64.b64encode(b"x" * 15).decode(), "got 15"),
        (base64.b64encode(b"x" * 33).decode(), "got 33"),
        (base64.b64encode(b"x" * 32).decode()[:-2], "not valid base64"),
    ],
)
def test_decode_key_refuses_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as info:
        decode_key(text)
    assert "Invalid key" in str(info.value)


def test_keyring_install_use_remove_follow_consul() -> None:
    ring = Keyring(K1)
    assert ring.primary == K1
    ring.install(K2)
    ring.install(K2)  # idempotent
    assert ring.keys() == (K1, K2)
    with pytest.raises(KeyringError, match="Requested key is not in the keyring"):
        ring.use(K3)
    ring.use(K2)
    assert ring.primary == K2
    assert set(ring.keys()) == {K1, K2}
    with pytest.raises(KeyringError, match="Removing the primary key is not allowed"):
        ring.remove(K2)
    with pytest.raises(KeyringError, match="Requested key is not in the keyring"):
        ring.remove(K3)
    ring.remove(K1)
    assert ring.keys() == (K2,)
    with pytest.raises(KeyringError):
        ring.install(b"short")


def test_keyring_file_list_round_trip_primary_first() -> None:
    ring = Keyring(K1, [K2, K3])
    ring.use(K3)
    listed = ring.to_list()
    assert listed[0] == encode_key(K3)
    again = Keyring.from_list(listed)
    assert again.keys() == ring.keys()
    with pytest.raises(KeyringError):
        Keyring.from_list([])


def test_seal_layout_and_open_with_any_installed_key() -> None:
    ring = Keyring(K1)
    sealed = ring.seal(PLAIN, NONCE)
    assert sealed[0] == ENCRYPTION_VERSION
    assert sealed[1 : 1 + NONCE_SIZE] == NONCE
    assert len(sealed) == len(PLAIN) + SEAL_OVERHEAD
    assert PLAIN not in sealed
    # A member that has installed the new key but still uses the old one as
    # primary opens packets sealed by either.
    other = Keyring(K2, [K1])
    assert other.open(sealed) == PLAIN
    assert other.open(other.seal(PLAIN, NONCE)) == PLAIN


def test_wrong_key_tampering_and_truncation_are_refused() -> None:
    sealed = Keyring(K1).seal(PLAIN, NONCE)
    with pytest.raises(GossipSecurityError) as info:
        Keyring(K2).open(sealed)
    assert info.value.reason == "decrypt_failed"
    for pos in (1, 1 + NONCE_SIZE, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[pos] ^= 0x01
        with pytest.raises(GossipSecurityError):
            Keyring(K1).open(bytes(tampered))
    for cut in range(len(sealed)):
        with pytest.raises(GossipSecurityError):
            Keyring(K1).open(sealed[:cut])
    # Sealed for UDP, replayed as a stream frame: the associated data differs.
    with pytest.raises(GossipSecurityError):
        Keyring(K1).open(Keyring(K1).seal(PLAIN, NONCE, b"udp"), b"tcp")


def test_nonce_must_be_twelve_bytes() -> None:
    with pytest.raises(ValueError):
        Keyring(K1).seal(PLAIN, b"short")


def test_policy_uses_fresh_nonces() -> None:
    policy = EncryptionPolicy(Keyring(K1))
    a, b = policy.seal(PLAIN), policy.seal(PLAIN)
    assert a != b
    assert a[1 : 1 + NONCE_SIZE] != b[1 : 1 + NONCE_SIZE]
    seeded = EncryptionPolicy(Keyring(K1)).seal(PLAIN, random_bytes=counter_source())  # type: ignore[arg-type]
    assert seeded[1 : 1 + NONCE_SIZE] == bytes(NONCE_SIZE)


@pytest.mark.parametrize(
    ("verify_incoming", "verify_outgoing", "sends_sealed", "accepts_plain"),
    [
        (False, False, False, True),  # rollout step 1: read both, send plain
        (False, True, True, True),  # step 2: send sealed, still read plain
        (True, True, True, False),  # step 3: sealed only
        (True, False, False, False),  # odd but allowed: sends plain, refuses plain
    ],
)
def test_policy_matrix(
    verify_incoming: bool, verify_outgoing: bool, sends_sealed: bool, accepts_plain: bool
) -> None:
    policy = EncryptionPolicy(Keyring(K1), verify_incoming, verify_outgoing)
    out = policy.seal(PLAIN)
    assert looks_sealed(out) is sends_sealed
    assert policy.encrypts is sends_sealed
    # Sealed packets are always accepted when they open.
    assert policy.open(Keyring(K1).seal(PLAIN, NONCE)) == PLAIN
    if accepts_plain:
        assert policy.open(PLAIN) == PLAIN
    else:
        with pytest.raises(GossipSecurityError) as info:
            policy.open(PLAIN)
        assert info.value.reason == "plaintext_refused"
    with pytest.raises(GossipSecurityError):
        policy.open(Keyring(K2).seal(PLAIN, NONCE))


def test_no_keyring_means_plaintext_and_refusing_sealed_packets() -> None:
    policy = EncryptionPolicy()
    assert policy.seal(PLAIN) == PLAIN
    assert policy.open(PLAIN) == PLAIN
    with pytest.raises(GossipSecurityError) as info:
        policy.open(Keyring(K1).seal(PLAIN, NONCE))
    assert info.value.reason == "no_keyring"
    with pytest.raises(GossipSecurityError):
        policy.open(b"")


def test_errors_never_show_key_material() -> None:
    ring = Keyring(K1)
    text = encode_key(K1)
    for attempt in (lambda: Keyring(K2).open(ring.seal(PLAIN, NONCE)), lambda: ring.remove(K1)):
        with pytest.raises((GossipSecurityError, KeyringError)) as info:
            attempt()
        assert text not in str(info.value)
        assert K1.hex() not in str(info.value)


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_fuzz_open_raises_only_security_errors(data: bytes) -> None:
    policy = EncryptionPolicy(Keyring(K1, [K2]))
    with contextlib.suppress(GossipSecurityError):
        policy.open(data)
