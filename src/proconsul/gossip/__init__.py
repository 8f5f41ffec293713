"""Gossip: SWIM membership with Lifeguard, encryption, and user events.

The protocol is a pure core (`swim.GossipCore`): events and `now` in, a frozen
`actions.Ready` out. Transport adapters (asyncio UDP/TCP) live outside this
package's pure modules and drive it; `tests/sim` drives it on a virtual network.
"""

from .actions import (
    MemberEvent,
    MemberEventKind,
    Ready,
    StreamPurpose,
    StreamRequest,
    UserEventRecord,
)
from .crypto import EncryptionPolicy, GossipSecurityError, Keyring, KeyringError, decode_key
from .messages import Address, MessageError, State
from .params import GossipParams, lan, local
from .state import Member
from .swim import GossipCore

__all__ = [
    "Address",
    "EncryptionPolicy",
    "GossipCore",
    "GossipParams",
    "GossipSecurityError",
    "Keyring",
    "KeyringError",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "MessageError",
    "Ready",
    "State",
    "StreamPurpose",
    "StreamRequest",
    "UserEventRecord",
    "decode_key",
    "lan",
    "local",
]
