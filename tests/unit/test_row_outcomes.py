"""The per-row decision table of processing/process/row_outcomes.py, one test per line of it."""

from processing.core.errors import Throttled, TransientError
from processing.core.messages import Row
from processing.core.records import Record
from processing.core.states import RowCode
from processing.process.row_outcomes import Requeue, RowsPlan, plan

ROWS = (Row(0, ("a",)), Row(1, ("b",)), Row(2, ("c",)))
MAX = 5


def ok(i: int) -> Record:
    return Record.answered(i, ROWS[i].cells, f"answer {i}", (3, 1))


def decide(outcomes, *, dequeue_count=1, tries=0, waits=0) -> RowsPlan:
    rows = ROWS[: len(outcomes)]
    return plan(rows, outcomes, dequeue_count=dequeue_count, tries=tries, waits=waits, max_dequeue=MAX)


def test_answers_and_permanent_row_errors_are_recorded():
    filtered = Record.failed(1, ("b",), RowCode.CONTENT_FILTER, "content_filter: ...")
    assert decide([ok(0), filtered]) == RowsPlan(record=(ok(0), filtered))


def test_a_429_re_enqueues_after_the_longest_retry_after_and_spends_no_attempt():
    result = decide([Throttled(2.0), Throttled(7.5), ok(2)], dequeue_count=3, tries=1, waits=4)
    assert result.record == (ok(2),)
    # The third delivery was free; the two before it (and the one carried in `tries`) count.
    assert result.requeue == (Requeue(ROWS[:2], 7.5, waits=5, tries=3),)
    assert not result.retry


def test_a_throttled_only_message_is_never_failed_even_on_its_last_delivery():
    result = decide([Throttled(1.0)], dequeue_count=MAX)
    assert result.requeue == (Requeue(ROWS[:1], 1.0, waits=1, tries=MAX - 1),)
    assert not result.retry and not result.record


def test_transient_on_the_last_attempt_is_recorded_with_the_reason():
    result = decide([TransientError("503 from Azure OpenAI")], dequeue_count=3, tries=2)
    (record,) = result.record
    assert record.code == RowCode.TRANSIENT
    assert record.error == "gave up after 5 attempts: 503 from Azure OpenAI"
    assert not result.requeue and not result.retry


def test_transient_with_attempts_left_and_nothing_else_fails_the_message():
    assert decide([TransientError("timeout"), TransientError("500")], dequeue_count=2) == RowsPlan(retry="timeout")


def test_transient_beside_recorded_rows_is_re_enqueued_alone_with_its_attempts():
    result = decide([ok(0), TransientError("500")], dequeue_count=2, tries=1, waits=3)
    assert result.record == (ok(0),)
    assert result.requeue == (Requeue(ROWS[1:2], 6.0, waits=3, tries=3),)


def test_transient_beside_throttled_rows_goes_back_after_them():
    result = decide([Throttled(4.0), TransientError("500")])
    assert result.requeue == (Requeue(ROWS[:1], 4.0, waits=1, tries=0), Requeue(ROWS[1:2], 2.0, waits=0, tries=1))
    assert not result.record and not result.retry
