"""What happens to each row of a rows message, decided from how its model call ended.

Pure: `plan` takes the rows, their outcomes and the message's attempt counts, and says what
to record, what to re-enqueue and whether the host should retry the message.

The row ended as...
- an answer or a permanent row error: recorded.
- a 429, or no limiter turn within 15 s: re-enqueued after the longest retry-after (plus jitter),
  `waits` + 1; the delivery spends no attempt (`tries` keeps only the failed deliveries).
- a transient error (5xx, timeout, connection) on the last attempt (dequeue count + tries >=
  max): recorded as `transient`, with the attempts and the last error.
- a transient error with attempts left, when no other row of the message was recorded or
  throttled: the message fails, and the host retries it (dequeue count, then poison).
- a transient error with attempts left, when other rows were recorded or throttled:
  re-enqueued alone after 2 s per attempt spent, `tries` = attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from processing.core.errors import Throttled
from processing.core.messages import Row
from processing.core.records import Record
from processing.core.states import RowCode

Outcome = Record | Exception  # a Record, Throttled, or a transient error


@dataclass(frozen=True)
class Requeue:
    rows: tuple[Row, ...]
    delay: float  # seconds before the rows are visible again (jitter is added when sent)
    waits: int
    tries: int


@dataclass(frozen=True)
class RowsPlan:
    record: tuple[Record, ...] = ()
    requeue: tuple[Requeue, ...] = ()  # throttled rows first, then transient ones
    retry: str = ""  # non-empty: fail the message with this error so the host retries it


def plan(
    rows: Sequence[Row],
    outcomes: Sequence[Outcome],
    *,
    dequeue_count: int,
    tries: int,
    waits: int,
    max_dequeue: int,
) -> RowsPlan:
    done: list[Record] = []
    throttled: list[tuple[Row, Throttled]] = []
    transient: list[tuple[Row, Exception]] = []
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, Record):
            done.append(outcome)
        elif isinstance(outcome, Throttled):
            throttled.append((row, outcome))
        else:
            transient.append((row, outcome))

    # `tries` carries attempts already spent by rows re-enqueued from a partly failed message.
    attempts = dequeue_count + tries
    if transient and attempts >= max_dequeue:
        # Out of attempts: record the real reason now instead of losing it in the poison queue.
        done += [
            Record.failed(row.index, row.cells, RowCode.TRANSIENT, f"gave up after {attempts} attempts: {exc}")
            for row, exc in transient
        ]
        transient = []
    if transient and not done and not throttled:
        return RowsPlan(retry=str(transient[0][1]))

    requeue: list[Requeue] = []
    if throttled:
        # This delivery is free (a 429 is not a failure), but earlier failed ones still count.
        requeue.append(
            Requeue(
                tuple(r for r, _ in throttled),
                max(t.retry_after for _, t in throttled),
                waits=waits + 1,
                tries=tries + dequeue_count - 1,
            )
        )
    if transient:
        # Some rows of a multi-row message failed: retry just those, with a short backoff.
        requeue.append(Requeue(tuple(r for r, _ in transient), 2.0 * attempts, waits=waits, tries=attempts))
    return RowsPlan(record=tuple(done), requeue=tuple(requeue))
