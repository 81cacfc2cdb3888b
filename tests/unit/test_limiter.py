"""The per-instance pacer: spacing, the max-wait hand-off to the queue, and adapting to 429s."""

from __future__ import annotations

import asyncio

import pytest

from processing.core import rate_limiter as limiter_mod
from processing.core.errors import Throttled
from processing.core.rate_limiter import HEADROOM, RateLimiter, estimate_tokens


class FakeTime:
    """A clock that only moves when the limiter sleeps, so spacing is exact and instant."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.frozen = False

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if not self.frozen:
            self.now += seconds


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    time = FakeTime()
    monkeypatch.setattr(limiter_mod.asyncio, "sleep", time.sleep)
    return time


async def send(limiter: RateLimiter, fake: FakeTime, n: int, tokens: int = 10) -> list[float]:
    """n requests one after another; the fake time at which each was let through."""
    times = []
    for _ in range(n):
        await limiter.acquire(tokens)
        times.append(fake.now)
    return times


async def test_requests_are_spaced_at_the_configured_rate_after_a_one_second_burst(fake: FakeTime) -> None:
    limiter = RateLimiter(rpm=600, clock=fake.clock, max_wait=1e9)
    times = await send(limiter, fake, 120)
    elapsed = times[-1] - times[0]
    # 120 requests at 600/min (97% of it): about 12 s, less the one-second burst at the start.
    assert 12 / HEADROOM - 1.5 < elapsed < 12 / HEADROOM + 0.1
    window = [t for t in times if t < times[0] + 60]
    assert len(window) <= 600


async def test_tokens_per_minute_bind_when_requests_are_large(fake: FakeTime) -> None:
    limiter = RateLimiter(rpm=10_000, tpm=6_000, clock=fake.clock, max_wait=1e9)
    times = await send(limiter, fake, 30, tokens=600)
    # 6,000 tokens a minute at 600 a request: about 10 requests a minute.
    assert times[-1] - times[0] > 29 * 6 - 6


async def test_unconfigured_limiter_never_waits(fake: FakeTime) -> None:
    limiter = RateLimiter(clock=fake.clock)
    times = await send(limiter, fake, 1000)
    assert times[0] == times[-1]


async def test_a_long_wait_goes_back_to_the_queue_instead_of_holding_the_worker(fake: FakeTime) -> None:
    limiter = RateLimiter(rpm=60, clock=fake.clock, max_wait=5)
    fake.frozen = True  # twenty rows arrive together
    outcomes = await asyncio.gather(*(limiter.acquire(1) for _ in range(20)), return_exceptions=True)
    deferred = [o for o in outcomes if isinstance(o, Throttled)]
    # About one a second fits in five seconds of waiting (plus the burst); the rest are deferred
    # with the delay the queue should hide them for.
    assert 12 <= len(deferred) <= 15
    assert all(d.retry_after > 5 for d in deferred)
    assert limiter.stats == {"acquired": 20 - len(deferred), "deferred": len(deferred), "throttled": 0, "exhausted": 0}


async def test_429_pauses_everyone_and_slows_the_pace_then_answers_recover_it(fake: FakeTime) -> None:
    limiter = RateLimiter(rpm=600, clock=fake.clock, max_wait=1e9)
    await send(limiter, fake, 20)
    before = fake.now
    limiter.on_throttled(retry_after=3.0)
    limiter.on_throttled(retry_after=2.0)  # the same burst: one decrease, not two
    assert limiter.factor == pytest.approx(0.7)
    await limiter.acquire(10)
    assert fake.now >= before + 3.0
    for _ in range(30):
        limiter.on_answer({}, 10)
    assert limiter.factor == 1.0


async def test_an_exhausted_budget_header_pauses_before_the_next_request(fake: FakeTime) -> None:
    limiter = RateLimiter(clock=fake.clock)
    limiter.on_answer({"x-ratelimit-remaining-requests": "5", "x-ratelimit-remaining-tokens": "50"}, tokens=10)
    start = fake.now
    await limiter.acquire(10)
    assert fake.now == start  # budget left: no pause
    limiter.on_answer({"x-ratelimit-remaining-requests": "4", "x-ratelimit-remaining-tokens": "5"}, tokens=10)
    await limiter.acquire(10)
    assert fake.now > start
    assert limiter.stats["exhausted"] == 1


async def test_concurrent_rows_queue_up_behind_each_other(fake: FakeTime) -> None:
    limiter = RateLimiter(rpm=60, clock=fake.clock, max_wait=1e9)
    fake.frozen = True
    await asyncio.gather(*(limiter.acquire(1) for _ in range(11)))
    # Reservations are taken before sleeping: 11 concurrent rows span about 10 s, not 0.
    assert limiter._tat_requests - 1000.0 > 10


def test_token_estimate_counts_the_prompt_and_max_tokens() -> None:
    messages = [{"role": "system", "content": "x" * 400}, {"role": "user", "content": "y" * 400}]
    assert estimate_tokens(messages, 500) == 200 + 8 + 3 + 500
