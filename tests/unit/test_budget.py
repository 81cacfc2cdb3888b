"""The budget's decisions (processing/core/budget.py): one test per row of its table, and the caps."""

from __future__ import annotations

import pytest

from processing.core.budget import (
    BUDGET_META,
    RESERVATION_SECONDS,
    Admit,
    Ledger,
    admit,
    check_priced,
    job_budget,
    settle,
)
from processing.core.errors import JobInputError
from processing.core.records import Record, Spend, parse_lines
from processing.core.states import RowStatus

NOW = 1_000_000.0


def test_rows_that_fit_what_is_free_are_sent_and_reserved() -> None:
    ledger = Ledger(spent_usd=0.2)
    assert admit(ledger, 1.0, [0.3, 0.3], "r1", NOW) == [Admit.SEND, Admit.SEND]
    assert ledger.reserved["r1"][0] == pytest.approx(0.6)
    assert not ledger.reached


def test_a_row_that_fits_only_once_others_settle_waits() -> None:
    ledger = Ledger(spent_usd=0.2, reserved={"other": [0.6, NOW + 60]})
    assert admit(ledger, 1.0, [0.3], "r2", NOW) == [Admit.WAIT]
    assert not ledger.reached and "r2" not in ledger.reserved


def test_a_row_that_cannot_fit_what_is_unspent_is_refused_and_the_budget_is_reached() -> None:
    ledger = Ledger(spent_usd=0.8, reserved={"other": [0.1, NOW + 60]})
    assert admit(ledger, 1.0, [0.1, 0.3, 0.05], "r3", NOW) == [Admit.SEND, Admit.REFUSE, Admit.REFUSE]
    assert ledger.reached and ledger.refused_at_usd == pytest.approx(0.8)
    # Reached is for good: even a row that would fit is refused from then on.
    assert admit(ledger, 1.0, [0.0001], "r4", NOW) == [Admit.REFUSE]


def test_a_dead_instances_reservation_lapses() -> None:
    ledger = Ledger(reserved={"dead": [0.9, NOW - 1]})
    assert admit(ledger, 1.0, [0.5], "r5", NOW) == [Admit.SEND]
    assert "dead" not in ledger.reserved
    assert ledger.reserved["r5"][1] == NOW + RESERVATION_SECONDS


def test_settling_replaces_the_reservation_by_what_was_billed() -> None:
    ledger = Ledger()
    admit(ledger, 1.0, [0.4], "r6", NOW)
    settle(ledger, "r6", 0.05)
    assert ledger.reserved == {} and ledger.spent_usd == pytest.approx(0.05)
    assert Ledger.from_bytes(ledger.to_bytes()) == ledger


@pytest.mark.parametrize(
    ("pipeline_usd", "metadata", "expected"),
    [
        (0.0, None, None),
        (5.0, None, 5.0),
        (0.0, {BUDGET_META: "2.5"}, 2.5),
        (5.0, {BUDGET_META: "2.5"}, 2.5),
        # An upload may only lower the pipeline's cap, never lift it.
        (5.0, {"Rowsmith_Budget_USD": "50"}, 5.0),
    ],
)
def test_the_jobs_cap_is_the_lower_of_pipeline_and_upload(
    pipeline_usd: float, metadata: dict[str, str] | None, expected: float | None
) -> None:
    assert job_budget(pipeline_usd, metadata, "input/a.csv") == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "nan", "inf"])
def test_a_bad_upload_budget_names_the_file_and_the_metadata(raw: str) -> None:
    with pytest.raises(JobInputError) as caught:
        job_budget(0.0, {BUDGET_META: raw}, "input/a.csv")
    assert "input/a.csv" in str(caught.value) and BUDGET_META in caught.value.where


def test_a_budget_without_a_price_is_refused_with_where_and_fix() -> None:
    check_priced(None, False, "my-model", "triage", "input/a.csv")  # no budget: no price needed
    with pytest.raises(JobInputError) as caught:
        check_priced(3.0, False, "my-model", "triage", "input/a.csv")
    assert "'my-model'" in str(caught.value) and "ROWSMITH_PRICES_FILE" in caught.value.fix


def test_spend_lines_round_trip_and_are_not_results() -> None:
    spend = Spend(requests=3, prompt=30, completion=12, reasoning=4, cached=8)
    line = Record.spent(7, spend.usage, spend.calls(first_delivery=True)).to_line()
    (back,) = parse_lines(line)
    assert back.status == RowStatus.SPEND and not back.is_result
    assert back.usage == (30, 12, 4, 8) and back.calls == (3, 2)
    # On a later delivery every request was a retry.
    assert spend.calls(first_delivery=False) == (3, 3)


def test_an_error_record_keeps_what_its_attempts_were_billed() -> None:
    record = Record.failed(2, ["a"], "invalid_json", "not the schema")
    from dataclasses import replace

    (back,) = parse_lines(replace(record, usage=(90, 30, 0, 0), calls=(3, 2)).to_line())
    assert back.usage == (90, 30, 0, 0) and back.calls == (3, 2) and back.code == "invalid_json"
