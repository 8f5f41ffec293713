"""`GET /v1/agent/watch` (http/watch_routes.py): which reads can be followed, and
when a followed read sends an event."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proconsul.acl.errors import ACLDenied
from proconsul.http import watch_routes
from proconsul.http.watch_routes import follow, parse_watch_path


@pytest.mark.parametrize(
    ("path", "method", "name"),
    [
        ("/v1/health/state/any", "Health.ChecksInState", ""),
        ("/v1/health/service/api", "Health.ServiceNodes", "api"),
        ("/v1/health/service/a%2Fb", "Health.ServiceNodes", "a/b"),
        ("/v1/catalog/services", "Catalog.ListServices", ""),
        ("/v1/catalog/nodes", "Catalog.ListNodes", ""),
        ("/v1/kv/app/?recurse=true", "KVS.List", "app/"),
        ("/v1/kv/?recurse=true", "KVS.List", ""),
        ("/v1/connect/intentions", "Intention.List", ""),
    ],
)
def test_the_reads_a_view_shows_can_be_followed(path: str, method: str, name: str) -> None:
    found = parse_watch_path(path)
    assert found is not None and found.read is not None
    assert (found.method, found.read.name) == (method, name)


def test_config_kinds_and_acl_lists() -> None:
    config = parse_watch_path("/v1/config/service-intentions")
    assert config is not None and config.read is not None
    assert (config.method, config.read.kind) == ("ConfigEntry.List", "service-intentions")
    tokens = parse_watch_path("/v1/acl/tokens")
    assert tokens is not None and (tokens.method, tokens.acl_list) == ("", "tokens")


@pytest.mark.parametrize(
    "path",
    ["/v1/kv/app", "/v1/acl/token/x", "/v1/agent/self", "/etc/passwd", "", "/v1/config/a/b"],
)
def test_anything_else_cannot_be_followed(path: str) -> None:
    assert parse_watch_path(path) is None


async def run_follow(answers: list[Any]) -> list[dict[str, Any]]:
    """Feed `follow` the answers in turn (an exception is raised); its events."""
    sent: list[dict[str, Any]] = []
    asked: list[int] = []
    done = asyncio.Event()

    async def read(min_index: int) -> tuple[int, Any]:
        asked.append(min_index)
        if not answers:
            done.set()
            await asyncio.Event().wait()
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    task = asyncio.create_task(follow("/v1/x", read, sent.append))
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    return sent


async def test_an_event_only_when_the_answer_this_token_sees_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Index 7 moved for rows the token cannot read: the answer is the same, no event.
    sent = await run_follow([(5, ["a"]), (7, ["a"]), (9, ["a", "b"])])
    assert sent == [{"Path": "/v1/x"}, {"Path": "/v1/x"}]


async def test_a_refusal_is_sent_once_then_the_answer_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch_routes, "RETRY_REFUSED_S", 0.0)
    denied = ACLDenied("Permission denied: token lacks permission 'service:read'")
    sent = await run_follow([denied, denied, (3, ["a"])])
    assert sent == [
        {"Path": "/v1/x", "Status": 403, "Error": denied.message},
        {"Path": "/v1/x"},
    ]
