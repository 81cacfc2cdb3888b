"""What the `rowsmith` command reads from the environment (azd writes these names).

The CLI's own settings, kept out of the deployed package; the table follows the app's
(processing/core/settings.py), and the README's configuration table lists both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from processing.core.settings import Setting, path

CLI_SETTINGS_REFERENCE: tuple[Setting, ...] = (
    Setting(
        "AZURE_STORAGE_ACCOUNT",
        "`rowsmith` against Azure: the storage account (azd sets it).",
        attribute="storage_account",
    ),
    Setting(
        "AZURE_STORAGE_BLOB_ENDPOINT",
        "`rowsmith` against Azure: blob endpoint, if not the public cloud.",
        attribute="blob_url",
    ),
    Setting(
        "AZURE_STORAGE_QUEUE_ENDPOINT",
        "`rowsmith` against Azure: queue endpoint, if not the public cloud.",
        attribute="queue_url",
    ),
    Setting(
        "ROWSMITH_STATE_DIR",
        "Where `rowsmith local up` keeps the local stack's state and logs.",
        default=Path(".rowsmith"),
        attribute="state_dir",
        parse=path,
    ),
)


@dataclass(frozen=True)
class CliSettings:
    storage_account: str | None
    blob_url: str | None
    queue_url: str | None
    state_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CliSettings:
        env = os.environ if env is None else env
        account, blob, queue, state = (s.read(env) for s in CLI_SETTINGS_REFERENCE)
        return cls(storage_account=account, blob_url=blob, queue_url=queue, state_dir=state)
