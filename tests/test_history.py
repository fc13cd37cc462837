"""core.history: the dashboard's filters searched in the store (every record, newest first), in bounded steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patchmoi.core.history import Query, QueryError, search, total
from patchmoi.core.store import Kind, Store

BASE = datetime(2026, 11, 1, tzinfo=UTC)
NOW = BASE + timedelta(minutes=3000)


def iso(minutes: int) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def event(i: int) -> dict[str, Any]:
    return {
        "id": f"patch:src-{i % 7}:e{i}:upstream.release",
        "type": "upstream.push" if i % 3 == 0 else "upstream.release",
        "receivedAt": iso(i),
        "upstreamRepo": f"owner{i % 10}/widget",
        "upstreamTag": f"v{i}.0.0",
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "data")
    s.ensure()
    s.append_many(Kind.EVENTS, [event(i) for i in range(3000)])
    return s


def everything(store: Store, kind: str, query: Query, budget: int = 500) -> tuple[list[str], int]:
    """Every match, step by step as the dashboard asks for them; how many steps it took."""
    found: list[str] = []
    before, steps = None, 0
    while True:
        step = search(store, kind, query, limit=50, before=before, budget=budget)
        steps += 1
        found += [rec["id"] for _, rec in step.hits]
        if step.done:
            return found, steps
        before = step.next


def test_a_rare_match_far_back_is_found_in_bounded_steps(store: Store) -> None:
    query = Query.parse("v17.0.0")
    first = search(store, "events", query, budget=500)
    assert first.hits == [] and not first.done and first.scanned == 500  # one step reads at most `budget`
    found, steps = everything(store, "events", query)
    assert found == ["patch:src-3:e17:upstream.release"] and steps <= 7  # 3,000 records, 500 a step


def test_fields_and_free_words_must_all_match(store: Store) -> None:
    found, _ = everything(store, "events", Query.parse("repo:owner4 type:upstream.push"))
    expected = [event(i)["id"] for i in reversed(range(3000)) if i % 10 == 4 and i % 3 == 0]
    assert found == expected and len(found) == 100


def test_an_indexed_term_is_answered_by_the_index(store: Store) -> None:
    query = Query.parse("type:upstream.push")
    assert query.index_filters("events") == {"type": "upstream.push"}
    step = search(store, "events", query, limit=1000)
    assert len(step.hits) == 1000 and step.scanned == 1000  # no record read in vain
    rest = search(store, "events", query, before=step.next)
    assert rest.hits == [] and rest.done
    assert total(store, "events", query) == 1000
    assert Query.parse("type:push").index_filters("events") == {}  # a substring is checked by reading
    assert total(store, "events", Query.parse("type:push")) is None


def test_since_stops_at_older_records_and_until_skips_newer_ones(store: Store) -> None:
    recent = search(store, "events", Query.parse("since:30m", now=NOW))
    assert [r["id"] for _, r in recent.hits] == [event(i)["id"] for i in range(2999, 2969, -1)]
    assert recent.done and recent.scanned < 300  # stopped soon after crossing the bound
    window = search(store, "events", Query.parse("since:2026-11-01T00:10 until:2026-11-01T00:12"))
    assert [r["id"] for _, r in window.hits] == [event(i)["id"] for i in (12, 11, 10)]


def test_attempt_states_come_from_the_map_given(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    store.append_many(
        Kind.ATTEMPTS,
        [{"id": f"a{i}", "eventId": f"e{i}", "status": "needs_intervention", "updatedAt": iso(i)} for i in range(5)],
    )
    states = {"a1": "open", "a3": "open", "a0": "resolved"}
    step = search(store, "attempts", Query.parse("state:open"), states=states)
    assert [r["id"] for _, r in step.hits] == ["a3", "a1"] and all(r["state"] == "open" for _, r in step.hits)


def test_a_bad_time_says_what_is_expected() -> None:
    with pytest.raises(QueryError, match="use 15m, 2h, 3d, 1w or a date"):
        Query.parse("since:yesterday")
    assert Query.parse("REPO:x Foo").text == "repo:x foo"  # keys are lower-cased only when known: REPO is a word


def test_source_is_exact_through_the_index_and_a_substring_otherwise(tmp_path: Path) -> None:
    s = Store(tmp_path / "data")
    s.ensure()
    s.append_many(
        Kind.SIGNALS,
        [{"id": f"sig{i}", "sourceId": "GH-Releases" if i % 2 else "npm-left", "event": "release"} for i in range(10)],
    )
    exact = search(s, "signals", Query.parse("source:GH-Releases"))
    assert len(exact.hits) == 5 and exact.scanned == 5  # the index answered: only the matches were read
    assert Query.parse("source:GH-Releases").text == "source:GH-Releases"  # as typed: the server gets it so
    for partial in ("source:gh-rel", "source:gh-releases"):  # not a stored id: read, as a substring, any case
        found = search(s, "signals", Query.parse(partial))
        assert len(found.hits) == 5 and found.scanned == 10, partial
    assert total(s, "signals", Query.parse("source:GH-Releases")) == 5
    assert total(s, "signals", Query.parse("source:gh-rel")) is None  # no exact count: the filter reads


def test_a_relative_time_too_far_back_is_a_query_error() -> None:
    with pytest.raises(QueryError, match="too far back"):
        Query.parse("since:99999999999w")
