"""A per-instance pacer for one Azure OpenAI deployment's requests and tokens per minute.

Azure admits a request if the deployment's requests-per-minute (RPM) and tokens-per-minute
(TPM) budgets have room, counting the prompt's tokens plus `max_tokens` (not the tokens the
answer turns out to use). Firing rows as fast as the queue delivers them trips 429s, and each
429 costs a round trip and a re-queue. This limiter spaces requests so an instance stays just
under its share of the quota, and adapts to what the service says:

  - A configured rate (`rpm`, `tpm`: a pipeline's, else AZURE_OPENAI_RPM/TPM) is paced with
    GCRA (a token bucket kept as "theoretical arrival times"): O(1), fair, with at most one
    second of burst. The pace aims at HEADROOM of the rate, so a one-minute window still has
    room when requests land a little early.
  - A 429 pauses every row of the instance for the server's `retry-after-ms` and lowers the
    pace multiplicatively; each answer raises it again additively (AIMD), up to the configured
    rate. Other instances and other apps sharing the deployment are what this corrects for.
  - `x-ratelimit-remaining-requests`/`-tokens` of 0 (or fewer tokens left than a request
    costs) pause briefly before the next request is sent into a certain 429.
  - A row never waits here longer than `max_wait`: it goes back to the queue with a delay
    (`Throttled`), so a long pause holds no worker and costs no dequeue attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from processing.core.errors import Throttled

HEADROOM = 0.97  # pace at 97% of the configured rate
BURST_SECONDS = 1.0  # Azure enforces RPM over 1-10 s intervals: allow one second of burst
MIN_FACTOR = 0.05
DECREASE = 0.7  # a 429 cuts the pace to 70%...
DECREASE_EVERY = 1.0  # ...at most once a second (a burst of 429s is one signal, not twenty)
INCREASE = 0.02  # each answer gives back 2% of the configured rate
EXHAUSTED_PAUSE = 1.0  # pause when the service says the budget is spent
MAX_WAIT = 15.0  # longer than this, the row waits in the queue instead of in memory


def estimate_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    """Azure's admission estimate: the prompt's tokens plus max_tokens.

    Without the model's tokenizer, four characters per token plus a few per message is the
    usual approximation for English text; a low estimate is corrected by the 429s it causes.
    """
    chars = sum(len(m.get("content", "")) for m in messages)
    return chars // 4 + 4 * len(messages) + 3 + max_tokens


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


class RateLimiter:
    def __init__(
        self,
        rpm: int = 0,
        tpm: int = 0,
        *,
        max_wait: float = MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.max_wait = max_wait
        self.factor = 1.0
        self._clock = clock
        self._tat_requests = 0.0  # GCRA theoretical arrival times
        self._tat_tokens = 0.0
        self._pause_until = 0.0
        self._last_decrease = float("-inf")
        self.stats: dict[str, int] = {"acquired": 0, "deferred": 0, "throttled": 0, "exhausted": 0}

    def configure(self, rpm: int, tpm: int) -> None:
        """The latest pipeline's limits for this deployment (pipelines sharing one should agree)."""
        self.rpm, self.tpm = rpm, tpm

    def _interval(self, per_minute: int) -> float:
        """Seconds per unit at the current pace; 0 when unlimited."""
        if not per_minute:
            return 0.0
        return 60.0 / (per_minute * HEADROOM * self.factor)

    def _start_time(self, now: float, tokens: int) -> float:
        start = max(now, self._pause_until)
        step_r = self._interval(self.rpm)
        if step_r:
            start = max(start, self._tat_requests - BURST_SECONDS)
        step_t = self._interval(self.tpm)
        if step_t:
            # A request larger than one second of tokens still goes, alone, when the bucket is full.
            start = max(start, self._tat_tokens - max(BURST_SECONDS, tokens * step_t))
        return start

    async def acquire(self, tokens: int) -> None:
        """Wait for this request's turn, or raise Throttled if that is more than max_wait away."""
        now = self._clock()
        start = self._start_time(now, tokens)
        wait = start - now
        if wait > self.max_wait:
            self.stats["deferred"] += 1
            raise Throttled(wait, f"the instance's Azure OpenAI pace has no room for {wait:.0f} s")
        # Reserve the slot before sleeping, so concurrent rows queue up behind each other.
        step_r, step_t = self._interval(self.rpm), self._interval(self.tpm)
        if step_r:
            self._tat_requests = max(self._tat_requests, start) + step_r
        if step_t:
            self._tat_tokens = max(self._tat_tokens, start) + tokens * step_t
        self.stats["acquired"] += 1
        if wait > 0:
            await asyncio.sleep(wait)

    def on_throttled(self, retry_after: float) -> None:
        """A 429: everyone on this instance waits, and the pace drops."""
        now = self._clock()
        self.stats["throttled"] += 1
        self._pause_until = max(self._pause_until, now + retry_after)
        if now - self._last_decrease >= DECREASE_EVERY:
            self.factor = max(MIN_FACTOR, self.factor * DECREASE)
            self._last_decrease = now

    def on_answer(self, headers: Mapping[str, Any] | None, tokens: int) -> None:
        """A successful call: recover the pace, and heed the service's remaining budget."""
        self.factor = min(1.0, self.factor + INCREASE)
        if not headers:
            return
        requests_left = _header_int(headers, "x-ratelimit-remaining-requests")
        tokens_left = _header_int(headers, "x-ratelimit-remaining-tokens")
        if requests_left == 0 or (tokens_left is not None and tokens_left < tokens):
            self.stats["exhausted"] += 1
            self._pause_until = max(self._pause_until, self._clock() + EXHAUSTED_PAUSE)


_limiters: dict[str, RateLimiter] = {}


def limiter_for(deployment: str, rpm: int, tpm: int) -> RateLimiter:
    """The process's limiter for a deployment: rows of every job share the deployment's quota."""
    limiter = _limiters.get(deployment)
    if limiter is None:
        limiter = _limiters[deployment] = RateLimiter(rpm, tpm)
    elif (limiter.rpm, limiter.tpm) != (rpm, tpm):
        limiter.configure(rpm, tpm)
    return limiter
