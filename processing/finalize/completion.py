"""When a job is complete, and how: the decisions of each finalize check, without I/O.

| the manifest says                 | then                                                       |
|-----------------------------------|------------------------------------------------------------|
| nothing (unknown job), done, failed | `Step.STOP`: the check chain ends                        |
| ingesting                         | `Step.WAIT`: look again after the finalize interval        |
| processing                        | `Step.LOOK`: fail the job if a row recorded a fatal error, else scan the shards |

After a scan, `completion` compares the rows with a record to the job's total:

| rows seen        | no new record for     | completion                                             |
|------------------|-----------------------|--------------------------------------------------------|
| any, cancel requested | any               | `CANCELLED`: write the results, the rest as `cancelled` rows |
| all              | any                   | `COMPLETE`: write the results, the job is done         |
| fewer            | ≥ the stall timeout   | `STALLED`: write the results, the rest as `missing` rows |
| fewer            | less                  | `PENDING`: look again after the finalize interval      |
"""

from __future__ import annotations

from enum import StrEnum

from processing.core.states import FINAL_STATES, JobState


class Step(StrEnum):
    STOP = "stop"
    WAIT = "wait"
    LOOK = "look"


class Completion(StrEnum):
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    STALLED = "stalled"
    PENDING = "pending"


def first_step(state: str | None) -> Step:
    if state is None or state in FINAL_STATES:
        return Step.STOP
    if state == JobState.INGESTING:
        return Step.WAIT
    return Step.LOOK


def completion(
    *, total: int, seen: int, idle_seconds: float, stall_seconds: float, cancelled: bool = False
) -> Completion:
    if cancelled:
        return Completion.CANCELLED
    if seen >= total:
        return Completion.COMPLETE
    if idle_seconds >= stall_seconds:
        return Completion.STALLED
    return Completion.PENDING


def stall_reason(missing: int, stall_seconds: float) -> str:
    return (
        f"the job made no progress for {stall_seconds:g} s (ROWSMITH_STALL_TIMEOUT_SECONDS), so it was "
        f"completed with {missing} row(s) missing; re-run them by uploading those rows again"
    )
