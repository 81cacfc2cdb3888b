"""Keyless by construction: an API key against the keyless emulator fails the job clearly."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator

import pytest

from localdev.stack import Stack, start_stack
from tests.integration.harness import RunnerProcess, app_settings, download, emulator, submit_and_wait

pytestmark = pytest.mark.integration


@pytest.fixture
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("keystack")) as running:
        yield running


async def test_an_api_key_is_refused_and_the_job_fails_with_a_clear_error(own_stack: Stack, tmp_path):
    # A made-up value: the point is that the resource accepts no key at all.
    settings = app_settings(own_stack, AZURE_OPENAI_API_KEY="not-a-real-key-0000")
    path = tmp_path / "keyed.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], *[[str(i), f"row {i}"] for i in range(200)]])

    with RunnerProcess(settings, tmp_path / "runner.log") as runner:
        code, info = await submit_and_wait(own_stack, path, "echo", timeout=90)
        log = runner.log()

    assert code == 1, info
    assert info["state"] == "failed"
    report = json.loads(await download(own_stack, "output", "echo/keyed.error.json"))
    assert "401" in report["error"]
    assert "AZURE_OPENAI_API_KEY" in report["error"]
    assert "managed identity" in report["error"]
    assert "AZURE_OPENAI_API_KEY is set" in log  # the warning at start-up
    stats = await emulator(own_stack, "GET", "/_emulator/stats")
    assert stats["auth"].get("bearer", 0) == 0
    # The job stops calling the model once it knows the key is refused (no retry storm).
    assert stats["auth"]["api-key"] < 60
