"""Errors that decide what happens to a message.

Dramatiq-style: the type says whether trying again can help. Anything not listed here
is treated as transient by the Functions host (the message returns to the queue and
counts a dequeue attempt).
"""

from __future__ import annotations


class RowsmithError(Exception):
    """Base of our own errors."""


class ConfigurationError(RowsmithError):
    """A setting or pipeline is wrong; retrying cannot help until a person fixes it."""


class JobInputError(RowsmithError):
    """The input file cannot be processed as a whole (encoding, header, missing column).

    Recorded once as output/<pipeline>/<file>.error.json; never retried.
    """

    def __init__(self, message: str, *, where: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.where = where
        self.fix = fix


class RowError(RowsmithError):
    """One row failed permanently (content filter, context length, row too large)."""

    def __init__(self, message: str, *, code: str = "row_error") -> None:
        super().__init__(message)
        self.code = code


class TransientError(RowsmithError):
    """Worth retrying: the host redelivers the message after its visibility timeout."""


class Throttled(RowsmithError):
    """Azure OpenAI answered 429; the row waits `retry_after` seconds without burning a dequeue."""

    def __init__(self, retry_after: float, message: str = "throttled") -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadMessage(RowsmithError):
    """A message we cannot understand or must not trust; retrying will not change it.

    Dropped once with a log line that names the reason but never echoes the body (it is
    whatever a sender chose to write), instead of five retries and a trip to poison.
    """


class BadName(BadMessage):
    """A job id, blob name, claim, eTag or pipeline name that fails the layout's validator
    (processing/core/layout.py): no path may be derived from it."""


class CancelledFromInside(RowsmithError):
    """The work raised asyncio.CancelledError although nobody cancelled the invocation.

    Raised instead of it so the host sees an ordinary failure: the Python worker sends no
    response for a CancelledError, and the host would wait out functionTimeout, then restart
    the worker (ending every invocation in flight)."""
