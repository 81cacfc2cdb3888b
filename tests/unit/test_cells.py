import csv
import io

import pytest

from processing.core.formulas import neutralise, safe_row


@pytest.mark.parametrize(
    "cell",
    [
        "=1+1",
        '=HYPERLINK("http://x","y")',
        "+SUM(A1)",
        "-2+3+cmd|' /C calc'!A0",
        "@SUM(1)",
        "\t=1",
        "\r=1",
        "\x00x",
        "+44 20 7946 0958",
        "-3 apples",
        "--",
        "-",
        "=",
    ],
)
def test_cells_a_spreadsheet_would_run_get_a_quote(cell):
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize(
    "cell",
    ["", "plain", "a=1", " =1", "'=1", "3-2", "-3", "+7", "-0.5", "-0,5", "+1e6", "-.5", "-1E-3", "{text}", "\n=1"],
)
def test_plain_numbers_and_harmless_text_are_left_as_written(cell):
    assert neutralise(cell) == cell


def test_non_ascii_digits_are_not_plain_numbers():
    assert neutralise("-٣") == "'-٣"


def test_a_pipeline_may_turn_it_off_and_old_snapshots_have_it_on():
    row = ["=1", "-3", "ok"]
    assert safe_row(row, {"neutralise_formulas": False}) == row
    assert safe_row(row, {}) == ["'=1", "-3", "ok"]


def test_a_neutralised_cell_round_trips_through_csv_with_its_quotes():
    out = io.StringIO()
    csv.writer(out).writerow(safe_row(['=HYPERLINK("http://x")', "a,b"], {}))
    assert next(csv.reader(io.StringIO(out.getvalue()))) == ['\'=HYPERLINK("http://x")', "a,b"]
