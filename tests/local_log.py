"""A log that commits every entry at once: the server's endpoints without Raft.

For tests of the endpoints, ACLs and codecs that are about what a write does,
not how it is replicated (and the baseline of bench/raft_kv.py). Entries go
through msgpack on the way in, exactly as they do through Raft, so the state
machine never holds an object the caller can still mutate. This log applies
every command itself, so it runs the caller's `authorize` check, as the
leader does.
"""

from __future__ import annotations

from proconsul.server.endpoints import Authorize
from proconsul.state.fsm import FSM, decode_command, encode_command
from proconsul.structs.commands import ApplyResult, Command


class LocalLog:
    def __init__(self, fsm: FSM) -> None:
        self.fsm = fsm
        self.last_index = 0

    async def apply(
        self, command: Command, token: str = "", authorize: Authorize | None = None
    ) -> tuple[int, ApplyResult]:
        if authorize is not None:
            authorize(command, token)
        entry = decode_command(encode_command(command))
        self.last_index += 1
        return self.last_index, self.fsm.apply(self.last_index, entry)
