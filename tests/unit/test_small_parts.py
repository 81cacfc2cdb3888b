import json

import pytest

from processing.adapters.azure_openai import retry_after
from processing.adapters.shards import MAX_APPEND, _blocks
from processing.core.layout import job_id_for
from processing.core.manifest import Manifest
from processing.core.records import Record, parse_lines
from processing.core.result_columns import added_columns, unique_header


def test_added_columns_never_clash_with_input_columns():
    assert added_columns(["id", "text"], ["answer"]) == ["answer", "status", "error"]
    assert added_columns(["status", "answer", "rowsmith_answer"], ["answer"]) == [
        "rowsmith_answer_2",
        "rowsmith_status",
        "error",
    ]


def test_unique_header_for_json_keys():
    assert unique_header(["a", "", "a", "a"]) == ["a", "column_2", "a_2", "a_3"]


def test_job_id_is_stable_per_upload_and_new_per_etag():
    url = "https://acct.blob.core.windows.net/input/triage/My%20Tickets.csv"
    same = job_id_for(url, '"0x1"')
    assert same == job_id_for(url.replace("%20", " "), "0x1")
    assert same != job_id_for(url, "0x2")
    assert same.startswith("my-tickets-")


def test_retry_after_prefers_milliseconds():
    assert retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({}) == 5.0


def test_record_is_one_line_whatever_the_cells_contain():
    rec = Record(1, "ok", ["line\nbreak", "\x00\x1b[31m", "\u2028"], answer="fine", usage=(3, 4, 1, 2))
    line = rec.to_line()
    assert line.count(b"\n") == 1
    (back,) = parse_lines(line)
    assert back == rec


def test_append_blocks_keep_lines_whole_and_under_the_limit():
    lines = [b"x" * (MAX_APPEND // 3) + b"\n" for _ in range(7)]
    blocks = list(_blocks(lines))
    assert all(len(b) <= MAX_APPEND and b.endswith(b"\n") for b in blocks)
    assert b"".join(blocks) == b"".join(lines)


def test_manifest_round_trips():
    m = Manifest("j", "input", "a.csv", "http://x/input/a.csv", "0x1", "default", "default/a", total_rows=25_001)
    back = Manifest.from_json(m.to_json(), etag="e")
    assert back == m and back.shards == 3
    assert json.loads(m.to_json())["version"] == 2


def test_progress_knows_when_a_range_of_rows_is_complete():
    from processing.finalize.progress import Progress

    progress = Progress(bitmap=bytearray(4))
    for i in range(3, 29):
        progress.mark(i)
    assert progress.all_seen(3, 29) and progress.all_seen(8, 16) and progress.all_seen(5, 5)
    assert not progress.all_seen(2, 29) and not progress.all_seen(3, 30)
    assert not progress.mark(10)  # a second record of a row is a duplicate


def test_a_results_json_line_stays_one_line_for_every_reader() -> None:
    import json

    from processing.finalize.results_files import json_line

    value = "a\u2028b\u2029c\x85d\x1ce\nf\rg ünï"
    line = json_line({"input": {"text": value}})
    assert line.endswith(b"\n") and len(line.decode().splitlines()) == 1
    assert json.loads(line)["input"]["text"] == value
    assert "ünï" in line.decode()  # non-ASCII text stays readable


def test_a_manifest_is_checked_against_its_own_job_source_and_prefix():
    from processing.core.manifest import BadManifest

    job = "a-0123456789ab"

    def made(**changes: object) -> Manifest:
        m = Manifest(job, "input", "triage/a.csv", "u", "0x1", "triage", "triage/a")
        for k, v in changes.items():
            setattr(m, k, v)
        return m

    assert made().check(job)
    for bad in (
        {"job": "b-0123456789ab"},
        {"source_container": "output"},
        {"source_blob": "triage/../../output/x.csv"},
        {"output_prefix": "victim/report"},
        {"pipeline_name": "other"},
        {"source_etag": "*"},
        {"shard_rows": 0},
    ):
        with pytest.raises(BadManifest):
            made(**bad).check(job)
