"""host.json's `extensions.queues` and `functionTimeout`, with the host's defaults, limits and case-insensitive keys."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from localdev.runner.errors import RunnerError

# The queue extension's QueuePollingIntervals.Minimum: the first backoff step, and the floor of
# maxPollingInterval.
MIN_POLLING_INTERVAL = 0.1
MAX_BATCH_SIZE = 32  # the storage service returns at most 32 messages per request
# "[d.]hh:mm:ss[.fffffff]", the .NET TimeSpan form host.json uses.
# The Flex Consumption plan's functionTimeout when host.json sets none (its maximum is unbounded).
DEFAULT_FUNCTION_TIMEOUT = 1800.0
_TIMESPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d{1,7})?)$")


def parse_timespan(value: object, name: str) -> float:
    """Seconds in a host.json duration: "hh:mm:ss", "d.hh:mm:ss", fractions, or (v1 style) milliseconds."""
    if isinstance(value, bool):
        raise RunnerError(f'host.json {name}: expected a duration like "00:00:30", got {value!r}')
    if isinstance(value, int | float):
        return float(value) / 1000.0
    match = _TIMESPAN.match(str(value).strip())
    if not match:
        raise RunnerError(f'host.json {name}: expected a duration like "00:00:30", got {value!r}')
    days = int(match["d"] or 0)
    hours, minutes, seconds = int(match["h"]), int(match["m"]), float(match["s"])
    if hours > 23 or minutes > 59 or seconds >= 60:
        raise RunnerError(f"host.json {name}: {value!r} is not a valid duration")
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class HostQueueConfig:
    """host.json `extensions.queues`, with the queue extension's defaults and limits."""

    batch_size: int = 16
    # None means the extension's default, batchSize / 2. (The host multiplies that default by the
    # core count on dedicated plans; a local harness takes one, as on Consumption.)
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0  # seconds a failed message stays invisible before its retry
    max_polling_interval: float = 60.0  # seconds; the longest wait between polls of an empty queue
    message_encoding: Literal["base64", "none"] = "base64"
    # Seconds an invocation may run before the host fails it; None (host.json "-1") is no limit.
    function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise RunnerError(f"host.json batchSize must be 1..{MAX_BATCH_SIZE}, got {self.batch_size}")
        if self.new_batch_threshold is None:
            object.__setattr__(self, "new_batch_threshold", self.batch_size // 2)
        elif self.new_batch_threshold < 0:
            raise RunnerError(f"host.json newBatchThreshold must not be negative, got {self.new_batch_threshold}")
        if self.max_dequeue_count < 1:
            raise RunnerError(f"host.json maxDequeueCount must be at least 1, got {self.max_dequeue_count}")
        if self.visibility_timeout < 0:
            raise RunnerError(f"host.json visibilityTimeout must not be negative, got {self.visibility_timeout}")
        if self.max_polling_interval < MIN_POLLING_INTERVAL:
            raise RunnerError(
                f"host.json maxPollingInterval must be at least {MIN_POLLING_INTERVAL * 1000:.0f} ms, "
                f"got {self.max_polling_interval * 1000:.0f} ms"
            )
        if self.function_timeout is not None and self.function_timeout <= 0:
            raise RunnerError(f"host.json functionTimeout must be positive or -1, got {self.function_timeout}")
        if self.message_encoding not in ("base64", "none"):
            raise RunnerError(f"host.json messageEncoding must be base64 or none, got {self.message_encoding!r}")

    @property
    def threshold(self) -> int:
        assert self.new_batch_threshold is not None  # resolved in __post_init__
        return self.new_batch_threshold

    @property
    def max_concurrency(self) -> int:
        """The most invocations in flight per function: batchSize + newBatchThreshold."""
        return self.batch_size + self.threshold

    @classmethod
    def from_dict(cls, host: Mapping[str, Any]) -> HostQueueConfig:
        """From a parsed host.json (version 2.0: `extensions.queues`). Keys are case-insensitive, as in the host."""
        extensions = _lower_keys(host).get("extensions") or {}
        queues = _lower_keys(_lower_keys(extensions).get("queues") or {})
        kwargs: dict[str, Any] = {}
        for key, name in (
            ("batchsize", "batch_size"),
            ("newbatchthreshold", "new_batch_threshold"),
            ("maxdequeuecount", "max_dequeue_count"),
        ):
            if key in queues:
                value = queues[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise RunnerError(f"host.json {key}: expected a whole number, got {value!r}")
                kwargs[name] = value
        if "visibilitytimeout" in queues:
            kwargs["visibility_timeout"] = parse_timespan(queues["visibilitytimeout"], "visibilityTimeout")
        if "maxpollinginterval" in queues:
            kwargs["max_polling_interval"] = parse_timespan(queues["maxpollinginterval"], "maxPollingInterval")
        if "messageencoding" in queues:
            kwargs["message_encoding"] = str(queues["messageencoding"]).strip().lower()
        timeout = _lower_keys(host).get("functiontimeout")
        if timeout is not None:
            unbounded = str(timeout).strip() in ("-1", "-1.00:00:00")
            kwargs["function_timeout"] = None if unbounded else parse_timespan(timeout, "functionTimeout")
        return cls(**kwargs)

    @classmethod
    def from_host_json(cls, path: str | Path) -> HostQueueConfig:
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunnerError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise RunnerError(f"{path} must hold a JSON object")
        return cls.from_dict(document)

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _lower_keys(value: object) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, Mapping) else {}
