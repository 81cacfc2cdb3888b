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

from processing.core.settings import APP_ROOT, Setting, path

STATE_DIR_NAME = ".rowsmith"

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
        "Where `rowsmith local up` keeps the local stack's state, logs and (unless `--in-memory`) Azurite's data; "
        "every `rowsmith` command finds the running stack there, from any folder.",
        shown=f"{STATE_DIR_NAME} in the project folder",
        attribute="state_dir",
        parse=path,
    ),
)
# What marks the project folder: the app's own files, next to each other.
PROJECT_MARKERS = ("pyproject.toml", "function_app.py")


def is_project_root(folder: Path) -> bool:
    return all((folder / name).is_file() for name in PROJECT_MARKERS)


def project_root(package_root: Path, cwd: Path) -> Path | None:
    """The project folder: where this package was loaded from (a checkout, an editable install),
    else the nearest folder holding the project's files up from `cwd`; None outside any project."""
    if is_project_root(package_root):
        return package_root
    for folder in (cwd, *cwd.parents):
        if is_project_root(folder):
            return folder
    return None


def default_state_dir(package_root: Path, cwd: Path) -> Path:
    """`.rowsmith` in the project folder, so `rowsmith local up` (and every command after it) finds
    the same stack from any folder; outside a project, in `cwd` as a last resort."""
    return (project_root(package_root, cwd) or cwd) / STATE_DIR_NAME


@dataclass(frozen=True)
class CliSettings:
    storage_account: str | None
    blob_url: str | None
    queue_url: str | None
    state_dir: Path
    project: Path | None = None  # the project folder (where local.settings.json goes), if found

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> CliSettings:
        env = os.environ if env is None else env
        cwd = (cwd or Path.cwd()).resolve()
        account, blob, queue, state = (s.read(env) for s in CLI_SETTINGS_REFERENCE)
        # Absolute: the stack's children run in other folders, and the state file names it.
        state_dir = (cwd / state) if state is not None else default_state_dir(APP_ROOT, cwd)
        return cls(
            storage_account=account,
            blob_url=blob,
            queue_url=queue,
            state_dir=state_dir.resolve(),
            project=project_root(APP_ROOT, cwd),
        )


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
