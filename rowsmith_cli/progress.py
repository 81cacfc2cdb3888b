"""The progress display of `submit --wait` and `watch`: rows, rate, ETA, tokens, cost, errors.

Rendering is a pure function of the snapshots seen so far (`render_line`, `renderable`), so it is
tested without a stack; `ProgressDisplay` only decides where and when to draw it: redrawn in
place with rich on a terminal, or one plain line per update, at most every `PLAIN_EVERY` seconds
unless the state changes, when the output is not a terminal or with --json.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

# Rows per second are measured over the last RATE_WINDOW seconds: recent enough to follow a
# quota's pace, long enough not to jump with every finalize.
RATE_WINDOW = 30.0
MIN_RATE_SPAN = 1.0  # seconds: below this, two snapshots say nothing about a rate
PLAIN_EVERY = 5.0  # seconds between two plain lines whose state did not change
BAR_WIDTH = 30
KEEP = 240  # snapshots kept (two minutes at the poll interval): the rate needs only the window


@dataclass(frozen=True)
class Snapshot:
    """What one look at the job's manifest said, at `at` (monotonic seconds)."""

    at: float
    job: str
    state: str
    total: int | None
    ingested: int = 0
    ok: int = 0
    errors: int = 0
    errors_by_code: Mapping[str, int] = field(default_factory=dict)
    tokens: int = 0  # prompt + completion (reasoning is part of completion)
    cached_tokens: int | None = None
    requests: int | None = None
    retries: int | None = None
    cost_usd: float | None = None
    budget_usd: float | None = None
    budget_rows: int | None = None
    seconds: float | None = None

    @property
    def done(self) -> int:
        return self.ok + self.errors

    @classmethod
    def of(
        cls,
        info: Mapping[str, Any],
        *,
        at: float,
        ingested: int = 0,
        row_errors: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Snapshot:
        """From a job summary (commands.summary); the keys it may lack (cost, budget) stay None."""

        def optional(key: str) -> Any:
            value = info.get(key)
            return value if isinstance(value, int | float) and not isinstance(value, bool) else None

        return cls(
            at=at,
            job=str(info.get("job", "")),
            state=str(info.get("state", "")),
            total=info.get("total_rows"),
            ingested=ingested,
            ok=int(info.get("ok_rows") or 0),
            errors=int(info.get("error_rows") or 0),
            errors_by_code={code: int(e.get("rows", 0)) for code, e in (row_errors or {}).items()},
            tokens=int(info.get("prompt_tokens") or 0) + int(info.get("completion_tokens") or 0),
            cached_tokens=optional("cached_tokens"),
            requests=optional("requests"),
            retries=optional("retries"),
            cost_usd=optional("cost_usd"),
            budget_usd=optional("budget_usd"),
            budget_rows=optional("budget_rows"),
            seconds=optional("seconds"),
        )


FINISHED = ("done", "failed", "cancelled")


def rate(history: Sequence[Snapshot], window: float = RATE_WINDOW) -> float | None:
    """Rows per second over the last `window` seconds; None until there is a span to measure."""
    if not history:
        return None
    now = history[-1]
    recent = [s for s in history if now.at - s.at <= window]
    # From the last look before any row was answered, when there is one in the window: the
    # ingest and the queue's start are not slow rows.
    idle = [s for s in recent if s.done == 0]
    start = idle[-1] if idle else recent[0]
    span = now.at - start.at
    if span < MIN_RATE_SPAN:
        return None
    return max(0.0, (now.done - start.done) / span)


def eta_seconds(history: Sequence[Snapshot], window: float = RATE_WINDOW) -> float | None:
    if not history:
        return None
    now = history[-1]
    per_second = rate(history, window)
    if now.total is None or not per_second or now.state in FINISHED:
        return None
    return max(0, now.total - now.done) / per_second


def duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _money(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _parts(history: Sequence[Snapshot]) -> list[str]:
    """The display's pieces after the rows, each a few words."""
    now = history[-1]
    parts: list[str] = []
    per_second = rate(history)
    if now.state not in FINISHED:
        parts.append(f"{per_second:,.1f} rows/s" if per_second is not None else "-- rows/s")
        eta = eta_seconds(history)
        parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA --")
    elif now.seconds is not None:
        parts.append(f"in {duration(now.seconds)}")
    tokens = f"{now.tokens:,} tokens"
    if now.cached_tokens:
        tokens += f" ({now.cached_tokens:,} cached)"
    parts.append(tokens)
    if now.requests is not None:
        retried = f", {now.retries:,} retried" if now.retries else ""
        parts.append(f"{now.requests:,} requests{retried}")
    if now.cost_usd is not None:
        cost = _money(now.cost_usd)
        if now.budget_usd is not None:
            cost += f" of {_money(now.budget_usd)} budget"
        parts.append(cost)
    elif now.budget_usd is not None:
        parts.append(f"budget {_money(now.budget_usd)}")
    if now.budget_rows is not None:
        parts.append(f"budget {now.budget_rows:,} rows")
    if now.errors_by_code:
        codes = ", ".join(f"{code} {n:,}" for code, n in sorted(now.errors_by_code.items(), key=lambda kv: -kv[1]))
        parts.append(f"errors: {codes}")
    return parts


def rows_text(now: Snapshot) -> str:
    """The rows part: `ingesting: N rows read` while the total is unknown, else done/total."""
    if now.state == "ingesting" or (now.total is None and now.state not in FINISHED):
        return f"ingesting: {now.ingested:,} rows read"
    if now.total is None:
        # A job that failed before its rows were counted has no total: never a made-up one.
        return f"{now.ingested:,} rows read" if now.ingested else "no rows read"
    share = f" ({100 * now.done // now.total}%)" if now.total else ""
    return f"{now.done:,}/{now.total:,} rows{share}, {now.ok:,} ok, {now.errors:,} errors"


def _head(now: Snapshot) -> str:
    rows = rows_text(now)
    return f"{now.job} {rows}" if rows.startswith("ingesting:") else f"{now.job} {now.state}: {rows}"


def render_line(history: Sequence[Snapshot]) -> str:
    """One line for the latest snapshot: `JOB state: rows | rate | ETA | tokens | cost | errors`."""
    if not history:
        return ""
    head = _head(history[-1])
    return head if head.startswith(f"{history[-1].job} ingesting:") else " | ".join([head, *_parts(history)])


def bar_share(now: Snapshot) -> float | None:
    """How full the bar is; None when there is no bar to show (total unknown, or the job failed)."""
    if now.state in ("failed", "cancelled") or not now.total:
        return None
    return min(1.0, now.done / now.total)


def renderable(history: Sequence[Snapshot]) -> Table:
    """The terminal display: the bar (pulsing while the total is unknown, none for a failed job)
    and the rows on one line, the rate, ETA, tokens, cost and errors on the next."""
    now = history[-1]
    share = bar_share(now)
    bar: ProgressBar | Text
    if share is not None:
        bar = ProgressBar(total=now.total, completed=now.done, width=BAR_WIDTH)
    elif now.state not in FINISHED:
        bar = ProgressBar(total=None, width=BAR_WIDTH, pulse=True)
    else:
        bar = Text("")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=BAR_WIDTH if not isinstance(bar, Text) else 0)
    grid.add_column()
    grid.add_row(bar, Text(_head(now)))
    line = render_line(history)
    if " | " in line:
        grid.add_row(Text(""), Text(line.split(" | ", 1)[1]))
    return grid


def failure_lines(error: Mapping[str, Any] | None) -> list[str]:
    """A failed job's error report as a person reads it: what went wrong, where, and the fix."""
    if not error:
        return []
    what = str(error.get("error") or error.get("what") or "").strip()
    lines = [f"error: {what}"] if what else []
    for key in ("where", "fix"):
        value = str(error.get(key) or "").strip()
        if value:
            lines.append(f"  {key}: {value}")
    return lines


class ProgressDisplay:
    """Draws the snapshots on `stream` (stderr): rich's Live on a terminal, plain lines otherwise."""

    def __init__(self, stream: IO[str], *, plain: bool, clock: Any = time.monotonic) -> None:
        self.stream = stream
        self.plain = plain or not stream.isatty()
        self.clock = clock
        self.history: list[Snapshot] = []
        self._last_line = ""
        self._last_state = ""
        self._last_print = float("-inf")
        self._live: Live | None = None

    def update(self, snapshot: Snapshot) -> None:
        self.history.append(snapshot)
        del self.history[:-KEEP]
        if self.plain:
            self._plain()
            return
        if self._live is None:
            console = Console(file=self.stream, highlight=False)
            self._live = Live(renderable(self.history), console=console, refresh_per_second=4, transient=False)
            self._live.start()
        else:
            self._live.update(renderable(self.history))

    def _plain(self, final: bool = False) -> None:
        line = render_line(self.history)
        now = self.clock()
        state = self.history[-1].state if self.history else ""
        changed = state != self._last_state
        due = now - self._last_print >= PLAIN_EVERY and line != self._last_line
        if line and (changed or due or (final and line != self._last_line)):
            # Whole lines only: nothing is left of a longer earlier one.
            print(line, file=self.stream, flush=True)
            self._last_line, self._last_state, self._last_print = line, state, now

    def close(self) -> None:
        """Draw the last snapshot and leave the cursor on a fresh line."""
        if self._live is not None:
            if self.history:
                self._live.update(renderable(self.history))
            self._live.stop()
            self._live = None
        elif self.plain and self.history:
            self._plain(final=True)

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
