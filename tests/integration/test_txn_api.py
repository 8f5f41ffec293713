"""PUT /v1/txn on a real dev agent: all or nothing, cas conflicts, limits, bad
input, read-only transactions as reads, and per-operation ACL refusals."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any

from tests.agent_process import AgentProcess

MGMT = "7a7a0000-0000-4000-8000-00000000000a"
LIMITED = "7a7a0000-0000-4000-8000-00000000000b"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def txn(agent: AgentProcess, ops: list[Any], token: str = "", query: str = "") -> tuple[int, Any]:
    headers = {"X-Consul-Token": token} if token else {}
    status, _, body = agent.request("PUT", "/v1/txn" + query, ops, headers=headers)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def kv(verb: str, key: str, value: str | None = None, index: int | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = b64(value)
    if index is not None:
        op["Index"] = index
    return {"KV": op}


def test_no_partial_transaction_is_ever_visible(dev_agent: AgentProcess) -> None:
    keys = [f"atom/{i}" for i in range(8)]
    stop = threading.Event()
    seen_mixed: list[Any] = []
    errors: list[str] = []

    def writer(name: str) -> Callable[[], None]:
        def run() -> None:
            for round_no in range(25):
                value = f"{name}-{round_no}"
                status, body = txn(dev_agent, [kv("set", k, value) for k in keys])
                if status != 200:
                    errors.append(f"{status} {body}")

        return run

    def reader() -> None:
        while not stop.is_set():
            status, _, body = dev_agent.request("GET", "/v1/kv/atom/?recurse")
            if status == 404:
                continue
            rows = json.loads(body)
            values = {row["Value"] for row in rows}
            indexes = {row["ModifyIndex"] for row in rows}
            if len(rows) != len(keys) or len(values) != 1 or len(indexes) != 1:
                seen_mixed.append(rows)
            # A read-only transaction sees the same all-or-nothing state.
            status, reply = txn(dev_agent, [kv("get-tree", "atom/")])
            if status == 200:
                txn_values = {r["KV"]["Value"] for r in reply["Results"]}
                if len(txn_values) != 1:
                    seen_mixed.append(reply)

    writers = [threading.Thread(target=writer(f"w{i}")) for i in range(3)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    assert seen_mixed == []
    # A transaction whose last operation fails leaves none of its writes behind.
    status, reply = txn(
        dev_agent,
        [kv("set", "atom/0", "partial"), kv("delete", "atom/1"), kv("get", "atom/missing")],
    )
    assert status == 409
    assert reply["Results"] is None
    assert reply["Errors"] == [{"OpIndex": 2, "What": 'key "atom/missing" doesn\'t exist'}]
    rows = dev_agent.get_json("/v1/kv/atom/?recurse")
    assert len(rows) == len(keys) and "partial" not in {base64.b64decode(r["Value"]) for r in rows}


def test_cas_conflict_and_results(dev_agent: AgentProcess) -> None:
    status, reply = txn(dev_agent, [kv("set", "c/a", "1"), kv("get", "c/a")])
    assert status == 200
    set_row, get_row = reply["Results"][0]["KV"], reply["Results"][1]["KV"]
    assert set_row["Value"] is None and get_row["Value"] == b64("1")
    index = get_row["ModifyIndex"]
    first = txn(dev_agent, [kv("cas", "c/a", "2", index), kv("set", "c/b", "x")])
    second = txn(dev_agent, [kv("set", "c/c", "y"), kv("cas", "c/a", "3", index)])
    assert first[0] == 200
    assert second == (
        409,
        {
            "Results": None,
            "Errors": [{"OpIndex": 1, "What": 'failed to set key "c/a", index is stale'}],
        },
    )
    assert dev_agent.request("GET", "/v1/kv/c/c")[0] == 404
    assert dev_agent.request("GET", "/v1/kv/c/a?raw")[2] == b"2"


def test_catalog_ops(dev_agent: AgentProcess) -> None:
    status, reply = txn(
        dev_agent,
        [
            {"Node": {"Verb": "set", "Node": {"Node": "txn-node", "Address": "10.1.1.1"}}},
            {
                "Service": {
                    "Verb": "set",
                    "Node": "txn-node",
                    "Service": {"ID": "web1", "Service": "web", "Port": 80},
                }
            },
            {
                "Check": {
                    "Verb": "set",
                    "Check": {
                        "Node": "txn-node",
                        "CheckID": "c1",
                        "Name": "c",
                        "ServiceID": "web1",
                    },
                }
            },
        ],
    )
    assert status == 200, reply
    assert [next(iter(r)) for r in reply["Results"]] == ["Node", "Service", "Check"]
    rows = dev_agent.get_json("/v1/health/service/web")
    assert rows[0]["Node"]["Node"] == "txn-node" and rows[0]["Checks"][0]["CheckID"] == "c1"
    status, reply = txn(
        dev_agent,
        [{"Service": {"Verb": "get", "Node": "txn-node", "Service": {"ID": "nope"}}}],
    )
    assert status == 409
    assert reply["Errors"][0]["What"] == 'service "nope" on node "txn-node" doesn\'t exist'


def test_keys_in_any_case(dev_agent: AgentProcess) -> None:
    ops = [{"kv": {"verb": "set", "key": "case/a", "value": b64("1")}}]
    status, reply = txn(dev_agent, ops)
    assert status == 200 and reply["Results"][0]["KV"]["Key"] == "case/a", reply


def test_limit_and_malformed_operations(dev_agent: AgentProcess) -> None:
    status, body = txn(dev_agent, [kv("set", f"l/{i}", "v") for i in range(129)])
    assert status == 413 and body == "Transaction contains too many operations (129 > 128)"
    assert txn(dev_agent, [kv("set", f"l/{i}", "v") for i in range(128)])[0] == 200
    bad = [
        (
            [kv("set", "ok", "v"), {"KV": {"Verb": "explode", "Key": "x"}}],
            "operation 1: unknown KV verb",
        ),
        ([kv("set", "ok", "v"), 7], "operation 1: not an object"),
        ([{"KV": {"Verb": "set", "Key": "a"}, "Node": {}}], "operation 0: needs exactly one"),
        ([kv("set", "ok", "v"), {"KV": {"Verb": "set", "Key": 5}}], "operation 1: KV:"),
        ([kv("set", "", "v")], "operation 0: KV operation needs a Key"),
        ([{"KV": {"Verb": "lock", "Key": "a"}}], "operation 0: KV lock operation needs a Session"),
    ]
    for ops, text in bad:
        status, body = txn(dev_agent, ops)
        assert status == 400 and text in body, (ops, status, body)
    assert dev_agent.request("GET", "/v1/kv/ok")[0] == 404


def test_read_only_transaction_is_a_read(dev_agent: AgentProcess) -> None:
    txn(dev_agent, [kv("set", "r/a", "1")])
    for query in ("", "?stale", "?consistent"):
        status, reply = txn(dev_agent, [kv("get", "r/a")], query=query)
        assert status == 200 and reply["Results"][0]["KV"]["Value"] == b64("1")
    status, headers, _ = dev_agent.request("PUT", "/v1/txn?stale", [kv("get", "r/a")])
    assert headers.get("X-Consul-KnownLeader") == "true" and "X-Consul-Index" in headers
    status, headers, _ = dev_agent.request("PUT", "/v1/txn", [kv("set", "r/b", "1")])
    assert status == 200 and "X-Consul-KnownLeader" not in headers


def test_acl_refusal_names_the_operation(agent_factory: Callable[..., AgentProcess]) -> None:
    tokens = f'tokens {{ initial_management = "{MGMT}" }}'
    hcl = f'acl {{ enabled = true default_policy = "deny" {tokens} }}'
    agent = agent_factory("-hcl", hcl)
    mgmt = {"X-Consul-Token": MGMT}
    status, _, body = agent.request(
        "PUT",
        "/v1/acl/policy",
        {"Name": "a-only", "Rules": 'key_prefix "a/" { policy = "write" }'},
        mgmt,
    )
    assert status == 200, body
    status, _, body = agent.request(
        "PUT",
        "/v1/acl/token",
        {"SecretID": LIMITED, "Policies": [{"Name": "a-only"}]},
        mgmt,
    )
    assert status == 200, body
    status, reply = txn(agent, [kv("set", "a/1", "v"), kv("set", "b/1", "v")], token=LIMITED)
    assert status == 409
    (error,) = reply["Errors"]
    assert error["OpIndex"] == 1
    assert error["What"].startswith("Permission denied") and "key:write" in error["What"]
    assert agent.request("GET", "/v1/kv/a/1", headers=mgmt)[0] == 404
    status, reply = txn(agent, [kv("get", "b/1")], token=LIMITED)
    assert status == 409 and reply["Errors"][0]["OpIndex"] == 0
    assert txn(agent, [kv("set", "a/1", "v")], token=LIMITED)[0] == 200


def test_lock_and_check_session_in_a_transaction(dev_agent: AgentProcess) -> None:
    status, _, body = dev_agent.request("PUT", "/v1/session/create", {"Name": "txn-lock"})
    assert status == 200, body
    session = json.loads(body)["ID"]
    lock = {"KV": {"Verb": "lock", "Key": "txn/leader", "Value": b64("me"), "Session": session}}
    check = {"KV": {"Verb": "check-session", "Key": "txn/leader", "Session": session}}
    status, reply = txn(dev_agent, [lock, check])
    assert status == 200, reply
    entry = dev_agent.get_json("/v1/kv/txn/leader")[0]
    assert (entry["Session"], entry["LockIndex"]) == (session, 1)
    # A session that does not hold it fails the check, and nothing else in the
    # transaction lands.
    status, reply = txn(
        dev_agent, [kv("set", "txn/side", "x"), {"KV": {**check["KV"], "Session": "s"}}]
    )
    assert status == 409
    assert reply["Errors"] == [
        {
            "OpIndex": 1,
            "What": 'failed session check for key "txn/leader", '
            f'current session "{session}" != "s"',
        }
    ]
    assert dev_agent.request("GET", "/v1/kv/txn/side")[0] == 404
    unlock = {"KV": {"Verb": "unlock", "Key": "txn/leader", "Session": session}}
    assert txn(dev_agent, [unlock])[0] == 200
    assert dev_agent.get_json("/v1/kv/txn/leader")[0].get("Session", "") == ""
