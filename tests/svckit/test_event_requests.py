"""How the relays size their PutEvents requests (svckit.events): EventBridge refuses a request
whose entries add up to more than 256 KiB by its own formula, and a relay whose request is
refused holds its shard until the records expire."""

from __future__ import annotations

from svckit import events


def _entry(detail_bytes: int) -> dict[str, str]:
    return {"Source": "shop.products", "DetailType": "ProductAdded", "Detail": "x" * detail_bytes}


def test_an_entry_is_sized_by_eventbridges_formula():
    entry = {**_entry(10), "Detail": "\U0001f600" * 3, "Resources": ["arn:a", "arn:bb"]}
    # Source 13 + DetailType 12 + Detail 3 emoji of 4 UTF-8 bytes + resources 5 and 6.
    assert events.entry_size(entry) == 13 + 12 + 12 + 11
    assert events.entry_size({**entry, "Time": "2026-11-22T00:00:00Z"}) == 13 + 12 + 12 + 11 + 14


def test_requests_are_cut_by_size_as_well_as_by_count():
    pending = [(str(n), _entry(60_000)) for n in range(10)]
    runs = list(events._chunks(pending))
    assert [len(run) for _, run in runs] == [4, 4, 2]
    assert [start for start, _ in runs] == [0, 4, 8]
    assert [seq for _, run in runs for seq, _ in run] == [str(n) for n in range(10)]
    assert all(
        sum(events.entry_size(e) for _, e in run) <= events.PUT_EVENTS_MAX_BYTES for _, run in runs
    )


def test_small_entries_still_go_ten_to_a_request():
    runs = list(events._chunks([(str(n), _entry(100)) for n in range(25)]))
    assert [len(run) for _, run in runs] == [10, 10, 5]
