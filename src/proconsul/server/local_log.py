"""The dev agent's stand-in for Raft: a log that commits every entry at once.

Entries go through msgpack on the way in, exactly as they will through Raft, so
the state machine never holds an object the caller can still mutate. The
caller's token is ignored: the dev agent's endpoints authorized the command,
and nothing is forwarded.
"""

from __future__ import annotations

import msgspec

from proconsul.state.fsm import FSM
from proconsul.structs.commands import ApplyResult, Command

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Command)


class LocalLog:
    def __init__(self, fsm: FSM) -> None:
        self.fsm = fsm
        self.last_index = 0

    async def apply(self, command: Command, token: str = "") -> tuple[int, ApplyResult]:
        entry = _decoder.decode(_encoder.encode(command))
        self.last_index += 1
        return self.last_index, self.fsm.apply(self.last_index, entry)
