"""The app's queue-triggered functions, as the real worker indexes them (localdev.runner.worker).

Everything comes from the metadata the runtime builds from `app.get_functions()`: a function
added to the app is driven without any change here. `load_app` imports and indexes
function_app.py with the worker's own loader.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localdev.runner.errors import RunnerError
from localdev.runner.worker import IndexedFunction, index_app, index_functions

# The host's default when a trigger names no connection.
HOST_DEFAULT_CONNECTION = "AzureWebJobsStorage"
POISON_SUFFIX = "-poison"
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class QueueFunction:
    """One queue-triggered function, as registered on the app."""

    name: str
    queue_name: str
    connection: str
    arg_name: str
    indexed: IndexedFunction
    bindings: tuple[Mapping[str, Any], ...] = ()

    @property
    def user_function(self) -> Callable[..., Any]:
        return self.indexed.info.func

    @property
    def is_async(self) -> bool:
        return self.indexed.info.is_async

    @property
    def wants_context(self) -> bool:
        return self.indexed.info.requires_context

    @property
    def poison_queue_name(self) -> str | None:
        """`<queue>-poison`, unless this is a poison queue already or the name would be too long (as in the host)."""
        name = self.queue_name + POISON_SUFFIX
        if self.queue_name.endswith(POISON_SUFFIX) or not _QUEUE_NAME.match(name):
            return None
        return name

    def check_drivable(self) -> None:
        """Refuse at start what would fail on every message: the runner provides the trigger and `context` only."""
        if not _QUEUE_NAME.match(self.queue_name):
            raise RunnerError(
                f"function {self.name}: queue name {self.queue_name!r} is not a literal queue name "
                "(app-setting expressions like %name% are not resolved by the local runner)"
            )
        extra = [b for b in self.bindings if b.get("name") != self.arg_name]
        if extra:
            described = ", ".join(f"{b.get('type')} {b.get('direction')} '{b.get('name')}'" for b in extra)
            raise RunnerError(
                f"function {self.name} has bindings the local runner does not provide ({described}); "
                "leave it out with --functions, or use `func start`"
            )
        params = inspect.signature(self.user_function).parameters
        unknown = [p for p in params if p not in (self.arg_name, "context")]
        if unknown:  # e.g. a settlement client: the runtime accepts it, the runner has none to give
            raise RunnerError(f"function {self.name}: parameters {unknown} are neither its trigger nor `context`")


def discover(app: Any) -> tuple[list[QueueFunction], dict[str, str]]:
    """The app's queue-triggered functions, and the others by name with their trigger types.

    `app` is an `azure.functions.FunctionApp` (indexed here) or what `load_app` returned.
    """
    if isinstance(app, Sequence):
        indexed: Sequence[IndexedFunction] = app
    elif hasattr(app, "get_functions"):
        if getattr(app, "functions_bindings", None):
            # get_functions() remembers the names it has seen and calls a second listing a duplicate;
            # the worker lists once per process, we may list again (tests, a doctor run first).
            # Duplicates within one listing are still refused.
            app.functions_bindings = None
        indexed = index_functions(app.get_functions(), str(Path.cwd()))
    else:
        raise RunnerError(f"{app!r} is not an azure.functions.FunctionApp (it has no get_functions())")
    queue_functions: list[QueueFunction] = []
    others: dict[str, str] = {}
    for fn in indexed:
        triggers = [b for b in fn.bindings if str(b.get("type", "")).lower().endswith("trigger")]
        trigger = next((b for b in triggers if str(b.get("type", "")).lower() == "queuetrigger"), None)
        if trigger is None:
            others[fn.name] = ", ".join(str(b.get("type")) for b in triggers) or "no trigger"
            continue
        queue_functions.append(
            QueueFunction(
                name=fn.name,
                queue_name=str(trigger.get("queueName", "")),
                connection=str(trigger.get("connection") or HOST_DEFAULT_CONNECTION),
                arg_name=str(trigger["name"]),
                indexed=fn,
                bindings=fn.bindings,
            )
        )
    return queue_functions, others


def load_app(app_dir: Path, module: str = "function_app") -> list[IndexedFunction]:
    """Import `module` from `app_dir` (put first on sys.path, as the worker does) and index its app."""
    app_dir = app_dir.resolve()
    if not (app_dir / f"{module}.py").is_file():
        raise RunnerError(f"no {module}.py in {app_dir}")
    sys.path.insert(0, str(app_dir))
    return index_app(app_dir, f"{module}.py")
