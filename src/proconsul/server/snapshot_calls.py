"""`Snapshot.Save` and `Snapshot.Restore`: backing up the whole state and putting it back.

Job: the server half of `GET` and `PUT /v1/snapshot`, served through the
operator table (server/operator.py): in process for the server's own HTTP
API, as RPC handlers for client agents and followers.

Rules (Consul's):
- Both need a management token: `acl:write` (`SnapshotAllowed`); checked on
  the server that answers, as every operator call.
- Save is answered by the leader, or by any server with `stale`: the state
  store serialized at one instant (state/snapshot.py), wrapped in an archive
  (state/snapshot_archive.py) with the store's index, the current term and
  the time; the reply is `{"Index", "Archive"}`. Serializing is at once, on
  the loop, so the snapshot is one point in time; compressing runs on a
  thread.
- Restore verifies the archive on the server that takes it, before anything
  else (a corrupt or truncated one is `BAD_QUERY` naming what failed), then
  the leader verifies it again and writes it through Raft as one
  `SnapshotRestoreRequest`, so every server replaces its state at the same
  log index. Restored rows keep their indexes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from proconsul.rpc import RPCError
from proconsul.rpc.errors import ErrorCode
from proconsul.server.endpoints import ServerEndpoints
from proconsul.server.leader_router import LeaderRouter
from proconsul.server.raft_log import RaftLog
from proconsul.state.snapshot import SnapshotError
from proconsul.state.snapshot_archive import build_archive, read_archive
from proconsul.structs.commands import ApplyError, SnapshotRestoreRequest
from proconsul.structs.rpc import OperatorRequest

log = logging.getLogger("proconsul.agent")

SAVE_METHOD = "Snapshot.Save"
RESTORE_METHOD = "Snapshot.Restore"

Check = Callable[[], None]


class SnapshotHost(Protocol):
    @property
    def raft(self) -> RaftLog: ...

    @property
    def router(self) -> LeaderRouter: ...

    @property
    def endpoints(self) -> ServerEndpoints: ...


def _payload(request: OperatorRequest) -> bytes:
    return msgspec.msgpack.encode(request)


def leader_answer(found: Any) -> Any:
    """What `LeaderRouter.call` gave back: the value served here, or the
    leader's msgpack answer decoded."""
    if isinstance(found, bytes):
        return msgspec.msgpack.decode(found)
    return found


async def verify_archive(archive: bytes) -> None:
    """Refuse an archive that is not intact (BAD_QUERY saying what failed)."""
    try:
        await asyncio.to_thread(read_archive, archive)
    except SnapshotError as exc:
        raise RPCError(f"snapshot restore failed: {exc}", ErrorCode.BAD_QUERY) from None


class SnapshotCalls:
    def __init__(self, host: SnapshotHost) -> None:
        self.host = host

    async def save(self, request: OperatorRequest, check: Check) -> dict[str, Any]:
        async def here() -> dict[str, Any]:
            check()
            store = self.host.endpoints.store
            state = store.snapshot()  # one instant: nothing applies while this runs
            index = max(store.last_index, 1)
            term = self.host.raft.status().term
            now_ms = int(time.time() * 1000)
            archive = await asyncio.to_thread(build_archive, state, index, term, now_ms)
            log.info("agent: snapshot saved at index %d (%d bytes)", index, len(archive))
            return {"Index": index, "Archive": archive}

        if request.stale:
            return await here()
        saved: dict[str, Any] = leader_answer(
            await self.host.router.call(SAVE_METHOD, _payload(request), here)
        )
        return saved

    async def restore(self, request: OperatorRequest, check: Check) -> dict[str, Any]:
        # The caller's rights first, where the archive arrives: a caller who may
        # not restore learns nothing of how the archive was judged. The leader
        # checks again when it applies.
        check()
        await verify_archive(request.data)

        async def here() -> dict[str, Any]:
            check()
            index, result = await self.host.raft.apply(SnapshotRestoreRequest(request.data))
            if isinstance(result, ApplyError):
                raise RPCError(result.message, ErrorCode.BAD_QUERY)
            log.info("agent: snapshot restored at index %d", index)
            return {"Index": index}

        restored: dict[str, Any] = leader_answer(
            await self.host.router.call(RESTORE_METHOD, _payload(request), here)
        )
        return restored
