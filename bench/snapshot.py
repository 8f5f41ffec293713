"""Snapshot save and restore of N KV keys, vs writing the same keys through the API, same run.

Issue #16's shape: a dev agent (in memory, the same Raft path and FSM as a
server) gets N keys (default 100,000; 64-byte values) written through the
HTTP API, timed two ways: plain `PUT /v1/kv/<key>` for a sample of keys from
8 client threads (the rate is extrapolated to N), and all N in batches of
128 through `PUT /v1/txn`. Then `GET /v1/snapshot` (save) and
`PUT /v1/snapshot` of that archive (restore: verify, one Raft entry, replace
the store) are timed, the archive size and the state's size are printed, and
the key count is checked after the restore.

    .venv/bin/python bench/snapshot.py [--keys 100000] [--rounds 3]

Prints medians over rounds of save and restore; asserts nothing about speed.
A request answered other than 2xx fails the run.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from _harness import start_dev_agent

TXN_BATCH = 128
PUT_SAMPLE = 2000
PUT_THREADS = 8


def request(method: str, url: str, body: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(req, timeout=300) as resp:
        return bytes(resp.read()), dict(resp.headers)


def write_with_txn(base: str, keys: int) -> float:
    """Each key its own random 64-byte value, so the archive compresses as real data would."""
    values = [base64.b64encode(os.urandom(32).hex().encode()).decode() for _ in range(keys)]
    started = time.perf_counter()
    for first in range(0, keys, TXN_BATCH):
        ops = [
            {"KV": {"Verb": "set", "Key": f"bench/{i:08d}", "Value": values[i]}}
            for i in range(first, min(keys, first + TXN_BATCH))
        ]
        request("PUT", base + "/v1/txn", json.dumps(ops).encode())
    return time.perf_counter() - started


def write_with_put(base: str, count: int, value: bytes) -> float:
    def put(i: int) -> None:
        request("PUT", f"{base}/v1/kv/sample/{i:08d}", value)

    started = time.perf_counter()
    with ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(put, range(count)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    proc, base = start_dev_agent()
    try:
        value = os.urandom(32).hex().encode()  # 64 bytes
        sample = min(PUT_SAMPLE, args.keys)
        put_s = write_with_put(base, sample, value)
        request("DELETE", base + "/v1/kv/sample/?recurse")
        txn_s = write_with_txn(base, args.keys)
        saves, restores = [], []
        archive = b""
        for _ in range(args.rounds):
            started = time.perf_counter()
            archive, headers = request("GET", base + "/v1/snapshot")
            saves.append(time.perf_counter() - started)
            started = time.perf_counter()
            request("PUT", base + "/v1/snapshot", archive)
            restores.append(time.perf_counter() - started)
        keys_after, _ = request("GET", base + "/v1/kv/bench/?keys")
        assert len(json.loads(keys_after)) == args.keys, "restore lost keys"
        unpacked = len(gzip.decompress(archive))
        put_all_s = put_s * args.keys / sample
        save_s, restore_s = statistics.median(saves), statistics.median(restores)
        print(f"keys: {args.keys} (random 64-byte values), index {headers.get('X-Consul-Index')}")
        print(
            f"write, PUT /v1/kv x{PUT_THREADS} threads: {sample / put_s:,.0f} keys/s "
            f"(all keys: ~{put_all_s:.1f} s, extrapolated)"
        )
        print(
            f"write, PUT /v1/txn x{TXN_BATCH}:        {args.keys / txn_s:,.0f} keys/s "
            f"(all keys: {txn_s:.2f} s)"
        )
        print(f"snapshot save (GET):   median {save_s * 1000:,.0f} ms over {args.rounds}")
        print(f"snapshot restore (PUT): median {restore_s * 1000:,.0f} ms over {args.rounds}")
        print(
            f"archive: {len(archive) / 1e6:.2f} MB gzipped, {unpacked / 1e6:.2f} MB unpacked "
            f"({len(archive) / args.keys:.0f} bytes/key)"
        )
        print(f"save/write ratios: {save_s / txn_s:.3f} (txn), {save_s / put_all_s:.4f} (PUT)")
        txn_ratio, put_ratio = restore_s / txn_s, restore_s / put_all_s
        print(f"restore/write ratios: {txn_ratio:.3f} (txn), {put_ratio:.4f} (PUT)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
