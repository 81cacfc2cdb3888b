"""`python -m benchmarks --quick`: every figure is produced, in the shape results.json promises.

Speed targets are not asserted: at these sizes, and on a machine shared with other test
runs, the figures say nothing about speed. What must hold is the shape and plausibility.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import BENCH_DIR
from benchmarks.report import ORDER
from processing.core.settings import APP_ROOT

pytestmark = pytest.mark.integration

# Every figure the table orders, each once.
NAMES = set(ORDER)
KEYS = {"name", "value", "unit", "baseline", "target"}


@pytest.mark.timeout(600)
def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    shipped = BENCH_DIR / "results.json"
    before = shipped.stat().st_mtime_ns if shipped.exists() else None
    env = {**os.environ, "PYTHONPATH": str(APP_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=APP_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert isinstance(results, list)
    assert {r["name"] for r in results} == NAMES
    assert len(results) == len(NAMES)
    for r in results:
        assert set(r) == KEYS, r
        assert isinstance(r["value"], int | float) and math.isfinite(r["value"]), r
        assert isinstance(r["unit"], str) and r["unit"], r
        assert isinstance(r["baseline"], int | float) and r["baseline"] > 0, r
        assert r["target"] is None or isinstance(r["target"], str), r
    value = {r["name"]: r["value"] for r in results}
    for name in NAMES - {"rss_delta_mb"}:
        assert value[name] > 0, (name, value[name])
    assert abs(value["rss_delta_mb"]) < 500
    assert 0 < value["ingest_ratio"] < 10
    assert value["storage_tx_per_row_20"] < value["storage_tx_per_row_1"]
    assert value["storage_tx_per_row_1"] >= 2  # at least a put and a delete per row, whatever else
    target = {r["name"]: r["target"] for r in results}
    assert target["storage_tx_per_row_1"] == "<= 4" and target["ingest_ratio"] == ">= 0.8"

    details = json.loads((tmp_path / "details.json").read_text())
    assert details["run"]["mode"] == "quick"
    assert details["jobs"]["job_1"]["ok_rows"] == details["jobs"]["job_1"]["rows"]
    assert details["jobs"]["quota"]["rows_lost"] == 0
    assert "storage_tx_per_row_1" in done.stdout  # the printed table
    # The shipped results are never touched by a run with --out.
    after = shipped.stat().st_mtime_ns if shipped.exists() else None
    assert after == before
