"""The benchmarks' own pieces that need no stack: request classification and the tables."""

from __future__ import annotations

from benchmarks.bench_jobs import component
from benchmarks.proxy import classify
from benchmarks.report import markdown, rows_of, text_table

ACCOUNT = "/devstoreaccount1"


def test_queue_operations() -> None:
    assert classify("queue", "POST", f"{ACCOUNT}/rows/messages", "", {}) == ("PutMessage", "queue:rows")
    assert classify("queue", "GET", f"{ACCOUNT}/rows/messages", "numofmessages=16", {}) == (
        "GetMessages",
        "queue:rows",
    )
    assert classify("queue", "GET", f"{ACCOUNT}/rows/messages", "peekonly=true", {})[0] == "PeekMessages"
    assert classify("queue", "DELETE", f"{ACCOUNT}/rows/messages/abc", "popreceipt=x", {})[0] == "DeleteMessage"
    assert classify("queue", "PUT", f"{ACCOUNT}/rows/messages/abc", "popreceipt=x", {})[0] == "UpdateMessage"
    assert classify("queue", "DELETE", f"{ACCOUNT}/rows/messages", "", {})[0] == "ClearMessages"
    assert classify("queue", "GET", f"{ACCOUNT}/rows", "comp=metadata", {})[0] == "GetQueueMetadata"


def test_blob_operations_and_kinds() -> None:
    shard = f"{ACCOUNT}/jobs/job-1/shards/00000.jsonl"
    assert classify("blob", "PUT", shard, "comp=appendblock", {}) == ("AppendBlock", "blob:shard")
    assert classify("blob", "PUT", shard, "", {"x-ms-blob-type": "AppendBlob"}) == ("CreateAppendBlob", "blob:shard")
    assert classify("blob", "HEAD", shard, "", {}) == ("GetBlobProperties", "blob:shard")
    manifest = f"{ACCOUNT}/jobs/job-1/manifest.json"
    assert classify("blob", "PUT", manifest, "", {"x-ms-blob-type": "BlockBlob"}) == ("PutBlob", "blob:manifest")
    assert classify("blob", "GET", f"{ACCOUNT}/jobs/job-1/progress.json", "", {}) == ("GetBlob", "blob:progress")
    out = f"{ACCOUNT}/output/p/file.results.csv"
    assert classify("blob", "PUT", out, "comp=block&blockid=x", {}) == ("PutBlock", "blob:output")
    assert classify("blob", "PUT", out, "comp=blocklist", {}) == ("PutBlockList", "blob:output")
    assert classify("blob", "GET", f"{ACCOUNT}/jobs", "restype=container&comp=list", {}) == (
        "ListBlobs",
        "blob:jobs(container)",
    )


def test_components() -> None:
    assert component("PutMessage", "queue:rows") == "ingest"
    assert component("DeleteMessage", "queue:rows") == "process"
    assert component("AppendBlock", "blob:shard") == "process"
    assert component("GetBlob", "blob:shard") == "finalize"
    assert component("GetMessages", "queue:rows-poison") == "idle polling (poison queues)"
    assert component("GetBlobProperties", "blob:input") == "finalize"


def test_tables() -> None:
    results = [
        {"name": "storage_tx_per_row_1", "value": 3.2, "unit": "tx/row", "baseline": 3.06, "target": "<= 4"},
        {"name": "ingest_ratio", "value": 0.5, "unit": "x ceiling", "baseline": 900.0, "target": ">= 0.8"},
        {"name": "finalize_seconds", "value": 12.0, "unit": "s", "baseline": 4.0, "target": None},
    ]
    extra = {
        "ingest_ratio": {"passed": False, "baseline_unit": "rows/s"},
        "storage_tx_per_row_1": {"passed": True},
    }
    rows = rows_of(results, extra)
    assert [r[0] for r in rows] == ["ingest_ratio", "storage_tx_per_row_1", "finalize_seconds"]
    assert [r[5] for r in rows] == ["FAIL", "pass", "-"]
    assert "900 rows/s" in rows[0][3]
    assert "ingest_ratio" in text_table(rows)
    md = markdown(results, {"results": extra, "machine": {"cpu": "test cpu", "cores": 2}})
    assert "| ingest_ratio | 0.5 | x ceiling |" in md
    assert "test cpu, 2 cores" in md
