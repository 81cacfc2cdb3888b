"""Hostile input, tried as an attacker would, on an OAuth stack (where path normalisation bites).

With a bearer token the Azure SDK collapses `.` and `..` path segments and the service serves
the normalised path, so a forged name can reach another job's or another container's blobs.
Each test forges one message, event or planted blob of issue 11 and asserts by outcome: a
content-hash listing of every container shows nothing changed outside the attacked job's own
prefix, the victim's results are byte-identical, and a malformed message is dropped once.

The functions are called in this process, one message at a time, as the Functions host would
(a function that returns completes its message: delivered once); the last test runs the real
runner to show a malformed message is not retried and never reaches a poison queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp.connector
import pytest

import function_app
from localdev.event_grid.events import blob_created_event
from localdev.stack import Stack
from processing.core import layout
from processing.core.layout import ALL_QUEUES, INPUT_CONTAINER, JOBS_CONTAINER, OUTPUT_CONTAINER
from processing.core.manifest import Manifest
from processing.core.messages import RowsMessage
from rowsmith_cli import commands
from tests.integration.faults_util import Workers, call, clear_queues, close_in_process_clients, in_process_env, message
from tests.integration.harness import download, emulator, local_target, manifest, queue_lengths

pytestmark = pytest.mark.integration

# conftest.py: this module's `stack` is an OAuth stack (and only that).
STACK_STORAGE_AUTH = ("oauth",)
# Each test raises its own events and counts every queue, so no local Event Grid.
STACK_EVENT_GRID = False

VICTIM = "echo/support_tickets.csv"
VICTIM_RESULTS = "echo/support_tickets.results.csv"
VICTIM_DATA = b"id,text\n1,printer on fire\n2,cannot log in\n"


@pytest.fixture
async def app(stack: Stack, clean: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    # Finalize is enqueued with no delay, so a test can take it at once.
    in_process_env(stack, monkeypatch, ROWSMITH_FINALIZE_INTERVAL_SECONDS="0")
    # The app's clients here run in this process, whose aiohttp made its verifying TLS context at
    # import, before SSL_CERT_FILE named the stack's CA (the runner gets it at start): add the CA.
    assert stack.ca_file is not None
    aiohttp.connector._SSL_CONTEXT_VERIFIED.load_verify_locations(cafile=str(stack.ca_file))
    yield
    await close_in_process_clients()


# --- storage as the attacker (and the test) sees it ---------------------------------------------


async def snapshot(stack: Stack) -> dict[str, str]:
    """`container/name` -> sha256 of the content, for every blob of every container."""
    target = local_target(stack)
    found: dict[str, str] = {}
    try:
        async for container in target.blobs.list_containers():
            client = target.blobs.get_container_client(container.name)
            async for blob in client.list_blobs():
                data = await (await client.download_blob(blob.name)).readall()
                found[f"{container.name}/{blob.name}"] = hashlib.sha256(data).hexdigest()
    finally:
        await target.close()
    return found


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


async def put(stack: Stack, container: str, name: str, data: bytes) -> tuple[str, str]:
    """Write a blob as someone with data rights would; (etag, url)."""
    target = local_target(stack)
    try:
        blob = target.blobs.get_blob_client(container, name)
        return (await blob.upload_blob(data, overwrite=True))["etag"], blob.url
    finally:
        await target.close()


async def drain(stack: Stack, queue: str) -> list[str]:
    target = local_target(stack)
    try:
        client = target.queues.get_queue_client(queue)
        taken = []
        async for msg in client.receive_messages(messages_per_page=32, visibility_timeout=30):
            taken.append(msg.content)
            await client.delete_message(msg)
        return taken
    finally:
        await target.close()


async def model_calls(stack: Stack) -> int:
    return (await emulator(stack, "GET", "/_emulator/stats"))["requests"]


# --- driving the app --------------------------------------------------------------------------


async def ingest(stack: Stack, name: str, data: bytes) -> tuple[str, list[str], str]:
    """Upload and ingest; (job, row messages, finalize message), all taken off their queues."""
    etag, url = await put(stack, INPUT_CONTAINER, name, data)
    event = json.dumps(blob_created_event(url=url, container=INPUT_CONTAINER, blob=name, etag=etag, size=len(data)))
    await call(function_app.ingest_upload)(message(event))
    (final,) = await drain(stack, "finalize")
    return layout.job_id_for(url, etag), await drain(stack, "rows"), final


async def run_job(stack: Stack, name: str, data: bytes) -> str:
    job, rows, final = await ingest(stack, name, data)
    for body in rows:
        await call(function_app.process_rows)(message(body))
    await call(function_app.finalize_job)(message(final))
    assert (await manifest(stack, job)).state == "done"
    return job


async def deliver_once(queue_function: Any, body: str, caplog: pytest.LogCaptureFixture) -> None:
    """Deliver `body` as the host would; it must be completed (the function returns) and logged as
    dropped, without the log echoing what the sender wrote."""
    caplog.clear()
    await call(queue_function)(message(body))
    assert "dropping unreadable message" in caplog.text
    for marker in ("evil", "\ud800", "attacker"):
        assert marker not in caplog.text


@pytest.fixture
async def victim(stack: Stack, app: None) -> tuple[str, bytes]:
    """A finished job whose results an attacker wants: (job, its results' bytes)."""
    job = await run_job(stack, VICTIM, VICTIM_DATA)
    return job, await download(stack, OUTPUT_CONTAINER, VICTIM_RESULTS)


def planted_manifest(job: str, /, **fields: Any) -> bytes:
    m = Manifest(job, INPUT_CONTAINER, "echo/evil.csv", "https://x/input/echo/evil.csv", "0x1", "echo", "echo/evil")
    data = json.loads(m.to_json())
    data.update(state="processing", total_rows=1, header=["id", "text"], **fields)
    return json.dumps(data).encode()


# --- the attacks --------------------------------------------------------------------------------


async def test_a_finalize_message_with_a_traversal_job_changes_nothing(
    stack: Stack, victim: tuple[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    # `jobs/../input/evil/manifest.json` is `input/evil/manifest.json` once normalised.
    await put(stack, INPUT_CONTAINER, "evil/manifest.json", planted_manifest("../input/evil"))
    before = await snapshot(stack)
    await deliver_once(
        function_app.finalize_job, json.dumps({"v": 1, "type": "finalize", "job": "../input/evil"}), caplog
    )
    assert changed(before, await snapshot(stack)) == set()
    assert await download(stack, OUTPUT_CONTAINER, VICTIM_RESULTS) == victim[1]


@pytest.mark.parametrize(
    "fields",
    [
        # Another job's blob, or another container's, as the source; eTag `*` would match anything.
        {"source_container": OUTPUT_CONTAINER, "source_blob": VICTIM_RESULTS, "source_etag": "*"},
        # An output prefix of the attacker's choosing: the victim's results.
        {"output_prefix": "echo/support_tickets"},
        # The manifest is stored under another job's id.
        {"job": "other-0123456789ab"},
    ],
)
async def test_a_planted_manifest_that_does_not_describe_its_job_is_never_acted_on(
    stack: Stack, victim: tuple[str, bytes], fields: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    job = "evil-0123456789ab"
    await put(stack, JOBS_CONTAINER, layout.manifest_blob(job), planted_manifest(job, **fields))
    before = await snapshot(stack)
    await deliver_once(function_app.finalize_job, json.dumps({"v": 1, "type": "finalize", "job": job}), caplog)
    assert changed(before, await snapshot(stack)) == set()
    assert await download(stack, OUTPUT_CONTAINER, VICTIM_RESULTS) == victim[1]


async def test_a_forged_upload_event_for_another_users_results_is_refused(
    stack: Stack, victim: tuple[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    _etag, url = await put(stack, INPUT_CONTAINER, "echo/anything.csv", b"id,text\n")
    base = url.rsplit("/input/", 1)[0]
    name = "echo/../../output/" + VICTIM_RESULTS
    forged = json.loads(
        json.dumps(blob_created_event(url=f"{base}/input/{name}", container="input", blob=name, etag="*", size=1))
    )
    before, calls = await snapshot(stack), await model_calls(stack)
    for etag in ("*", "0x1"):
        forged["data"]["eTag"] = etag
        await deliver_once(function_app.ingest_upload, json.dumps(forged), caplog)
    # Straight at the output container too: only `input` starts a job.
    direct = json.dumps(
        blob_created_event(
            url=f"{base}/output/{VICTIM_RESULTS}", container="output", blob=VICTIM_RESULTS, etag="0x1", size=1
        )
    )
    await deliver_once(function_app.ingest_upload, direct, caplog)
    assert changed(before, await snapshot(stack)) == set()
    assert await model_calls(stack) == calls  # nobody paid for a model call
    assert await queue_lengths(stack) == dict.fromkeys(ALL_QUEUES, 0)


async def test_a_rows_message_with_a_traversal_claim_runs_no_model_call(
    stack: Stack, app: None, caplog: pytest.LogCaptureFixture
) -> None:
    job, rows, _final = await ingest(stack, "echo/pending.csv", b"id,text\n1,a\n")
    # A pipeline snapshot with the attacker's prompt and deployment, and rows to go with it.
    await put(
        stack, INPUT_CONTAINER, "evil3/manifest.json", planted_manifest("../input/evil3", pipeline={"prompt": "x"})
    )
    await put(stack, INPUT_CONTAINER, "evil3/rows.json", b'[[0, ["attacker"]]]')
    before, calls = await snapshot(stack), await model_calls(stack)
    for forged in (
        {"v": 1, "type": "rows", "job": job, "claim": "../input/evil3/rows.json"},
        {"v": 1, "type": "rows", "job": "../input/evil3", "claim": "../input/evil3/rows.json"},
        {"v": 1, "type": "rows", "job": job, "claim": f"{job}/claims/../../../input/evil3/rows.json"},
    ):
        await deliver_once(function_app.process_rows, json.dumps(forged), caplog)
    assert changed(before, await snapshot(stack)) == set()
    assert await model_calls(stack) == calls
    assert rows  # the job's own rows are still to run


async def test_a_forged_rows_message_cannot_replace_a_victims_cells_or_answer(
    stack: Stack, app: None, caplog: pytest.LogCaptureFixture
) -> None:
    # The reference: the same file run undisturbed (same input name and content: same results bytes).
    job, rows, final = await ingest(stack, VICTIM, VICTIM_DATA)
    before, calls = await snapshot(stack), await model_calls(stack)
    genuine = RowsMessage.from_json(rows[0])
    first = genuine.rows[0].index
    forgeries = [
        {"rows": [[first, ["1", "attacker cells"]]]},  # unsigned
        {"rows": [[first, ["1", "attacker cells"]]], "sig": "0" * 64},  # a made-up signature
        {"rows": [[first, ["1", "attacker cells"]]], "sig": genuine.sig},  # the real row's signature
        {"rows": [[first + 5, list(genuine.rows[0].cells)]], "sig": genuine.sig},  # beyond the job's rows
    ]
    for fields in forgeries:
        forged = json.dumps({"v": 1, "type": "rows", "job": job, **fields})
        await deliver_once(function_app.process_rows, forged, caplog)
        # Its poison form too: a forged failure record would win as well.
        await deliver_once(function_app.record_poison_rows, forged, caplog)
    assert changed(before, await snapshot(stack)) == set()
    assert await model_calls(stack) == calls
    for body in rows:
        await call(function_app.process_rows)(message(body))
    await call(function_app.finalize_job)(message(final))
    out = (await download(stack, OUTPUT_CONTAINER, VICTIM_RESULTS)).decode()
    assert "attacker" not in out and "printer on fire" in out and "cannot log in" in out


async def test_lone_surrogates_in_messages_never_wedge_a_job(
    stack: Stack, app: None, caplog: pytest.LogCaptureFixture
) -> None:
    job, rows, final = await ingest(stack, "echo/surrogates.csv", b"id,text\n1,a\n")
    before = await snapshot(stack)
    await deliver_once(function_app.finalize_job, '{"v":1,"type":"finalize","job":"\\ud800"}', caplog)
    await deliver_once(function_app.retry_poison_finalize, '{"v":1,"type":"finalize","job":"\\ud800"}', caplog)
    poison = json.dumps({**json.loads(rows[0]), "rows": [[0, ["1", "X"]]]}).replace('"X"', '"\\ud800"')
    await deliver_once(function_app.record_poison_rows, poison, caplog)
    assert changed(before, await snapshot(stack)) == set()
    for body in rows:
        await call(function_app.process_rows)(message(body))
    await call(function_app.finalize_job)(message(final))
    done = await manifest(stack, job)
    assert done.state == "done" and done.counts == {"ok": 1, "error": 0}


async def test_uploads_that_differ_by_folder_or_case_get_one_results_file_each(
    stack: Stack, app: None, tmp_path: Path
) -> None:
    names = ["x.csv", "default/x.csv", "x.CSV"]
    jobs = {name: await run_job(stack, name, f"id,text\n1,{name}\n".encode()) for name in names}
    results = {}
    target = local_target(stack)
    try:
        for name, job in jobs.items():
            code, info = await commands.results(target, job, tmp_path / f"{job}.csv", jsonl=False)
            assert code == 0, info
            results[name] = (info["results_blob"], Path(info["file"]).read_text(encoding="utf-8"))
    finally:
        await target.close()
    assert {name: blob for name, (blob, _) in results.items()} == {
        "x.csv": "output/x.results.csv",
        "default/x.csv": "output/default/x.results.csv",
        "x.CSV": "output/x.CSV.results.csv",
    }
    for name, (_, text) in results.items():
        assert f"1,{name}," in text  # each job's own rows


async def test_a_newer_upload_never_silently_replaces_an_older_jobs_results(
    stack: Stack, app: None, tmp_path: Path
) -> None:
    old_job = await run_job(stack, "echo/report.csv", b"id,text\n1,old\n")
    old_bytes = await download(stack, OUTPUT_CONTAINER, "echo/report.results.csv")
    new_job = await run_job(stack, "echo/report.csv", b"id,text\n1,new\n")
    assert (
        (await download(stack, OUTPUT_CONTAINER, "echo/report.results.csv"))
        .decode()
        .splitlines()[1]
        .startswith("1,new,")
    )
    target = local_target(stack)
    try:
        for job, expected in ((old_job, old_bytes), (new_job, None)):
            code, info = await commands.results(target, job, tmp_path / f"{job}.csv", jsonl=False)
            assert code == 0, info
            got = Path(info["file"]).read_bytes()
            if expected is not None:
                assert got == expected  # the older job's own results, byte for byte
            else:
                assert got.decode().splitlines()[1].startswith("1,new,")
    finally:
        await target.close()
    old = await manifest(stack, old_job)
    assert old.superseded and old.results["csv"] == f"echo/report.results.{old_job}.csv"


@pytest.mark.parametrize(
    "name",
    [
        "echo/bell\x07.csv",
        "echo/\u202egnp.csv",
        "../dd1.csv",
        "echo/./x.csv",
        "echo\\x.csv",
        "e/" + "x" * 1000 + ".csv",
    ],
)
async def test_an_event_naming_an_unsafe_blob_is_dropped_and_leaves_no_job(
    stack: Stack, app: None, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The name is only in the event: a blob so named would break Azurite's own listing.
    _etag, url = await put(stack, INPUT_CONTAINER, "echo/anything.csv", b"id,text\n")
    base = url.rsplit("/input/", 1)[0]
    event = json.dumps(
        blob_created_event(url=f"{base}/input/{quote(name)}", container="input", blob=name, etag="0x8D1", size=1)
    )
    before = await snapshot(stack)
    await deliver_once(function_app.ingest_upload, event, caplog)
    await deliver_once(function_app.record_poison_upload, event, caplog)
    assert changed(before, await snapshot(stack)) == set()  # no manifest: no job left in `ingesting`


async def test_a_finalize_check_that_keeps_failing_ends_its_job_with_a_report(stack: Stack, app: None) -> None:
    job, _rows, final = await ingest(stack, "echo/stuck.csv", b"id,text\n1,a\n")
    for poisoned in range(3):  # rounds 1-3 look again later (hidden for 300 s), counted in the message
        await call(function_app.retry_poison_finalize)(message(json.dumps({**json.loads(final), "poisoned": poisoned})))
        assert (await queue_lengths(stack))["finalize"] == 1
        await clear_queues(stack)
        assert (await manifest(stack, job)).state == "processing"
    await call(function_app.retry_poison_finalize)(message(json.dumps({**json.loads(final), "poisoned": 3})))
    failed = await manifest(stack, job)
    assert failed.state == "failed" and failed.error["where"] == "finalize"
    report = json.loads(await download(stack, OUTPUT_CONTAINER, "echo/stuck.error.json"))
    assert report["job"] == job
    assert await queue_lengths(stack) == dict.fromkeys(ALL_QUEUES, 0)  # nothing more to come


async def test_a_malformed_message_is_delivered_once_by_the_runner(stack: Stack, workers: Workers) -> None:
    worker = workers.start()
    bodies = [
        {"v": 1, "type": "rows", "rows": [[0, ["attacker"]]]},  # no job
        {"v": 1, "type": "rows", "job": "a-0123456789ab", "rows": [[0, ["x"]]], "waits": "abc"},
        {"v": 1, "type": "finalize", "job": "a-0123456789ab", "checks": -1},
    ]
    target = local_target(stack)
    try:
        for body in bodies[:2]:
            await target.queues.get_queue_client("rows").send_message(json.dumps(body))
        await target.queues.get_queue_client("finalize").send_message(json.dumps(bodies[2]))
    finally:
        await target.close()
    for _ in range(100):
        if worker.log().count("dropping unreadable message") >= 3 and not any((await queue_lengths(stack)).values()):
            break
        await asyncio.sleep(0.2)
    log = worker.log()
    assert log.count("dropping unreadable message") == 3, log[-3000:]  # once each, not five times
    assert await queue_lengths(stack) == dict.fromkeys(ALL_QUEUES, 0)  # and no trip to a poison queue
    assert "attacker" not in log
