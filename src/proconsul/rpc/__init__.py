"""Server RPC: length-prefixed msgpack frames over TLS (or plaintext) TCP.

`RPCServer` serves named async handlers; `RPCClient` calls them over one
multiplexed connection per server; `tls` builds SSL contexts from Consul's
TLS settings; `codec` encodes the server endpoints' requests and answers
and gives callers typed results (the handlers are the server's, in
server/rpc_handlers.py). See each module for its rules.
"""

from proconsul.rpc.client import Address, RPCClient, parse_address
from proconsul.rpc.errors import ErrorCode, RPCError, TLSHandshakeError
from proconsul.rpc.frames import MAX_FRAME_SIZE, FrameError, FrameKind, FrameTooLarge
from proconsul.rpc.server import Handler, RPCServer, remaining_s
from proconsul.rpc.tls import PeerInfo, TLSConfigError

__all__ = [
    "MAX_FRAME_SIZE",
    "Address",
    "ErrorCode",
    "FrameError",
    "FrameKind",
    "FrameTooLarge",
    "Handler",
    "PeerInfo",
    "RPCClient",
    "RPCError",
    "RPCServer",
    "TLSConfigError",
    "TLSHandshakeError",
    "parse_address",
    "remaining_s",
]
