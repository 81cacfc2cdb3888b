"""The layout's validator: every name a path is derived from (processing/core/layout.py)."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processing.core import layout
from processing.core.errors import BadName
from processing.core.layout import (
    AZURE_MAX_BLOB_NAME,
    MAX_INPUT_NAME,
    check_blob_name,
    check_claim,
    check_etag,
    check_event_names,
    check_job_id,
    error_report_blob,
    is_pipeline_name,
    job_id_for,
    name_problem,
    output_prefix,
    results_blobs,
)

URL = "https://acct.blob.core.windows.net/input/"


@pytest.mark.parametrize(
    "name",
    [
        "triage/../../output/triage/support_tickets.results.csv",
        "../dd1.csv",
        "./a.csv",
        "a//b.csv",
        "/a.csv",
        "a/",
        "a\\b.csv",
        "bell\x07.csv",
        "evil\u202ecsv.txt",
        "lone\ud800.csv",
        "dir./a.csv",
        "x" * (MAX_INPUT_NAME - 3) + ".csv",
        "",
    ],
)
def test_unsafe_blob_names_are_refused(name: str) -> None:
    assert name_problem(name)
    with pytest.raises(BadName):
        check_blob_name(name)


@pytest.mark.parametrize("name", ["a.csv", "triage/support tickets.csv", "é/ü.CSV", "a.b/c..d.csv", "x" * 896 + ".csv"])
def test_ordinary_names_pass(name: str) -> None:
    assert check_blob_name(name) == name


def test_every_name_derived_from_the_longest_input_stays_under_azures_limit() -> None:
    name = "p/" + "x" * (MAX_INPUT_NAME - 6) + ".csv"
    job = job_id_for(URL + name, "0x1")
    prefix = output_prefix(name)
    for derived in (*results_blobs(prefix, job, superseded=True), error_report_blob(prefix)):
        assert len(derived) < AZURE_MAX_BLOB_NAME


def test_job_ids_match_exactly() -> None:
    job = job_id_for(URL + "triage/Support Tickets.csv", '"0x8D"')
    assert check_job_id(job) == job
    for bad in ("../input/evil", job + "\n", job + "/x", "j", "A-0123456789ab", 7, None, "-0123456789ab"):
        with pytest.raises(BadName):
            check_job_id(bad)


def test_claims_must_sit_under_their_own_jobs_prefix() -> None:
    job = "a-0123456789ab"
    assert check_claim(job, f"{job}/claims/000000007.json")
    assert check_claim(job, f"{job}/claims/000000007-0a1b2c3d.json")
    for bad in (
        "../input/evil3/rows.json",
        f"{job}/claims/../../b-0123456789ab/manifest.json",
        "b-0123456789ab/claims/000000007.json",
        f"{job}/manifest.json",
        f"{job}/claims/7.json",
    ):
        with pytest.raises(BadName):
            check_claim(job, bad)


def test_etags_are_single_values_never_a_wildcard() -> None:
    assert check_etag('"0x8DC1"') == "0x8DC1"
    for bad in ("*", '"*"', "", "a,b", "a b", None):
        with pytest.raises(BadName):
            check_etag(bad)


def test_pipeline_names_fullmatch() -> None:
    assert is_pipeline_name("triage")
    assert not is_pipeline_name("triage\n") and not is_pipeline_name("Triage") and not is_pipeline_name("..")


def test_event_names_must_be_in_input_and_agree_with_the_url() -> None:
    assert check_event_names("input", "t/a.csv", URL + "t/a.csv")[1] == "t/a.csv"
    assert check_event_names("input", "t/a b.csv", URL + "t/a%20b.csv")[1] == "t/a b.csv"
    with pytest.raises(BadName, match="container"):
        check_event_names("output", "t/a.results.csv", "https://acct.blob.core.windows.net/output/t/a.results.csv")
    with pytest.raises(BadName):  # the URL names another blob than the subject
        check_event_names("input", "t/a.csv", "https://acct.blob.core.windows.net/output/t/a.csv")
    with pytest.raises(BadName):  # the SDK would collapse `..` in the URL
        check_event_names("input", "t/a.csv", URL + "x/../t/a.csv")
    with pytest.raises(BadName):
        check_event_names("input", "t/a.csv", URL + "t/a.csv?comp=list")


def test_outputs_are_named_one_to_one_from_inputs() -> None:
    names = ["x.csv", "default/x.csv", "x.CSV", "x.Csv", "x.CSV.csv", "x.csv.csv", "default/x.CSV", "x.results.csv"]
    prefixes = [output_prefix(n) for n in names]
    assert len(set(prefixes)) == len(names)
    assert dict(zip(names[:3], prefixes[:3], strict=True)) == {
        "x.csv": "x",
        "default/x.csv": "default/x",
        "x.CSV": "x.CSV",
    }
    job = "x-0123456789ab"
    # A superseded job's names never equal another input's canonical names.
    assert results_blobs(output_prefix("x.csv"), job, superseded=True)[0] == "x.results.x-0123456789ab.csv"
    assert output_prefix(f"x.results.{job}.csv") + ".results.csv" != "x.results.x-0123456789ab.csv"


_suffixes = st.sampled_from([".csv", ".CSV", ".Csv", ".csv.csv", ".CSV.csv", ""])


_ends = st.sampled_from([".csv", ".CSV", ".cSv"])


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30), _suffixes, _suffixes, _ends, _ends)
def test_output_prefix_is_injective(a: str, b: str, sa: str, sb: str, ea: str, eb: str) -> None:
    x, y = a + sa + ea, b + sb + eb
    if x != y:
        assert output_prefix(x) != output_prefix(y)


@given(st.text(max_size=1100))
def test_any_text_either_is_refused_or_stays_inside_its_prefix(name: str) -> None:
    # Never an exception other than BadName, and an accepted name never leaves the prefix
    # however a client normalises its path (posixpath.normpath collapses as the SDK does).
    try:
        checked = check_blob_name(name)
    except BadName:
        return
    assert posixpath.normpath(f"/input/{checked}") == f"/input/{checked}"
    assert len(checked) <= MAX_INPUT_NAME
    assert not any(c in checked for c in "\\\x00\x07\u202e")
    checked.encode("utf-8")  # encodable
    prefix = output_prefix(checked)
    for derived in results_blobs(prefix, "x-0123456789ab", superseded=True):
        assert posixpath.normpath(f"/output/{derived}") == f"/output/{derived}"
        assert len(derived) < AZURE_MAX_BLOB_NAME


@given(st.text(max_size=80), st.text(max_size=80))
def test_any_job_or_claim_text_is_refused_or_stays_in_the_jobs_prefix(job: str, claim: str) -> None:
    for value, check in ((job, check_job_id), (claim, lambda c: check_claim("a-0123456789ab", c))):
        try:
            accepted = check(value)
        except BadName:
            continue
        assert posixpath.normpath(f"/jobs/{accepted}") == f"/jobs/{accepted}"


@given(st.text(max_size=200), st.text(max_size=200))
def test_job_id_for_any_text_is_a_valid_job_id(url: str, etag: str) -> None:
    assert layout.JOB_ID.fullmatch(job_id_for(url, etag))
