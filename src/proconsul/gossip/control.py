"""Control messages between gossip adapters: pool-wide keyring operations and refusals.

Job: the few messages that travel over the gossip TCP port but are not SWIM:
a keyring request (list, install, use, remove) sent to every member, its
reply, and the refusal an adapter sends back when it cannot accept a frame
(so the sender can log why a join failed). Also the pure pieces around them:
applying a keyring operation to the local keyring and folding the members'
replies into Consul's `KeyringResponse` numbers.

Rules:
- Wire layout: one marker byte `0xC1` then a msgpack message. 0xC1 is never
  a valid first byte of msgpack (nor the encryption version byte), so control
  frames and gossip frames cannot be confused.
- Keyring requests and replies travel sealed with the keyring whatever
  `encrypt_verify_outgoing` says, and an unsealed one is refused: only members
  holding a key may change keys. Refusals are sent unsealed (the peer could
  not talk to us securely anyway) and carry only a reason code.
- Message tags are APPEND-ONLY, like messages.py.
- Pure: no I/O; keys never appear in messages meant for logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Annotated, Literal

import msgspec

from .crypto import Keyring, KeyringError, encode_key
from .messages import MessageError

CONTROL_MARK = b"\xc1"

KeyringOp = Literal["list", "install", "use", "remove"]
KEYRING_OPS: tuple[KeyringOp, ...] = ("list", "install", "use", "remove")

RawKey = Annotated[bytes, msgspec.Meta(max_length=64)]

NO_KEYRING = "No keyring to modify (encryption not enabled)"
NO_KEYRING_LIST = "Keyring is empty (encryption not enabled)"


class ControlTag(IntEnum):
    """Control message type numbers. Append-only."""

    KEYRING_REQUEST = 1
    KEYRING_REPLY = 2
    REFUSAL = 3


class KeyringRequest(
    msgspec.Struct, tag=int(ControlTag.KEYRING_REQUEST), array_like=True, frozen=True
):
    op: Annotated[str, msgspec.Meta(max_length=16)]
    key: RawKey


class KeyringReply(msgspec.Struct, tag=int(ControlTag.KEYRING_REPLY), array_like=True, frozen=True):
    ok: bool
    message: Annotated[str, msgspec.Meta(max_length=512)]
    keys: Annotated[list[RawKey], msgspec.Meta(max_length=64)]
    primary: RawKey


class Refusal(msgspec.Struct, tag=int(ControlTag.REFUSAL), array_like=True, frozen=True):
    """Why a frame was not accepted: a GossipSecurityError reason code."""

    reason: Annotated[str, msgspec.Meta(max_length=64)]


Control = KeyringRequest | KeyringReply | Refusal

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Control] = msgspec.msgpack.Decoder(Control)


def is_control(data: bytes) -> bool:
    return data[:1] == CONTROL_MARK


def encode_control(msg: Control) -> bytes:
    return CONTROL_MARK + _encoder.encode(msg)


def decode_control(data: bytes) -> Control:
    """Decode a control frame; raises MessageError on anything else."""
    if not is_control(data):
        raise MessageError("not a control frame")
    try:
        return _decoder.decode(data[1:])
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise MessageError(str(exc)) from None


def apply_keyring_op(keyring: Keyring | None, op: str, key: bytes) -> KeyringReply:
    """Run one keyring operation on this member's keyring (mutating it) and say how it went.

    The caller persists the keyring after a successful install, use or remove.
    """
    if keyring is None:
        message = NO_KEYRING_LIST if op == "list" else NO_KEYRING
        return KeyringReply(False, message, [], b"")
    try:
        if op == "install":
            keyring.install(key)
        elif op == "use":
            keyring.use(key)
        elif op == "remove":
            keyring.remove(key)
        elif op != "list":
            return KeyringReply(False, f"unknown keyring operation {op[:16]!r}", [], b"")
    except KeyringError as exc:
        return KeyringReply(False, str(exc), list(keyring.keys()), keyring.primary)
    return KeyringReply(True, "", list(keyring.keys()), keyring.primary)


class KeyringSummary(msgspec.Struct):
    """Replies from the pool folded into serf's KeyResponse numbers."""

    num_nodes: int
    num_resp: int
    num_err: int
    keys: dict[str, int]
    primary_keys: dict[str, int]
    messages: dict[str, str]

    def error(self) -> str | None:
        """serf's summary error, or None when every member answered without error."""
        if self.num_err:
            return f"{self.num_err}/{self.num_nodes} nodes reported failure"
        if self.num_resp != self.num_nodes:
            return f"{self.num_resp}/{self.num_nodes} nodes reported success"
        return None


def summarize(replies: Mapping[str, KeyringReply | str], num_nodes: int) -> KeyringSummary:
    """Fold each member's reply (or the text of why it could not answer) into counts.

    As in serf, an error reply still counts as a response and its keys are
    counted; a member that could not be reached is an error without keys.
    """
    keys: dict[str, int] = {}
    primary_keys: dict[str, int] = {}
    messages: dict[str, str] = {}
    num_resp = 0
    num_err = 0
    for node, reply in replies.items():
        if isinstance(reply, str):
            messages[node] = reply
            num_err += 1
            continue
        num_resp += 1
        if not reply.ok:
            messages[node] = reply.message
            num_err += 1
        for raw in reply.keys:
            text = encode_key(raw)
            keys[text] = keys.get(text, 0) + 1
        if reply.primary:
            text = encode_key(reply.primary)
            primary_keys[text] = primary_keys.get(text, 0) + 1
    return KeyringSummary(
        num_nodes=max(num_nodes, num_resp),
        num_resp=num_resp,
        num_err=num_err,
        keys=keys,
        primary_keys=primary_keys,
        messages=messages,
    )
