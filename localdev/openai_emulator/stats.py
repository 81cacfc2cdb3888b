"""The emulator's counters, as `/_emulator/stats` serves them.

requests, answered, by_status, throttled (429s sent), quota_throttled, auth kinds seen
({"bearer", "api-key", "none"}), tokens served, per-deployment counts, faults, dropped,
in_flight, max_in_flight.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    requests: int = 0
    answered: int = 0
    throttled: int = 0  # 429s sent, quota and injected
    quota_throttled: int = 0
    dropped: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    auth: Counter[str] = field(default_factory=lambda: Counter({"bearer": 0, "api-key": 0, "none": 0}))
    faults: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning included
    reasoning_tokens: int = 0
    deployments: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "answered": self.answered,
            "throttled": self.throttled,
            "quota_throttled": self.quota_throttled,
            "dropped": self.dropped,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_status": dict(self.by_status),
            "auth": dict(self.auth),
            "faults": dict(self.faults),
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "reasoning": self.reasoning_tokens,
                "total": self.prompt_tokens + self.completion_tokens,
            },
            "deployments": {name: dict(c) for name, c in self.deployments.items()},
        }
