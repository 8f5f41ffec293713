"""The intentions API's writes as changes to one service-intentions entry (pure):
legacy create appends with an ID, upsert by name replaces in place, delete of
the last source takes the entry, updates by ID, Consul's legacy validation
texts, and config writes dropping legacy IDs."""

from __future__ import annotations

import pytest

from proconsul.connect.config_entries import normalize, validate
from proconsul.connect.intention_writes import (
    UNCHANGED,
    IntentionWriteError,
    check_legacy,
    check_upsert_meta,
    create_legacy,
    delete_by_id,
    delete_by_name,
    multierror_text,
    source_of,
    strip_legacy_ids,
    update_by_id,
    upsert,
)
from proconsul.connect.intentions import intentions_of
from proconsul.structs.config_entries import (
    ConfigEntryError,
    Intention,
    ServiceIntentions,
    SourceIntention,
)

NOW = "2026-12-07T17:00:00.123456Z"
LATER = "2026-12-07T18:00:00Z"


def body(source: str, destination: str = "api", action: str = "allow", **kw: object) -> Intention:
    return Intention(source_name=source, destination_name=destination, action=action, **kw)  # type: ignore[arg-type]


def test_legacy_create_appends_a_source_with_its_id_meta_and_times() -> None:
    source = source_of(body("web", meta={"team": "a"}), legacy_id="id-1", now=NOW)
    entry = create_legacy(None, "api", source)
    assert entry.name == "api"
    (row,) = intentions_of([entry])
    assert (row.source_name, row.action, row.id, row.meta) == (
        "web",
        "allow",
        "id-1",
        {"team": "a"},
    )
    assert (row.created_at, row.updated_at) == (NOW, NOW)
    # A second create for the same source appends; the entry's validation refuses it.
    twice = create_legacy(entry, "api", source_of(body("web"), legacy_id="id-2", now=NOW))
    assert [s.legacy_id for s in twice.sources] == ["id-1", "id-2"]
    assert [s.legacy_id for s in entry.sources] == ["id-1"]  # the stored one is untouched
    with pytest.raises(ConfigEntryError) as err:
        validate(normalize(twice), intentions_api=True)
    assert str(err.value) == 'Sources[1] defines "web" more than once'


def test_config_writes_drop_legacy_ids_and_refuse_legacy_meta() -> None:
    entry = create_legacy(None, "api", source_of(body("web"), legacy_id="id-1", now=NOW))
    validate(normalize(entry), intentions_api=True)
    stripped = strip_legacy_ids(entry)
    assert [(s.legacy_id, s.legacy_create_time) for s in stripped.sources] == [("", "")]
    assert entry.sources[0].legacy_id == "id-1"  # a copy
    validate(normalize(stripped))
    with_meta = create_legacy(None, "api", source_of(body("web", meta={"a": "b"}), legacy_id="x"))
    with pytest.raises(ConfigEntryError) as err:
        validate(normalize(strip_legacy_ids(with_meta)))
    assert str(err.value) == "Sources[0].LegacyMeta must be omitted"


def test_upsert_replaces_by_name_or_appends() -> None:
    legacy = source_of(body("web"), legacy_id="id-1", now=NOW)
    entry = ServiceIntentions(
        name="api", sources=[legacy, SourceIntention(name="db", action="deny")]
    )
    changed = upsert(entry, "api", source_of(body("web", action="deny")))
    web = changed.sources[0]
    assert (web.name, web.action, web.legacy_id) == ("web", "deny", "")
    assert [s.name for s in changed.sources] == ["web", "db"]
    appended = upsert(changed, "api", source_of(body("*")))
    assert [s.name for s in appended.sources] == ["web", "db", "*"]
    fresh = upsert(None, "api", source_of(body("web")))
    assert [(s.name, s.legacy_id) for s in fresh.sources] == [("web", "")]


def test_upsert_refuses_meta_unless_it_is_the_entrys_own() -> None:
    with pytest.raises(IntentionWriteError) as err:
        check_upsert_meta(None, {"a": "b"})
    assert err.value.message == "Meta must not be specified"
    entry = ServiceIntentions(name="api", meta={"a": "b"})
    check_upsert_meta(entry, {"a": "b"})
    check_upsert_meta(entry, {})
    with pytest.raises(IntentionWriteError) as err:
        check_upsert_meta(entry, {"a": "c"})
    assert err.value.message == (
        "Meta must not be specified, or should be unchanged during an update."
    )


def test_delete_by_name_removes_one_source_and_the_last_takes_the_entry() -> None:
    entry = ServiceIntentions(
        name="api",
        sources=[
            SourceIntention(name="web", action="allow"),
            SourceIntention(name="db", action="deny"),
        ],
    )
    one_left = delete_by_name(entry, "web")
    assert isinstance(one_left, ServiceIntentions)
    assert [s.name for s in one_left.sources] == ["db"]
    assert delete_by_name(one_left, "db") is None
    assert delete_by_name(one_left, "nope") is UNCHANGED
    assert delete_by_name(None, "web") is UNCHANGED


def test_update_and_delete_by_id() -> None:
    entry = create_legacy(None, "api", source_of(body("web"), legacy_id="id-1", now=NOW))
    updated = update_by_id(entry, "id-1", "api", body("web", action="deny", description="x"), LATER)
    web = updated.sources[0]
    assert (web.action, web.description, web.legacy_id) == ("deny", "x", "id-1")
    assert (web.legacy_create_time, web.legacy_update_time) == (NOW, LATER)
    with pytest.raises(IntentionWriteError) as err:
        update_by_id(entry, "id-1", "api", body("web", destination="db"), LATER)
    assert err.value.message == (
        "Cannot modify Destination partition/namespace/name for an intention once it exists."
    )
    with pytest.raises(IntentionWriteError) as err:
        update_by_id(entry, "id-9", "api", body("web"), LATER)
    assert err.value.message == "Cannot modify non-existent intention: 'id-9'"
    assert delete_by_id(entry, "id-1") is None
    with pytest.raises(IntentionWriteError) as err:
        delete_by_id(entry, "id-9")
    assert err.value.message == "Cannot delete non-existent intention: 'id-9'"


def test_legacy_validation_lists_every_problem_as_go_does() -> None:
    check_legacy(body("web"))
    with pytest.raises(IntentionWriteError) as err:
        check_legacy(body("we*b", destination="", action="maybe"))
    assert err.value.status == 400
    assert err.value.message == multierror_text(
        [
            "DestinationName must be set",
            "SourceName: wildcard character '*' cannot be used with partial values",
            "Action must be set to 'allow' or 'deny'",
        ]
    )
    assert multierror_text(["x"]) == "1 error occurred:\n\t* x\n\n"
