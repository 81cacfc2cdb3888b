"""What the app needs to know of host.json: the dequeue limit that sends a message to poison.

On its last allowed attempt a row that still fails transiently is recorded as an error
with the real reason, rather than raising into the poison queue where the reason is lost.
"""

from __future__ import annotations

import functools
import json

from processing.core.settings import APP_ROOT

DEFAULT_MAX_DEQUEUE = 5


@functools.cache
def max_dequeue_count() -> int:
    try:
        data = json.loads((APP_ROOT / "host.json").read_text(encoding="utf-8"))
        return int(data["extensions"]["queues"].get("maxDequeueCount", DEFAULT_MAX_DEQUEUE))
    except (OSError, KeyError, ValueError, TypeError):
        return DEFAULT_MAX_DEQUEUE
