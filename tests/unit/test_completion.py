"""The completion decisions of processing/finalize/completion.py, one test per line of its tables."""

import pytest

from processing.core.states import JobState
from processing.finalize.completion import Completion, Step, completion, first_step


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (None, Step.STOP),
        (JobState.DONE, Step.STOP),
        (JobState.FAILED, Step.STOP),
        (JobState.CANCELLED, Step.STOP),
        (JobState.INGESTING, Step.WAIT),
        (JobState.PROCESSING, Step.LOOK),
        ("done", Step.STOP),  # as read back from a manifest: a plain string
    ],
)
def test_what_a_check_does_first(state, step):
    assert first_step(state) is step


@pytest.mark.parametrize(
    ("seen", "idle", "expected"),
    [
        (10, 0.0, Completion.COMPLETE),
        (10, 99_999.0, Completion.COMPLETE),
        (12, 0.0, Completion.COMPLETE),  # duplicates never make a job wait
        (9, 3600.0, Completion.STALLED),
        (9, 3599.9, Completion.PENDING),
        (0, 0.0, Completion.PENDING),
    ],
)
def test_when_a_job_is_complete(seen, idle, expected):
    assert completion(total=10, seen=seen, idle_seconds=idle, stall_seconds=3600.0) is expected


def test_an_empty_file_is_complete_at_once():
    assert completion(total=0, seen=0, idle_seconds=0.0, stall_seconds=3600.0) is Completion.COMPLETE


@pytest.mark.parametrize(("seen", "idle"), [(0, 0.0), (9, 0.0), (10, 0.0), (9, 99_999.0)])
def test_a_cancelled_job_ends_at_its_next_check(seen, idle):
    # Whatever was answered, and even if every row has a record: the user asked it to stop.
    verdict = completion(total=10, seen=seen, idle_seconds=idle, stall_seconds=3600.0, cancelled=True)
    assert verdict is Completion.CANCELLED
