from __future__ import annotations

from collections.abc import Iterator

import pytest

from localdev.stack import Stack, start_stack
from tests.integration.harness import RunnerProcess, app_settings


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Azurite, the identity endpoint and the Azure OpenAI emulator on free loopback ports."""
    with start_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="module")
def runner(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    """The local runner driving function_app.py with the stack's settings (keyless)."""
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    with RunnerProcess(app_settings(stack), log) as process:
        yield process
