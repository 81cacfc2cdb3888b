from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from localdev.stack import STORAGE_AUTH_KEY, STORAGE_AUTH_MODES, Stack, start_stack
from tests.integration.faults_util import Workers, clear_queues, reset_emulator, reset_identity
from tests.integration.harness import RunnerProcess, app_settings

# A module runs its `stack` tests once per storage mode listed in its module-level
# STACK_STORAGE_AUTH (say `("oauth",)`), or in BY_MODULE below; every other module gets one
# "key" stack (Azurite's development connection string), so total test time does not double.
MODES_VARIABLE = "STACK_STORAGE_AUTH"
BY_MODULE: dict[str, tuple[str, ...]] = {
    # The end-to-end suite must pass with the key and with tokens only (no key in the app).
    "test_pipeline_e2e": STORAGE_AUTH_MODES,
}


def stack_modes(module: object) -> tuple[str, ...] | None:
    """The storage modes a test module's `stack` runs in (None: the default single key stack)."""
    modes = getattr(module, MODES_VARIABLE, None) or BY_MODULE.get(getattr(module, "__name__", "").rsplit(".", 1)[-1])
    if modes is None:
        return None
    unknown = set(modes) - set(STORAGE_AUTH_MODES)
    if unknown:
        raise ValueError(f"{MODES_VARIABLE}: unknown storage modes {sorted(unknown)}; use {STORAGE_AUTH_MODES}")
    return tuple(modes)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    modes = stack_modes(metafunc.module)
    if modes and "stack" in metafunc.fixturenames:
        metafunc.parametrize("stack", modes, indirect=True, scope="module")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Azurite, the identity endpoint and the Azure OpenAI emulator on free loopback ports.

    "key" (the default): the app gets Azurite's development connection string. "oauth":
    Azurite over HTTPS taking bearer tokens, and the app gets account URLs and the managed
    identity only.
    """
    mode = getattr(request, "param", STORAGE_AUTH_KEY)
    # A module that drives ingest by hand and counts queue messages sets STACK_EVENT_GRID =
    # False: the stack's local Event Grid would add an uploads message for each blob it writes.
    interval = 1.0 if getattr(request.module, "STACK_EVENT_GRID", True) else None
    with start_stack(
        tmp_path_factory.mktemp(f"stack-{mode}"), storage_auth=mode, event_grid_interval=interval
    ) as running:
        yield running


@pytest.fixture(scope="module")
def runner(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    """The local runner driving function_app.py with the stack's settings (keyless)."""
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    with RunnerProcess(app_settings(stack), log) as process:
        yield process


@pytest.fixture
async def clean(stack: Stack) -> AsyncIterator[None]:
    """Every test that asks starts and ends with empty queues and a fault-free emulator and identity endpoint."""
    await clear_queues(stack)
    await reset_emulator(stack)
    await reset_identity(stack)
    yield
    await reset_emulator(stack)
    await reset_identity(stack)
    await clear_queues(stack)


@pytest.fixture
def workers(stack: Stack, clean: None, tmp_path: Path) -> Iterator[Workers]:
    """Runner child processes for one test; every one it started is stopped at the end."""
    started = Workers(stack, tmp_path)
    yield started
    started.stop_all()
