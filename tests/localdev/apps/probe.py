"""What the fixture apps record about their invocations, for the tests to assert on."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import azure.functions as func


@dataclass(frozen=True)
class Call:
    function: str
    message_id: str
    body: bytes
    dequeue_count: int
    at: float  # time.monotonic() when the invocation started
    thread: int
    has_pop_receipt: bool
    has_insertion_time: bool


@dataclass
class Probe:
    """Invocations seen, and how many ran at once (a lock: sync functions run in threads)."""

    calls: list[Call] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)  # message ids whose invocation ran to its end
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enter(self, function: str, msg: func.QueueMessage) -> None:
        call = Call(
            function=function,
            message_id=msg.id or "",
            body=msg.get_body(),
            dequeue_count=msg.dequeue_count or 0,
            at=time.monotonic(),
            thread=threading.get_ident(),
            has_pop_receipt=bool(msg.pop_receipt),
            has_insertion_time=msg.insertion_time is not None,
        )
        with self._lock:
            self.calls.append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self, msg: func.QueueMessage, *, finished: bool = True) -> None:
        with self._lock:
            self.in_flight -= 1
            if finished:
                self.finished.append(msg.id or "")

    def of(self, function: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.function == function]
