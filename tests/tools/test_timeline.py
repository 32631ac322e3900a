"""The timeline of one request from make run's kept lines (tools.local.runlog, tools.timeline)."""

from __future__ import annotations

import json

from tools import timeline
from tools.local.runlog import RunLog, read_lines


def request_line(service: str, at: str, rid: str, path: str, status: int, ms: float) -> str:
    return json.dumps({
        "level": "INFO", "message": "request", "timestamp": at, "service": service,
        "request_id": rid, "method": "POST", "path": path, "status": status, "duration_ms": ms,
    })  # fmt: skip


def test_a_request_across_two_services_in_the_order_it_started(tmp_path):
    log = tmp_path / "run.log"
    printed: list[tuple[str, str]] = []
    sink = RunLog(log, inner=lambda name, line: printed.append((name, line)))
    # The gateway's line is written last (its request ends last) but started first.
    sink("product_api", request_line("product_api", "2026-11-22 01:00:00,110+0000", "r1",
                                     "/add_product", 201, 9.0))  # fmt: skip
    sink("product_api", json.dumps({
        "level": "WARNING", "message": "slow", "timestamp": "2026-11-22 01:00:00,105+0000",
        "service": "product_api", "request_id": "r1",
    }))  # fmt: skip
    sink("user_api", request_line("user_api", "2026-11-22 01:00:00,100+0000", "other",
                                  "/login", 200, 5.0))  # fmt: skip
    sink("events", "not json r1")
    sink("gateway_api", request_line("gateway_api", "2026-11-22 01:00:00,115+0000", "r1",
                                     "/add_product", 201, 20.0))  # fmt: skip
    sink.close()
    assert len(printed) == 5  # every line still reaches the terminal
    found = timeline.entries(read_lines(log), "r1")
    assert [(e.service, e.duration_ms) for e in found] == [
        ("gateway_api", 20.0),  # started 01:00:00.095
        ("product_api", 9.0),  # started .101
        ("product_api", None),  # the warning at .105
    ]
    text = timeline.render("r1", found)
    assert "3 lines from 2 services, 20.0 ms end to end" in text
    assert "+    6.0 ms  product_api  POST /add_product" in text
    assert "WARNING: slow" in text


def test_the_log_rotates_and_both_files_are_read(tmp_path):
    log = tmp_path / "run.log"
    sink = RunLog(log, max_bytes=200)
    for n in range(6):
        sink("user_api", f"line {n} " + "x" * 40)
    sink.close()
    assert (tmp_path / "run.log.1").exists()
    kept = [line for _, line in read_lines(log)]
    assert kept == sorted(kept)  # oldest first across the two files
    assert kept[-1].startswith("line 5")
    assert log.stat().st_size <= 200


def test_an_unknown_id_says_so(tmp_path, capsys):
    (tmp_path / "run.log").write_text("user_api\t{}\n")
    assert timeline.main(["nope", "--log", str(tmp_path / "run.log")]) == 1
    assert "no lines" in capsys.readouterr().out
