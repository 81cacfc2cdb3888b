"""The app's queue-triggered functions, read from its registered metadata (`app.get_functions()`).

Everything comes from the registered metadata: a function added to the app is driven
without any change here. `load_app` imports function_app.py as the worker does.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localdev.runner.errors import RunnerError

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
    user_function: Callable[..., Any]
    is_async: bool
    wants_context: bool
    bindings: tuple[Mapping[str, Any], ...] = ()

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
        if unknown:
            raise RunnerError(f"function {self.name}: parameters {unknown} are neither its trigger nor `context`")


def discover(app: Any) -> tuple[list[QueueFunction], dict[str, str]]:
    """The app's queue-triggered functions, and the others by name with their trigger types.

    Everything comes from the registered metadata: a function added to the app is driven
    without any change here.
    """
    if not hasattr(app, "get_functions"):
        raise RunnerError(f"{app!r} is not an azure.functions.FunctionApp (it has no get_functions())")
    queue_functions: list[QueueFunction] = []
    others: dict[str, str] = {}
    if getattr(app, "functions_bindings", None):
        # get_functions() remembers the names it has seen and calls a second listing a duplicate
        # (azure-functions 1.26); the worker lists once per process, we may list again (tests,
        # a doctor run first). Duplicates within one listing are still refused.
        app.functions_bindings = None
    for fn in app.get_functions():
        name = fn.get_function_name()
        raw = fn.get_function_json()
        bindings = (json.loads(raw) if isinstance(raw, str) else raw).get("bindings", [])
        triggers = [b for b in bindings if str(b.get("type", "")).lower().endswith("trigger")]
        trigger = next((b for b in triggers if str(b.get("type", "")).lower() == "queuetrigger"), None)
        if trigger is None:
            others[name] = ", ".join(str(b.get("type")) for b in triggers) or "no trigger"
            continue
        user_function = fn.get_user_function()
        queue_functions.append(
            QueueFunction(
                name=name,
                queue_name=str(trigger.get("queueName", "")),
                connection=str(trigger.get("connection") or HOST_DEFAULT_CONNECTION),
                arg_name=str(trigger["name"]),
                user_function=user_function,
                is_async=inspect.iscoroutinefunction(user_function),
                wants_context="context" in inspect.signature(user_function).parameters,
                bindings=tuple(bindings),
            )
        )
    return queue_functions, others


def load_app(app_dir: Path, module: str = "function_app") -> Any:
    """Import `module` from `app_dir` (put first on sys.path, as the worker does) and return its `app`."""
    app_dir = app_dir.resolve()
    if not (app_dir / f"{module}.py").is_file():
        raise RunnerError(f"no {module}.py in {app_dir}")
    sys.path.insert(0, str(app_dir))
    loaded = importlib.import_module(module)
    app = getattr(loaded, "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise RunnerError(f"{app_dir / (module + '.py')} defines no `app = azure.functions.FunctionApp()`")
    return app
