"""The seam to `azure-functions-runtime`, the library half of the real Python worker (Python 3.13+).

The runner indexes and invokes the app through the runtime's own code, so what the worker
refuses at load time (a parameter with no binding, a `context` of the wrong type, a return
value without a `$return` binding) and how it decodes a queue trigger and calls the function
(its `Context`, its thread pool for sync functions) are the worker's, not a copy:

- indexing: `loader.index_function_app` (import function_app.py and find its one app, as on
  WorkerInitRequest) and `loader.process_indexed_function`, which validates every function and
  registers it (`FunctionInfo`) in the registry the invocation path reads;
- invocation: `native_invocation.invocation_request_native`, the runtime's protobuf-free entry
  point (a `Datum` per input and per trigger-metadata field in, an ok flag and the exception text
  out), which is what the worker's own request handler does minus the protobuf edges.

These are internal modules: `azure-functions-runtime` is pinned exactly and
tests/localdev/test_worker.py checks each entry point used here, so a bump that moves them fails
there first. What this does not reproduce (the gRPC process boundary, the host's retry, timeout
and poison logic, which the pump reproduces instead) is listed in docs/architecture.md.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from azure.functions.decorators.function_app import Function
from azure.storage.queue import QueueMessage
from azure_functions_runtime import get_threadpool_executor, handle_event, loader, native_invocation
from azure_functions_runtime import start_threadpool_executor as _start_threadpool_executor
from azure_functions_runtime.bindings.datumdef import Datum
from azure_functions_runtime.bindings.meta import load_binding_registry
from azure_functions_runtime.functions import FunctionInfo

from localdev.runner.errors import RunnerError


class _BindingInfo(SimpleNamespace):
    """The `BindingInfo` message the runtime builds while indexing, with the proto enums' values."""

    out = 1  # BindingInfo.Direction.out
    inout = 2  # BindingInfo.Direction.inout
    undefined = 0  # BindingInfo.DataType.undefined


# Indexing builds three protobuf messages for the host (WorkerInitResponse's metadata); nothing
# here sends them, so plain records stand in for the generated classes.
_PROTOS = SimpleNamespace(
    BindingInfo=_BindingInfo, RpcFunctionMetadata=SimpleNamespace, RpcRetryOptions=SimpleNamespace
)


class InvocationFailed(Exception):
    """The function raised: the runtime's text of the exception (the traceback is in its log record)."""


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the runtime indexed it: its metadata for the host, and what invocation uses."""

    name: str
    function_id: str
    bindings: tuple[dict[str, Any], ...]  # the raw bindings the host would receive (function.json form)
    info: FunctionInfo


def index_app(app_dir: Path, script_file: str = "function_app.py") -> list[IndexedFunction]:
    """Import `script_file` from `app_dir` and index its app, as the worker does at start."""
    path = app_dir / script_file
    if not path.is_file():
        raise RunnerError(f"no {script_file} in {app_dir}")
    try:
        functions = loader.index_function_app(str(path))
    except ValueError as exc:  # no app, or more than one: the worker's own messages
        raise RunnerError(f"{path}: {exc}") from None
    return index_functions(functions, str(app_dir))


def index_functions(functions: Sequence[Function], directory: str) -> list[IndexedFunction]:
    """Validate and register `functions` (an app's `get_functions()`) with the runtime."""
    load_binding_registry()
    try:
        metadata, _ = loader.process_indexed_function(_PROTOS, handle_event._functions, functions, directory)
    except Exception as exc:  # FunctionLoadError and friends: the app would fail to load in Azure too
        raise RunnerError(f"the worker cannot load the app: {exc}") from exc
    indexed = []
    for meta in metadata:
        info = handle_event._functions.get_function(meta.function_id)
        assert info is not None  # process_indexed_function registered it
        bindings = tuple(json.loads(raw) for raw in meta.raw_bindings)
        indexed.append(IndexedFunction(meta.name, meta.function_id, bindings, info))
    return indexed


def start_threadpool() -> None:
    """The worker's thread pool for sync functions (PYTHON_THREADPOOL_THREAD_COUNT, else Python's default)."""
    if get_threadpool_executor() is None:
        _start_threadpool_executor()


def _json(value: object) -> Datum:
    return Datum(json.dumps(value), "json")


def _time(value: datetime | None) -> Datum | None:
    return None if value is None else _json(value.isoformat())


def trigger_metadata(message: QueueMessage, pop_receipt: str) -> dict[str, Datum]:
    """The queue trigger's metadata, typed as the host sends it (ids as strings, the rest as JSON)."""
    fields = {
        "Id": Datum(message.id, "string"),
        "DequeueCount": _json(message.dequeue_count),
        "PopReceipt": Datum(pop_receipt, "string"),
        "InsertionTime": _time(message.inserted_on),
        "ExpirationTime": _time(message.expires_on),
        "NextVisibleTime": _time(message.next_visible_on),
    }
    return {k: v for k, v in fields.items() if v is not None}


async def invoke(fn: IndexedFunction, arg_name: str, body: bytes, metadata: dict[str, Datum]) -> None:
    """One invocation through the runtime; raises InvocationFailed if the function raised.

    A CancelledError is not an Exception: the runtime lets it through (the real worker then
    sends no response at all), and so does this.
    """
    registered = handle_event._functions.get_function(fn.function_id)
    if registered is not fn.info:
        # Another app with a function of the same name was indexed in this process since (tests
        # build one app per test). Put ours back; the runtime reads the registry before its first
        # await, so no other invocation can swap it in between.
        handle_event._functions._functions[fn.function_id] = fn.info
    ok, _, _, error, _ = await native_invocation.invocation_request_native(
        str(uuid.uuid4()), fn.function_id, [(arg_name, Datum(body, "bytes"))], metadata
    )
    if not ok:
        raise InvocationFailed(error or "the function failed")
