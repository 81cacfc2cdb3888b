"""The progress display of `submit --wait` / `watch`, rendered from snapshots without a stack."""

from __future__ import annotations

import io
import re
from typing import Any

from rowsmith_cli import progress
from rowsmith_cli.progress import ProgressDisplay, Snapshot


def snap(at: float, done: int = 0, *, total: int | None = 1000, state: str = "processing", **kw: Any) -> Snapshot:
    errors = kw.pop("errors", 0)
    return Snapshot(at=at, job="tickets-abc", state=state, total=total, ok=done - errors, errors=errors, **kw)


def test_the_rate_is_rows_per_second_over_the_recent_window_only():
    # 10 rows/s for a minute, then 2 rows/s for the last 30 s: the window sees the recent pace.
    history = [snap(t, 10 * t) for t in range(0, 61, 5)]
    history += [snap(60 + t, 600 + 2 * t) for t in range(5, 31, 5)]
    assert progress.rate(history, window=30) == 2.0
    assert progress.rate(history[:3], window=30) == 10.0


def test_no_rate_and_no_eta_before_there_is_a_span_to_measure():
    assert progress.rate([snap(0.0, 0)]) is None
    assert progress.eta_seconds([snap(0.0, 0), snap(0.5, 5)]) is None
    assert "-- rows/s | ETA --" in progress.render_line([snap(0.0, 0)])


def test_the_rate_does_not_count_the_wait_before_the_first_answer():
    # Ingest and the queue's start took 20 s with nothing answered; then 5 rows/s.
    history = [snap(t, 0) for t in range(0, 21, 5)] + [snap(22.0, 10), snap(24.0, 20)]
    assert progress.rate(history) == 5.0


def test_eta_is_the_remaining_rows_at_the_recent_rate():
    history = [snap(0.0, 100), snap(10.0, 200)]  # 10 rows/s, 800 to go
    assert progress.eta_seconds(history) == 80.0
    line = progress.render_line(history)
    assert "200/1,000 rows (20%)" in line and "10.0 rows/s" in line and "ETA 1m20s" in line


def test_an_unknown_total_while_ingesting_says_rows_read_never_none():
    line = progress.render_line([snap(0.0, total=None, state="ingesting", ingested=1200)])
    assert line == "tickets-abc ingesting: 1,200 rows read"
    assert "None" not in progress.render_line([snap(0.0, total=None, state="processing", ingested=5)])
    assert progress.bar_share(snap(0.0, total=None, state="ingesting")) is None


def test_a_failed_job_never_shows_a_full_bar_nor_a_made_up_total():
    failed = snap(3.0, total=None, state="failed", seconds=3.0)
    line = progress.render_line([failed])
    assert line.startswith("tickets-abc failed: no rows read")
    assert "None" not in line and "/" not in line.split("|")[0]
    assert progress.bar_share(failed) is None
    # Failed after its rows were counted: the rows as they were, still no bar.
    late = snap(9.0, 40, total=100, state="failed")
    assert progress.bar_share(late) is None and "40/100 rows (40%)" in progress.render_line([late])
    assert progress.bar_share(snap(9.0, 100, total=100, state="done")) == 1.0


def test_the_failure_text_is_the_reports_what_where_and_fix():
    report = {"kind": "input", "error": "column `body` is missing", "where": "header, line 1", "fix": "add it"}
    assert progress.failure_lines(report) == [
        "error: column `body` is missing",
        "  where: header, line 1",
        "  fix: add it",
    ]
    assert progress.failure_lines({"error": "boom", "where": "", "fix": ""}) == ["error: boom"]
    assert progress.failure_lines(None) == []


def test_tokens_cost_budget_and_errors_by_code_are_shown_when_present():
    history = [
        snap(
            0.0,
            500,
            errors=12,
            tokens=120_400,
            cached_tokens=2_000,
            requests=530,
            retries=30,
            cost_usd=0.42,
            budget_usd=5.0,
            errors_by_code={"invalid_json": 2, "transient": 10},
        )
    ]
    line = progress.render_line(history)
    assert "488 ok, 12 errors" in line
    assert "120,400 tokens (2,000 cached)" in line
    assert "530 requests, 30 retried" in line
    assert "$0.4200 of $5.00 budget" in line
    assert line.endswith("errors: transient 10, invalid_json 2")


def test_a_summary_without_cost_keys_renders_without_them():
    info = {"job": "j", "state": "processing", "total_rows": 10, "ok_rows": 3, "error_rows": 1}
    info |= {"prompt_tokens": 30, "completion_tokens": 12}
    now = Snapshot.of(info, at=0.0, row_errors={"transient": {"rows": 1, "example": "503"}})
    assert (now.cost_usd, now.budget_usd, now.requests) == (None, None, None)
    line = progress.render_line([now])
    assert "4/10 rows (40%), 3 ok, 1 errors" in line and "42 tokens" in line and "$" not in line
    assert "errors: transient 1" in line


def test_plain_mode_prints_whole_lines_rate_limited_and_on_change():
    out = io.StringIO()
    clock = iter([0.0, 1.0, 2.0, 6.0, 7.0, 8.0])
    display = ProgressDisplay(out, plain=True, clock=lambda: next(clock))
    display.update(snap(0.0, total=None, state="ingesting", ingested=10))  # printed: first
    display.update(snap(1.0, 0, state="processing"))  # printed: the state changed
    display.update(snap(2.0, 10))  # not yet: under 5 s since the last line
    display.update(snap(6.0, 50))  # printed: 5 s on, and it changed
    display.update(snap(7.0, 1000, state="done", seconds=7.0))  # printed: the state changed
    display.close()  # the last line is out already: not printed twice
    text = out.getvalue()
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 5, text
    # No carriage return, no escape code: nothing of an earlier, longer line is left on a line.
    assert "\r" not in text and "\x1b" not in text
    assert lines[0] == "tickets-abc ingesting: 10 rows read"
    assert lines[2].startswith("tickets-abc processing: 50/1,000 rows (5%)")
    assert lines[3].startswith("tickets-abc done: 1,000/1,000 rows (100%)") and "in 7s" in lines[3]


def test_plain_mode_prints_the_last_snapshot_at_close_if_it_was_held_back():
    out = io.StringIO()
    clock = iter([0.0, 1.0, 2.0])
    display = ProgressDisplay(out, plain=True, clock=lambda: next(clock))
    display.update(snap(0.0, 10))
    display.update(snap(1.0, 20))  # held back (under 5 s)
    display.close()
    assert out.getvalue().splitlines()[-1].startswith("tickets-abc processing: 20/1,000 rows")


def test_on_a_terminal_the_last_frame_stays_and_the_cursor_ends_on_a_fresh_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich's terminal width

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with ProgressDisplay(out, plain=False) as display:
        display.update(snap(0.0, 0))
        display.update(snap(2.0, 1000, state="done", seconds=2.0))
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())  # rich's colours and cursor moves
    assert "tickets-abc done: 1,000/1,000 rows (100%), 1,000 ok, 0 errors" in text
    assert "in 2s | 0 tokens" in text
    assert text.endswith("\n")
