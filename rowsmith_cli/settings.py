"""What the `rowsmith` command reads from the environment (azd writes these names).

The CLI's own settings, kept out of the deployed package; the table follows the app's
(processing/core/settings.py), and the README's configuration table lists both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
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


# What the SDK's ManagedIdentityCredential reads from the process environment when it is made.
IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")


def model_environment(local_app_settings: Mapping[str, str] | None) -> dict[str, str]:
    """The settings `rowsmith estimate --sample` calls the model with, as the app reads them:
    this shell's when it names AZURE_OPENAI_ENDPOINT (as `azd env get-values` provides; the
    developer's login), else the running local stack's app settings (its emulator, its identity)."""
    if os.environ.get("AZURE_OPENAI_ENDPOINT", "").strip() or local_app_settings is None:
        return dict(os.environ)
    return dict(local_app_settings)


@contextlib.contextmanager
def identity_environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env`'s managed-identity variables in this process while a credential is made (it reads them then)."""
    wanted = {key: env[key] for key in IDENTITY_VARIABLES if env.get(key)}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
