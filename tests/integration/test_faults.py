"""Azure OpenAI and managed-identity faults, end to end on the local stack (issue 4, "Faults").

Each test drives real messages through function_app.py (in the local runner, or called
directly) against the emulator's fault injection, and checks what each kind of failure
costs a row: a wait, a retry, or a row error that says why. The emulator's per-kind fault
counters (`/_emulator/stats` -> faults) count requests exactly, since `[[fault:KIND:N]]`
markers fire on the first N requests carrying that exact prompt.
"""

from __future__ import annotations

import json
import time

import pytest

import function_app
from localdev.stack import Stack
from processing.core.layout import ROWS_QUEUE
from tests.integration.faults_util import (
    Workers,
    call,
    close_in_process_clients,
    csv_bytes,
    emulator_config,
    emulator_stats,
    finish,
    identity_config,
    identity_stats,
    in_process_env,
    message,
    parse_jsonl,
    peek,
    queue_count,
    shard_records,
    submit,
    take_all,
    upload,
    wait_until,
)
from tests.integration.harness import download, emulated_text

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean")]


def prompt(row_id: str, text: str) -> str:
    """The echo pipeline's user message (tests/fixtures/pipelines/echo.toml)."""
    return f"Row {row_id}: {text}"


async def results(stack: Stack, stem: str, pipeline: str = "echo") -> dict[str, dict]:
    """The job's results JSONL, by the input's id column."""
    lines = parse_jsonl(await download(stack, "output", f"{pipeline}/{stem}.results.jsonl"))
    return {line["input"]["id"]: line for line in lines}


# --- 429: wait the server's delay, spend no attempt ------------------------------------------------


async def test_a_429_hides_the_row_for_retry_after_and_spends_no_attempt(
    stack: Stack, clean: None, monkeypatch: pytest.MonkeyPatch
):
    await emulator_config(stack, fault_retry_after_ms=3000)
    in_process_env(stack, monkeypatch, ROWSMITH_FINALIZE_INTERVAL_SECONDS="0")
    try:
        text = "busy [[fault:429:1]]"
        job, event = await upload(stack, "echo/throttled.csv", csv_bytes(["id", "text"], [["1", text]]))
        await call(function_app.ingest_upload)(message(event))
        [(body, _)] = await take_all(stack, ROWS_QUEUE)

        # Even on the last attempt the host allows, a 429 must not turn the row into an error.
        start = time.monotonic()
        await call(function_app.process_rows)(message(body, dequeue_count=5))
        assert await shard_records(stack, job) == []  # nothing recorded: the row is waiting
        assert await queue_count(stack, ROWS_QUEUE) == 1  # ... on the queue, hidden

        async def visible() -> float | None:
            found = await peek(stack, ROWS_QUEUE)
            return time.monotonic() if found else None

        seen = await wait_until(visible, timeout=30, interval=0.2, what="the throttled row coming back")
        # Every peek that returned before start + 3 s (retry-after-ms=3000) must have found nothing.
        assert seen - start >= 3.0

        [(again, dequeue_count)] = await take_all(stack, ROWS_QUEUE)
        requeued = json.loads(again)
        assert requeued["waits"] == 1  # one 429 wait recorded ...
        # ... and this delivery not counted: only the four failed ones before it
        assert requeued["tries"] == 4
        assert dequeue_count == 1  # a new message: the host's dequeue count starts again

        await call(function_app.process_rows)(message(again, dequeue_count))
        [record] = await shard_records(stack, job)
        assert (record.status, record.answer) == ("ok", emulated_text(prompt("1", text)))

        stats = await emulator_stats(stack)
        # One 429 (never slept on or retried inside the call), then one answer.
        assert (stats["requests"], stats["throttled"], stats["answered"]) == (2, 1, 1)
    finally:
        await close_in_process_clients()


async def test_a_429_keeps_the_attempts_the_row_already_spent(
    stack: Stack, clean: None, monkeypatch: pytest.MonkeyPatch
):
    # The message failed three times (5xx, a crash...), then its fourth run got a 429. The wait
    # costs no attempt, but the three already spent must stay spent: otherwise a row that
    # fails for good keeps getting five fresh attempts after every 429 and, under steady quota
    # pressure, never ends as a row error.
    await emulator_config(stack, fault_retry_after_ms=100)
    in_process_env(stack, monkeypatch)
    try:
        text = "busy [[fault:429:1]]"
        _job, event = await upload(stack, "echo/spent.csv", csv_bytes(["id", "text"], [["1", text]]))
        await call(function_app.ingest_upload)(message(event))
        [(body, _)] = await take_all(stack, ROWS_QUEUE)
        await call(function_app.process_rows)(message(body, dequeue_count=4))

        async def requeued() -> list[tuple[str, int]]:
            return await take_all(stack, ROWS_QUEUE)

        [(again, _)] = await wait_until(requeued, timeout=30, what="the throttled row coming back")
        assert json.loads(again).get("tries", 0) == 3, again
    finally:
        await close_in_process_clients()


async def test_in_a_multi_row_message_only_the_failing_rows_are_tried_again(stack: Stack, workers: Workers):
    # echo_batch: four rows per message. Each kind of outcome sits beside rows that succeed.
    workers.start(visibility_seconds=1)
    rows = [
        ["a", "fine a"],
        ["x", "broken [[fault:500]]"],  # fails every time: a row error after 5 attempts
        ["t", "busy [[fault:429:2]]"],  # waits twice, then answered
        ["b", "fine b"],
        ["c", "blip [[fault:503:3]]"],  # fails a whole attempt (3 calls), then answered
        ["d", "fine d"],
        ["e", "awful [[fault:content_filter]]"],  # a row error at once
        ["f", "fine f"],
    ]
    job = await submit(stack, "echo_batch/mixed.csv", csv_bytes(["id", "text"], rows))
    await finish(stack, job, workers)

    out = await results(stack, "mixed", "echo_batch")
    for row_id, text in rows:
        if row_id in ("x", "e"):
            continue
        assert (out[row_id]["status"], out[row_id]["answer"]) == ("ok", emulated_text(prompt(row_id, text)))
    assert out["x"]["error"].startswith("gave up after 5 attempts: Azure OpenAI answered 500:"), out["x"]
    assert out["e"]["code"] == "content_filter"

    stats = await emulator_stats(stack)
    # Rows that succeeded were asked once each, never again with their failing neighbours.
    assert stats["answered"] == 6
    assert stats["faults"] == {"500": 5 * 3, "429": 2, "503": 3, "content_filter": 1}


async def test_a_quota_storm_longer_than_five_attempts_still_answers_every_row(stack: Stack, workers: Workers):
    # Marked rows are throttled 7 times each (more than maxDequeueCount); the others draw
    # random 429s all along. retry-after 400 ms: each wait is about a second.
    await emulator_config(stack, fault_retry_after_ms=400, fault_rates={"429": 0.4}, seed=4)
    marked = [[f"m{i}", f"storm {i} [[fault:429:7]]"] for i in range(12)]
    plain = [[f"p{i}", f"calm {i}"] for i in range(12)]
    worker = workers.start(visibility_seconds=1)

    job = await submit(stack, "echo/storm.csv", csv_bytes(["id", "text"], marked + plain))
    await finish(stack, job, workers)

    out = await results(stack, "storm")
    assert len(out) == 24
    for row_id, text in marked + plain:
        line = out[row_id]
        assert (line["status"], line["answer"]) == ("ok", emulated_text(prompt(row_id, text))), line
    stats = await emulator_stats(stack)
    assert stats["faults"]["429"] >= 12 * 7 + 1  # the markers, plus some random ones
    assert stats["throttled"] == stats["faults"]["429"]
    # Quota pressure never sends a row to the poison queue.
    assert "to queue rows-poison" not in worker.log()
    assert await queue_count(stack, "rows-poison") == 0


# --- 5xx, timeouts, dropped connections: retried, then a row error with the last error ------------


async def test_server_errors_timeouts_and_drops_are_retried_then_recorded_with_the_last_error(
    stack: Stack, workers: Workers
):
    # One quick in-call retry per attempt, a 2 s call timeout against a 6 s stall, 1 s between attempts.
    await emulator_config(stack, timeout_seconds=6)
    workers.start(visibility_seconds=1, AZURE_OPENAI_MAX_RETRIES="1", AZURE_OPENAI_TIMEOUT_SECONDS="2")
    recover = {  # kind: failures before the first answer
        "500": 1,  # retried inside the call
        "503": 3,  # two failures use up attempt 1; attempt 2 retries once, then answers
        "drop": 3,
        "timeout": 1,
    }
    rows = [[f"r-{kind}", f"blip [[fault:{kind}:{n}]]"] for kind, n in recover.items()]
    rows += [[f"x-{kind}", f"broken [[fault:{kind}]]"] for kind in recover]
    rows += [[f"ok{i}", f"fine {i}"] for i in range(4)]

    job = await submit(stack, "echo/transient.csv", csv_bytes(["id", "text"], rows))
    await finish(stack, job, workers)

    out = await results(stack, "transient")
    for row_id, text in rows:
        line = out[row_id]
        if row_id.startswith("x-"):
            assert line["status"] == "error" and line["code"] == "transient", line
        else:
            assert (line["status"], line["answer"]) == ("ok", emulated_text(prompt(row_id, text))), line
    # The error names the attempts and the last error, in words a person can act on.
    assert out["x-500"]["error"].startswith("gave up after 5 attempts: Azure OpenAI answered 500: The server had")
    assert out["x-503"]["error"].startswith("gave up after 5 attempts: Azure OpenAI answered 503: The service is")
    assert out["x-drop"]["error"].startswith("gave up after 5 attempts: could not reach Azure OpenAI:")
    assert "connection" in out["x-drop"]["error"].lower()
    assert out["x-timeout"]["error"].startswith("gave up after 5 attempts: could not reach Azure OpenAI:")
    assert "timed out" in out["x-timeout"]["error"].lower()

    faults = (await emulator_stats(stack))["faults"]
    # Failing rows: 5 attempts x (1 call + 1 retry). Recovering rows: exactly their N faults.
    assert faults == {kind: n + 5 * 2 for kind, n in recover.items()}


# --- 400 content_filter / context_length_exceeded: a row error at once --------------------------------


async def test_content_filter_and_context_length_are_row_errors_at_once(stack: Stack, workers: Workers):
    await emulator_config(stack, context_window=150)
    workers.start(visibility_seconds=1)
    rows = [
        ["cf", "something awful [[fault:content_filter]]"],
        ["cl", "very long [[fault:context_length]]"],
        ["long", "word " * 200],  # really over the 150-token window
        ["a", "fine"],
        ["b", "also fine"],
    ]
    job = await submit(stack, "echo/rejected.csv", csv_bytes(["id", "text"], rows))
    await finish(stack, job, workers, timeout=60)

    out = await results(stack, "rejected")
    assert out["cf"]["code"] == "content_filter"
    assert out["cf"]["error"].startswith("content_filter: The response was filtered")
    for row_id in ("cl", "long"):
        assert out[row_id]["code"] == "context_length_exceeded"
        assert out[row_id]["error"].startswith("context_length_exceeded: This model's maximum context length is 150")
    assert [out[r]["status"] for r in ("a", "b")] == ["ok", "ok"]

    stats = await emulator_stats(stack)
    # One request per row: nothing was retried, in the call or through the queue.
    assert stats["requests"] == len(rows)
    assert stats["by_status"] == {"400": 3, "200": 2}


# --- answers that are not strict JSON or break the schema: asked again, then invalid_json ------------


def _strict_json(line: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the results JSONL: not JSON")

    return json.loads(line, parse_constant=refuse)


async def test_answers_that_break_json_or_the_schema_end_as_invalid_json_after_bounded_tries(
    stack: Stack, workers: Workers
):
    worker = workers.start(visibility_seconds=1)
    faults = {
        "nan": ("json_nan", "NaN is not a JSON value"),
        "deep": ("json_deep", "nest more than 32 levels deep"),
        "huge": ("json_huge_int", "an integer of 5000 digits is outside the 64-bit range"),
        "enum": ("json_off_enum", "at $.label (enum): 'off-enum-"),
    }
    rows = [[row_id, f"bad [[fault:{kind}]]"] for row_id, (kind, _) in faults.items()]
    job = await submit(stack, "answers/malformed.csv", csv_bytes(["id", "text"], [*rows, ["ok", "fine"]]))
    await finish(stack, job, workers, timeout=90)

    data = (await download(stack, "output", "answers/malformed.results.jsonl")).decode()
    lines = [_strict_json(line) for line in data.splitlines() if line.strip()]  # every line strict JSON
    out = {line["input"]["id"]: line for line in lines}
    for row_id, (_, reason) in faults.items():
        assert out[row_id]["code"] == "invalid_json", out[row_id]
        assert reason in out[row_id]["error"] and "(asked 3 times)" in out[row_id]["error"], out[row_id]
    assert out["ok"]["status"] == "ok" and out["ok"]["answer"]["label"] in ("red", "green", "blue")

    stats = await emulator_stats(stack)
    # Three calls per bad row (JSON_TRIES), inside one delivery: nothing went through the queue again.
    assert stats["faults"] == {kind: 3 for kind, _ in faults.values()}
    assert stats["requests"] == 3 * len(faults) + 1
    assert "to queue rows-poison" not in worker.log()
    assert await queue_count(stack, "rows-poison") == 0


# --- the managed identity: failures and expired tokens are transient ----------------------------------


async def test_an_identity_endpoint_failing_now_and_then_costs_retries_not_rows(stack: Stack, workers: Workers):
    # The endpoint is down when the app starts: azure-identity retries a few times within about
    # 5 s, then the app's call fails with ClientAuthenticationError, which must be transient.
    await identity_config(stack, failure_rate=1.0)
    await emulator_config(stack, latency_ms=400)
    worker = workers.start(visibility_seconds=1, AZURE_OPENAI_MAX_RETRIES="0")
    rows = [[str(i), f"token please {i}"] for i in range(100)]
    job = await submit(stack, "echo/flaky-identity.csv", csv_bytes(["id", "text"], rows))

    async def token_failed() -> bool:
        return "could not get a token from the managed identity" in worker.log()

    await wait_until(token_failed, timeout=60, what="a row failing for want of a token")
    # Back, but flaky, with 1-second tokens: the app keeps coming back for new ones and some
    # of those fail (or a token expires on its way to the model: a 401 to retry too).
    await identity_config(stack, failure_rate=0.3, lifetime_seconds=1)
    await finish(stack, job, workers)

    out = await results(stack, "flaky-identity")
    for row_id, text in rows:
        assert (out[row_id]["status"], out[row_id].get("answer")) == ("ok", emulated_text(prompt(row_id, text)))
    identity = await identity_stats(stack)
    assert identity["failures"] >= 4 and identity["tokens_issued"] >= 1, identity
    assert "to queue rows-poison" not in worker.log()
    assert await queue_count(stack, "rows-poison") == 0


async def test_an_expired_token_is_transient_and_retried_until_a_fresh_one_comes(stack: Stack, workers: Workers):
    # The app's first tokens are already expired: the model refuses them with 401.
    await identity_config(stack, expired=True)
    # The app's own host.json: 10 s between attempts leaves time to repair the endpoint.
    worker = workers.start(visibility_seconds=None)
    rows = [[str(i), f"stale {i}"] for i in range(20)]
    job = await submit(stack, "echo/expired.csv", csv_bytes(["id", "text"], rows))

    async def refused() -> bool:
        return (await emulator_stats(stack))["by_status"].get("401", 0) > 0

    await wait_until(refused, timeout=60, interval=0.2, what="a 401 for an expired token")
    await identity_config(stack, expired=False)
    await finish(stack, job, workers)

    out = await results(stack, "expired")
    for row_id, text in rows:
        assert (out[row_id]["status"], out[row_id].get("answer")) == ("ok", emulated_text(prompt(row_id, text)))
    assert "to queue rows-poison" not in worker.log()
    assert await queue_count(stack, "rows-poison") == 0
