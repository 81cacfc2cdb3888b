"""infra/scripts/local_settings_from_azd.py: azd's environment -> local.settings.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from processing.core import layout
from processing.core.settings import SETTINGS_REFERENCE, Settings
from tests.infra.bicep import INFRA, parse

SCRIPT = INFRA / "scripts" / "local_settings_from_azd.py"

AZD_VALUES = """\
AZURE_ENV_NAME="dev"
AZURE_FUNCTION_APP_NAME="func-abc123"
AZURE_OPENAI_API_VERSION="2024-10-21"
AZURE_OPENAI_DEPLOYMENT="gpt-4o-mini"
AZURE_OPENAI_ENDPOINT="https://oai-abc123.openai.azure.com/"
AZURE_STORAGE_ACCOUNT="stabc123"
AZURE_STORAGE_BLOB_ENDPOINT="https://stabc123.blob.core.windows.net/"
AZURE_STORAGE_QUEUE_ENDPOINT="https://stabc123.queue.core.windows.net/"
AZURE_TENANT_ID="00000000-0000-0000-0000-000000000000"
"""

# Settings only Core Tools needs locally (Flex Consumption sets the runtime elsewhere).
LOCAL_ONLY = {"FUNCTIONS_WORKER_RUNTIME"}


def _run(tmp_path: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(tmp_path / "local.settings.json"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_writes_identity_based_settings_the_app_can_load(tmp_path: Path) -> None:
    proc = _run(tmp_path, AZD_VALUES)
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "local.settings.json").read_text())
    assert written["IsEncrypted"] is False
    values = written["Values"]
    conn = layout.STORAGE_CONNECTION
    assert values[f"{conn}__blobServiceUri"] == "https://stabc123.blob.core.windows.net/"
    assert values[f"{conn}__queueServiceUri"] == "https://stabc123.queue.core.windows.net/"
    # Never the key-bearing connection string, and no managed identity off Azure.
    assert conn not in values
    assert f"{conn}__credential" not in values
    known = {doc.name for doc in SETTINGS_REFERENCE} | LOCAL_ONLY
    assert set(values) <= known, set(values) - known
    # The app reads exactly these with its own settings loader.
    settings = Settings.from_env(values)
    assert settings.storage.is_identity_based
    assert settings.storage.blob_url == "https://stabc123.blob.core.windows.net"
    assert settings.openai_endpoint == "https://oai-abc123.openai.azure.com"
    assert settings.openai_deployment == "gpt-4o-mini"


def _script():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("local_settings_from_azd", SCRIPT)
    assert spec and spec.loader
    script = module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_every_value_it_reads_is_a_main_bicep_output() -> None:
    script = _script()
    outputs = set(parse(INFRA / "main.bicep")["outputs"])
    assert set(script.REQUIRED) | set(script.OPTIONAL) <= outputs


def test_refuses_without_a_provisioned_environment(tmp_path: Path) -> None:
    proc = _run(tmp_path, 'AZURE_ENV_NAME="dev"\n')
    assert proc.returncode == 2
    assert "azd provision" in proc.stderr
    assert not (tmp_path / "local.settings.json").exists()


@pytest.mark.parametrize("marker", _script().KEY_MARKERS)
def test_refuses_anything_that_looks_like_a_key(tmp_path: Path, marker: str) -> None:
    # Built from the script's own markers with a placeholder, so no key-shaped literal sits in the repo.
    leaked = AZD_VALUES.replace(
        'AZURE_STORAGE_BLOB_ENDPOINT="https://stabc123.blob.core.windows.net/"',
        f'AZURE_STORAGE_BLOB_ENDPOINT="DefaultEndpointsProtocol=https;AccountName=x;{marker}placeholder"',
    )
    proc = _run(tmp_path, leaked)
    assert proc.returncode == 2
    assert not (tmp_path / "local.settings.json").exists()


def test_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "local.settings.json"
    target.write_text("{}")
    assert _run(tmp_path, AZD_VALUES).returncode == 1
    assert target.read_text() == "{}"
    assert _run(tmp_path, AZD_VALUES, "--force").returncode == 0
    assert "Values" in json.loads(target.read_text())


def test_reads_an_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(AZD_VALUES)
    proc = _run(tmp_path, "", "--env-file", str(env_file))
    assert proc.returncode == 0, proc.stderr
