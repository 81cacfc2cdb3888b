"""What the benchmarks share: sizes, results, the test data, process readings, the runner, submit."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from localdev import control
from localdev.event_grid.events import blob_created_message
from localdev.stack import Stack
from processing.adapters import job_store
from processing.core import layout
from processing.core.layout import INPUT_CONTAINER, JOBS_CONTAINER, UPLOADS_QUEUE
from processing.core.manifest import Manifest
from processing.core.settings import APP_ROOT
from processing.core.states import FINAL_STATES

BENCH_DIR = Path(__file__).resolve().parent
PIPELINES_DIR = BENCH_DIR / "pipelines"

# Pipelines in benchmarks/pipelines (one text answer per row, the same prompt).
PIPELINE_ONE = "bench"  # rows_per_message = 1
PIPELINE_TWENTY = "bench-batch20"  # rows_per_message = 20
PIPELINE_QUOTA = "bench-quota"  # rows_per_message = 1, rpm/tpm for the app's own limiter
PIPELINE_BUDGET = "bench-budget"  # PIPELINE_ONE with a budget it never reaches (the ledger's cost)


@dataclass(frozen=True)
class Sizes:
    ingest_rows: int  # the big ingest, for the rate and the peak RSS
    ingest_small_rows: int  # the small ingest, for the peak RSS only
    job_rows: int  # the end-to-end jobs at emulator latency 0 (CPU and storage transactions)
    quota_rows: int  # the end-to-end job under quota
    finalize_lines: int
    finalize_interval: float  # ROWSMITH_FINALIZE_INTERVAL_SECONDS of the runner
    quota_rpm: int = 600
    quota_tpm: int = 60_000
    quota_latency_ms: float = 150.0
    ingest_concurrency: int = 32  # ROWSMITH_INGEST_CONCURRENCY's default
    job_timeout: float = 900.0


# The full run uses the production finalize interval: the completion checks of a real job are
# part of its cost. The quick one, for the smoke test, takes seconds: its figures are real but
# mean little at these sizes.
#            ingest   small   jobs  quota  finalize  finalize interval
FULL = Sizes(200_000, 20_000, 3_000, 3_000, 200_000, 10.0)
QUICK = Sizes(2_000, 500, 200, 60, 5_000, 1.0, job_timeout=120.0)


# What results.json holds of each figure, in this order.
PUBLIC_KEYS = ("name", "value", "unit", "baseline", "target")


@dataclass
class Result:
    """One figure. `public()` is what results.json holds; the rest is for the table."""

    name: str
    value: float
    unit: str
    baseline: float | None
    target: str | None
    passed: bool | None = None  # None: no target
    baseline_unit: str = ""
    note: str = ""

    def public(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in PUBLIC_KEYS}


@dataclass
class Context:
    """What every benchmark group gets."""

    stack: Stack
    sizes: Sizes
    workdir: Path
    pipelines_dir: Path
    details: dict[str, Any]
    log: Callable[[str], None]
    _csvs: dict[int, Path] = field(default_factory=dict)

    @property
    def direct(self) -> str:
        """Azurite's own connection string: the benchmark's set-up and polling are never counted."""
        return self.stack.connection_string

    def csv(self, rows: int) -> Path:
        path = self._csvs.get(rows)
        if path is None:
            # Written afresh by each run (a second or two at 200,000 rows), never left over from an older one.
            path = write_csv(self.workdir / "data" / f"rows-{rows}.csv", rows)
            self._csvs[rows] = path
        return path

    def env(self, stack: Stack | None = None, **overrides: str) -> dict[str, str]:
        """The app's environment against a stack (default: the main one), as the runner and workers get it."""
        env = {**os.environ, **(stack or self.stack).app_settings()}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APP_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env["ROWSMITH_PIPELINES_DIR"] = str(self.pipelines_dir)
        env["ROWSMITH_INGEST_CONCURRENCY"] = str(self.sizes.ingest_concurrency)
        env["ROWSMITH_FINALIZE_INTERVAL_SECONDS"] = f"{self.sizes.finalize_interval:g}"
        env.update(overrides)
        return env


# --- test data -------------------------------------------------------------------------------

_TEXT = (
    "export fails after the update and the report stays empty although the filters look right "
    "billing page shows the old plan the invoice has a wrong address please advise soon thanks"
)
_WORDS = _TEXT.split(" ")


def row_cells(index: int) -> list[str]:
    """Row `index` of every benchmark CSV: id, subject, body (about 160 bytes, deterministic)."""
    words = [_WORDS[(index * 7 + k * 3) % len(_WORDS)] for k in range(22)]
    return [str(index + 1), f"Ticket {index + 1}: {' '.join(words[:4])}", " ".join(words[4:])]


HEADER = ["id", "subject", "body"]


def write_csv(path: Path, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow(row_cells(i))
    tmp.replace(path)
    return path


# --- the machine and this process's neighbours ---------------------------------------------------

_IGNORED = (OSError, ValueError, KeyError, subprocess.SubprocessError)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(*_IGNORED):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(*_IGNORED):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    node = ""
    with contextlib.suppress(*_IGNORED):
        found = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10, check=False)
        node = found.stdout.strip()
    azurite = ""
    with contextlib.suppress(*_IGNORED):
        azurite = json.loads((APP_ROOT / "node_modules" / "azurite" / "package.json").read_text())["version"]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "node": node,
        "azurite": azurite,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a live process, in MB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# --- subprocesses ----------------------------------------------------------------------------


_workers: set[subprocess.Popen[bytes]] = set()


def stop_workers() -> None:
    """Kill the workers still running (an interrupted run: their stack is about to stop)."""
    for process in list(_workers):
        with contextlib.suppress(OSError):
            process.kill()


def run_worker(ctx: Context, args: list[str], env: Mapping[str, str], *, timeout: float = 1800) -> dict[str, Any]:
    """`python -m benchmarks.worker ARGS` in a fresh process; its last stdout line is JSON."""
    log = ctx.workdir / "workers.log"
    with log.open("ab") as err:
        err.write(f"\n=== worker {' '.join(args)}\n".encode())
        err.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", *args],
            cwd=APP_ROOT,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=err,
        )
        _workers.add(process)
        try:
            stdout, _ = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            _workers.discard(process)
    lines = stdout.decode(errors="replace").strip().splitlines()
    if process.returncode != 0 or not lines:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"worker {args[0]} exited with {process.returncode}; log tail:\n{tail}")
    return json.loads(lines[-1])


# --- storage and the emulator, seen from the benchmark (direct to Azurite, never counted) ---------


class Direct:
    """The benchmark's own storage clients, straight to Azurite.

    `app_blob_url`: the blob endpoint as the app sees it, when that differs (a proxy in
    front of Azurite). Events name blobs by that URL, as Event Grid names them by the
    account's own endpoint: the app refuses an event for a blob outside its input container.
    """

    def __init__(self, connection_string: str, *, app_blob_url: str | None = None) -> None:
        self.blobs = BlobServiceClient.from_connection_string(connection_string, use_env_settings=False)
        self.queues = QueueServiceClient.from_connection_string(connection_string, use_env_settings=False)
        self.app_blob_url = app_blob_url

    async def close(self) -> None:
        await self.blobs.close()
        await self.queues.close()

    async def upload_input(self, path: Path, pipeline: str, name: str) -> tuple[str, str]:
        """Upload a CSV as a user would; returns (job id, the BlobCreated event Event Grid would raise)."""
        blob_name = f"{pipeline}/{name}"
        blob = self.blobs.get_blob_client(INPUT_CONTAINER, blob_name)
        with path.open("rb") as data:
            result = await blob.upload_blob(
                data, overwrite=True, content_settings=ContentSettings(content_type="text/csv"), max_concurrency=4
            )
        etag = result["etag"]
        url = blob.url
        if self.app_blob_url:
            url = self.app_blob_url.rstrip("/") + url.removeprefix(self.blobs.url.rstrip("/"))
        event = blob_created_message(
            url=url, container=INPUT_CONTAINER, blob=blob_name, etag=etag, size=path.stat().st_size
        )
        return layout.job_id_for(url, etag), event

    async def send_event(self, event: str) -> None:
        await self.queues.get_queue_client(UPLOADS_QUEUE).send_message(event)

    async def manifest(self, job: str) -> Manifest | None:
        return await job_store.load(self.blobs.get_container_client(JOBS_CONTAINER), job)

    async def wait_final(self, job: str, timeout: float, poll: float = 0.2) -> Manifest:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await self.manifest(job)
            if found is not None and found.state in FINAL_STATES:
                return found
            await asyncio.sleep(poll)
        raise TimeoutError(f"job {job} did not finish within {timeout:.0f} s")

    async def queue_count(self, queue: str) -> int:
        props = await self.queues.get_queue_client(queue).get_queue_properties()
        return int(props.approximate_message_count or 0)

    async def clear_queue(self, queue: str) -> None:
        await self.queues.get_queue_client(queue).clear_messages()

    async def download(self, container: str, name: str) -> bytes:
        stream = await self.blobs.get_blob_client(container, name).download_blob()
        return await stream.readall()

    async def blob_size(self, container: str, name: str) -> int:
        return int((await self.blobs.get_blob_client(container, name).get_blob_properties()).size)


async def emulator(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The Azure OpenAI emulator's control API (`/_emulator/stats`, `/_emulator/config`, ...)."""
    return await control.call(stack.emulator_url, method, path, body, header=stack.identity_header)


# --- pipelines --------------------------------------------------------------------------------

_LIMITER_KEY = re.compile(r"^\s*(rpm|tpm)\s*=", re.MULTILINE)


def effective_pipelines(workdir: Path) -> tuple[Path, str]:
    """The pipelines folder to use, and whether the quota pipeline's `rpm`/`tpm` are applied.

    The app's own RPM/TPM limiter reads `rpm` and `tpm` from the pipeline. A version of
    processing/ without it refuses unknown settings: then the benchmark runs a copy of the
    pipelines without those two lines, and says so.
    """
    from processing.core.errors import ConfigurationError
    from processing.core.pipelines import load_pipeline

    try:
        load_pipeline(PIPELINE_QUOTA, PIPELINES_DIR)
    except ConfigurationError as exc:
        if "unknown setting" not in str(exc):
            raise
        stripped = workdir / "pipelines"
        stripped.mkdir(parents=True, exist_ok=True)
        for path in PIPELINES_DIR.glob("*.toml"):
            text = "\n".join(line for line in path.read_text().splitlines() if not _LIMITER_KEY.match(line))
            (stripped / path.name).write_text(text + "\n")
        load_pipeline(PIPELINE_QUOTA, stripped)
        return stripped, "not supported by processing.core.pipelines yet: rpm/tpm stripped from the quota pipeline"
    return PIPELINES_DIR, "applied (rpm/tpm accepted by processing.core.pipelines)"
