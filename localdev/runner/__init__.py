"""The local runner: drives a v2-model Python function app's queue triggers against Azurite.

A development harness, not a production host. In Azure the Functions host runs the same
`function_app.py`; here, where Core Tools cannot be installed, this module loads the app through
`azure-functions-runtime`, the library half of the real Python worker (its indexing of the
registered functions: names, bindings and callables, never a hand-kept list; and its
protobuf-free invocation entry point), and reproduces what the host's queue extension does
with host.json's `extensions.queues` and `functionTimeout`:

- per function, fetch up to `batchSize` messages with a long visibility (the host's 10 minutes,
  renewed at half-time while the invocation runs); fetch again as soon as the messages in
  flight for that function drop to `newBatchThreshold` or below, so at most
  batchSize + newBatchThreshold run at once; while a queue stays empty, poll with a randomised
  exponential backoff from 100 ms up to `maxPollingInterval`;
- hand each message to the runtime as the host does: the body decoded per `messageEncoding`
  (base64, or none for the raw text) and the trigger metadata (id, dequeue count, times, pop
  receipt); the runtime builds `azure.functions.QueueMessage` and `context`, runs async
  functions on the loop and sync ones in its thread pool;
- an invocation still running after `functionTimeout` is cancelled and fails;
- success deletes the message; an exception makes it visible again after `visibilityTimeout`,
  or once its dequeue count reaches `maxDequeueCount` moves the original text to
  `<queue>-poison` (created if missing) and deletes it. A message already dequeued more than
  `maxDequeueCount` times (a crashed runner), or one that is not valid base64, goes to poison
  without an invocation. A queue whose name already ends in `-poison` has no poison queue: a
  failed message there stays invisible until its lease lapses (the host does the same, to
  avoid a hot retry loop).
- on stop: no new fetches; invocations in flight get `shutdown_timeout` to finish, then are
  cancelled and their messages made visible again at once.

Connections: a trigger's `connection` names an app-setting prefix, resolved by
`processing.core.settings.StorageSettings` (Azurite's connection string, or identity-based
service URIs with the process's credential). One queue service client per connection, made
once and reused by every fetch, delete and update.

Modules: `hostconfig` (host.json's `extensions.queues` and `functionTimeout`), `worker` (the
seam to azure-functions-runtime), `discovery` (the app's queue functions), `connections`
(storage settings, credential and queue clients), `pump` (one function's fetch, lease,
visibility, timeout and poison handling), `invocation` (what a function is called with, and
the call), `runner` (the orchestration: start, drain, stop), `main` (the command line),
`process` (the runner as a child process, for the CLI, the tests and the benchmarks).

Run: `python -m localdev.runner [--app-dir DIR] [--host-json PATH] [--functions a,b]
[--log-level LEVEL]`; it prints one JSON line starting `{"ready": "runner"` listing the
functions and queues it drives, and stops gracefully on SIGINT/SIGTERM (a second signal
stops at once).
"""
