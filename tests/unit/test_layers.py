"""The layers of the code, read from its imports (ast), so a wrong import fails here.

    processing.core       pure rules: imports nothing from azure.*, openai, adapters or stages
    processing.adapters   I/O (Azure Storage, Azure OpenAI): imports core, never a stage
    processing.<stage>    ingest, process, finalize: import core and adapters, never each other
    function_app.py       triggers only: imports the stages
and processing never imports localdev or rowsmith_cli; nothing but the settings modules
reads the environment.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

import pytest

from processing.core.settings import APP_ROOT

STAGES = ("ingest", "process", "finalize")
SETTINGS_MODULES = {"processing/core/settings.py", "rowsmith_cli/settings.py"}
CHECKED = ("processing", "rowsmith_cli", "function_app.py")


def _imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            # `from processing import ingest` imports the module processing.ingest
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _reads_environment(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "environb", "getenv", "putenv")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {a.name for a in node.names} & {"environ", "environb", "getenv"}
        ):
            return True
    return False


def violations(path: str, source: str) -> list[str]:
    """What is wrong with the module at `path` (relative to the repository), given its source."""
    tree = ast.parse(source)
    found: list[str] = []
    parts = path.removesuffix(".py").split("/")
    layer = parts[1] if parts[0] == "processing" and len(parts) > 2 else ""
    for name in set(_imports(tree)):
        top = name.split(".")[0]
        sub = name.split(".")[1] if name.startswith("processing.") else ""
        if parts[0] == "processing" and top in ("localdev", "rowsmith_cli"):
            found.append(f"{path}: processing imports {name}")
        if layer == "core" and (top in ("azure", "openai", "aiohttp") or sub in ("adapters", *STAGES)):
            found.append(f"{path}: the pure core imports {name}")
        if layer == "adapters" and sub in STAGES:
            found.append(f"{path}: an adapter imports the stage {name}")
        if layer in STAGES and sub in STAGES and sub != layer:
            found.append(f"{path}: stage {layer} imports stage {name}")
    if _reads_environment(tree) and path not in SETTINGS_MODULES:
        found.append(f"{path}: reads the environment outside the settings modules")
    return found


def _modules() -> Iterator[tuple[str, str]]:
    for entry in CHECKED:
        root = APP_ROOT / entry
        paths = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in paths:
            yield path.relative_to(APP_ROOT).as_posix(), path.read_text(encoding="utf-8")


def test_the_tree_keeps_its_layers() -> None:
    modules = list(_modules())
    assert len(modules) > 30  # the walk found the code
    problems = [problem for path, source in modules for problem in violations(path, source)]
    assert problems == []


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("processing/core/records.py", "from azure.storage.blob import BlobClient\n", "the pure core imports"),
        ("processing/core/records.py", "import openai\n", "the pure core imports"),
        ("processing/core/layout.py", "from processing.adapters import shards\n", "the pure core imports"),
        ("processing/process/handler.py", "from processing.finalize.handler import handle_finalize\n", "stage process"),
        ("processing/finalize/progress.py", "from processing import ingest\n", "stage finalize"),
        ("processing/adapters/claims.py", "from processing.process import row_outcomes\n", "an adapter imports"),
        ("processing/adapters/clients.py", "from localdev.stack import Stack\n", "processing imports localdev"),
        ("processing/ingest/handler.py", "import rowsmith_cli.main\n", "processing imports rowsmith_cli"),
        ("processing/adapters/clients.py", "import os\nx = os.environ['A']\n", "reads the environment"),
        ("rowsmith_cli/commands.py", "from os import getenv\n", "reads the environment"),
    ],
)
def test_a_wrong_import_is_caught(path: str, source: str, expected: str) -> None:
    assert any(expected in problem for problem in violations(path, source))


def test_allowed_imports_pass() -> None:
    assert violations("processing/process/handler.py", "from processing.adapters import shards\n") == []
    assert violations("processing/core/settings.py", "import os\nos.environ.get('X')\n") == []
    assert violations("processing/finalize/handler.py", "from processing.finalize import progress\n") == []
