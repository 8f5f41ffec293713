"""One server process for bench/raft_kv.py: ServerEndpoints behind a TLS RPCServer,
writing through a RaftLog (SQLite under --data-dir) or, as the baseline, a LocalLog.

    python bench/raft_server.py --id s0 --port 8300 --pki DIR --data-dir DIR \\
        --peers s0=127.0.0.1:8300,s1=127.0.0.1:8301,s2=127.0.0.1:8302
    python bench/raft_server.py --local --port 8400 --pki DIR

Mutual TLS as the walkthrough configures it (verify_incoming, verify_outgoing,
verify_server_hostname; Raft.Step only for server certificates). Prints
"ready" once it listens, then runs until stdin closes. A bench-only method,
"Bench.Leader", answers this server's view of the leader's address ("" when
none), so the load can aim at the leader.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import msgspec
import uvloop

# The baseline log lives with the tests (it is no part of the agent).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.local_log import LocalLog

from proconsul.raft import Server, params_from_multiplier
from proconsul.rpc import PeerInfo, RPCClient, RPCServer
from proconsul.rpc.codec import EndpointsClient
from proconsul.rpc.testing import CertFiles, tls_settings
from proconsul.rpc.tls import client_context, server_context
from proconsul.server.endpoints import ServerEndpoints
from proconsul.server.leader_router import LeaderRouter
from proconsul.server.raft_log import RaftLog
from proconsul.server.raft_rpc import raft_handlers
from proconsul.server.rpc_handlers import endpoint_handlers
from proconsul.state.fsm import FSM
from proconsul.state.store import StateStore


def _files(pki_dir: str, name: str) -> CertFiles:
    return CertFiles(os.path.join(pki_dir, f"{name}.pem"), os.path.join(pki_dir, f"{name}-key.pem"))


async def serve(args: argparse.Namespace) -> None:
    ca_file = os.path.join(args.pki, "ca.pem")
    cert = _files(args.pki, "server")
    server_ctx = server_context(tls_settings(ca_file=ca_file, cert=cert, verify_incoming=True))
    client = RPCClient(
        client_context(
            tls_settings(
                ca_file=ca_file, cert=cert, verify_outgoing=True, verify_server_hostname=True
            )
        ),
        "server.dc1.consul",
    )
    store = StateStore()
    fsm = FSM(store)
    address = f"127.0.0.1:{args.port}"
    raft: RaftLog | None = None
    if args.local:
        endpoints = ServerEndpoints(store, LocalLog(fsm), "dc1")
    else:
        params = params_from_multiplier(
            args.raft_multiplier, snapshot_threshold=args.snapshot_threshold
        )
        raft = RaftLog(args.id, address, fsm, client, data_dir=args.data_dir, params=params)
        endpoints = ServerEndpoints(store, LeaderRouter(raft, EndpointsClient(client)), "dc1")

    async def leader(payload: bytes, peer: PeerInfo) -> bytes:
        if raft is None:
            return msgspec.msgpack.encode(address)
        return msgspec.msgpack.encode(raft.leader_address() or "")

    handlers = {**endpoint_handlers(endpoints), "Bench.Leader": leader}
    rpc = RPCServer(handlers, ssl_context=server_ctx)
    await rpc.start("127.0.0.1", args.port)
    if raft is not None:
        await raft.start()
        handlers.update(raft_handlers(raft, endpoints, require_server_cert=True))
        peers = [p.split("=", 1) for p in args.peers.split(",")]
        raft.bootstrap([Server(peer_id, peer_address) for peer_id, peer_address in peers])
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    if args.stats and raft is not None:
        print(f"{args.id} {msgspec.json.encode(raft.stats()).decode()}", file=sys.stderr)
    await rpc.close()
    if raft is not None:
        await raft.close()
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--id", default="s0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pki", required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--peers", default="")
    parser.add_argument("--local", action="store_true", help="LocalLog baseline, no Raft")
    parser.add_argument("--raft-multiplier", type=int, default=1)
    parser.add_argument("--snapshot-threshold", type=int, default=16384)
    parser.add_argument("--stats", action="store_true", help="print RaftLog.stats() at exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
