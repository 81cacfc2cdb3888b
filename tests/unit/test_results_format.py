"""The results CSV's delimiter and byte-order mark: the input's by default, or as settings say."""

from __future__ import annotations

import pytest

from processing.core.errors import ConfigurationError
from processing.core.results_format import UTF8_BOM, ResultsFormat, is_utf8, results_format
from processing.core.settings import Settings, app_values


def fmt(input_delimiter: str = ";", marked: bool = False, encoding: str = "utf-8", **settings: str) -> ResultsFormat:
    """The format for an input read with this delimiter, mark and codec; `settings`: delimiter=, bom=."""
    return results_format(input_delimiter=input_delimiter, input_bom=marked, input_encoding=encoding, **settings)


def test_by_default_the_results_keep_the_inputs_delimiter_and_mark():
    assert fmt(";", marked=True) == ResultsFormat(";", True)
    assert fmt("\t") == ResultsFormat("\t", False)
    assert fmt(",", marked=True).prefix == UTF8_BOM and fmt(",").prefix == b""


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16-le"])
def test_an_input_that_was_not_utf8_gets_a_mark_so_excel_reads_the_utf8_results(encoding: str):
    assert fmt(",", encoding=encoding).bom
    assert not fmt(",", encoding=encoding, bom="false").bom


@pytest.mark.parametrize("name", ["utf-8", "UTF8", "utf_8", ""])
def test_utf8_spelt_any_way_is_utf8(name: str):
    assert is_utf8(name) and not fmt(",", encoding=name).bom


@pytest.mark.parametrize(("setting", "expected"), [(",", ","), (";", ";"), ("tab", "\t"), ("pipe", "|")])
def test_a_delimiter_setting_overrides_the_input(setting: str, expected: str):
    assert fmt(";", delimiter=setting).delimiter == expected


def test_a_mark_setting_overrides_the_input():
    assert results_format(input_delimiter=",", input_bom=False, input_encoding="utf-8", bom="true").bom
    assert not results_format(input_delimiter=",", input_bom=True, input_encoding="cp1252", bom="false").bom


def test_an_input_without_a_delimiter_on_record_gets_commas():
    assert fmt("").delimiter == ","


def test_unknown_choices_are_refused():
    with pytest.raises(ValueError, match="results delimiter 'x'"):
        fmt(delimiter="x")
    with pytest.raises(ValueError, match="byte-order mark 'maybe'"):
        fmt(bom="maybe")


def test_the_settings_read_and_check_both_names():
    values = app_values({"ROWSMITH_RESULTS_DELIMITER": "TAB", "ROWSMITH_RESULTS_BOM": "false"})
    assert (values["results_delimiter"], values["results_bom"]) == ("tab", "false")
    defaults = Settings.from_env({"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:1"}, storage=False)
    assert (defaults.results_delimiter, defaults.results_bom) == ("input", "input")
    with pytest.raises(ConfigurationError, match="ROWSMITH_RESULTS_DELIMITER"):
        app_values({"ROWSMITH_RESULTS_DELIMITER": "space"})
    with pytest.raises(ConfigurationError, match="ROWSMITH_RESULTS_BOM"):
        app_values({"ROWSMITH_RESULTS_BOM": "yes"})
