"""The local stack keeps its secret to itself: owner-only files, no header in any log, and
control APIs that answer only to the stack's own header."""

from __future__ import annotations

import http.client
import os
import stat
from pathlib import Path

import pytest
from azure.identity.aio import ManagedIdentityCredential

from localdev import control
from localdev.ports import LOOPBACK
from localdev.stack import STATE_FILE, start_stack, write_local_settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def control_status(port: int | None, path: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


async def test_the_state_dir_is_private_and_no_log_holds_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What an older version left: a world-readable state dir and log.
    state = tmp_path / ".rowsmith"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "identity.log").write_text("an older start\n")
    os.chmod(state / "identity.log", 0o644)

    # OAuth mode writes the most (a CA, Azurite's key and certificate, a CA bundle); persistent
    # storage has Azurite itself write files.
    stack = start_stack(state, storage_auth="oauth", in_memory=False)
    try:
        header = stack.identity_header
        # The header travels: a token request, control calls.
        for key, value in stack.app_settings().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        async with ManagedIdentityCredential() as credential:
            await credential.get_token("https://storage.azure.com/.default")
        assert (await control.call(stack.identity_url, "GET", "/_identity/stats", header=header))["tokens_issued"] == 1
        await control.call(stack.emulator_url, "POST", "/_emulator/config", {"latency_ms": 1}, header=header)
        settings_file = write_local_settings(tmp_path / "local.settings.json", stack.app_settings())

        found = sorted(state.rglob("*"))
        assert {p.name for p in found} >= {STATE_FILE, "identity.log", "emulator.log", "azurite.log", "azurite-key.pem"}
        assert any(p.is_file() for p in (state / "azurite-data").rglob("*"))  # written by Azurite itself
        assert mode(state) == 0o700
        assert {str(p.relative_to(state)): mode(p) for p in found if p.is_dir()} == {
            str(p.relative_to(state)): 0o700 for p in found if p.is_dir()
        }
        assert {str(p.relative_to(state)): mode(p) for p in found if p.is_file()} == {
            str(p.relative_to(state)): 0o600 for p in found if p.is_file()
        }
        assert mode(settings_file) == 0o600

        # The header is in the state file (the stack needs it back), in no other file.
        assert header.encode() in (state / STATE_FILE).read_bytes()
        holding = [str(p.relative_to(state)) for p in found if p.is_file() and header.encode() in p.read_bytes()]
        assert holding == [STATE_FILE]
    finally:
        stack.stop()


def test_the_control_apis_answer_only_to_the_stacks_header(tmp_path: Path) -> None:
    with start_stack(tmp_path) as stack:
        for port, prefix in ((stack.ports.identity, "/_identity"), (stack.ports.emulator, "/_emulator")):
            for route in ("/config", "/stats"):
                assert control_status(port, prefix + route, {}) == 401
                assert control_status(port, prefix + route, {control.HEADER: "not-the-header"}) == 403
                assert control_status(port, prefix + route, {control.HEADER: stack.identity_header}) == 200
            assert control_status(port, prefix + "/health", {}) == 200
