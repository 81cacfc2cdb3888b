"""The control API the local emulators share, for tests and fault drills, and a client for it.

Each emulator serves it under its own prefix (the Azure OpenAI emulator under `/_emulator`,
the identity endpoint under `/_identity`):

- `GET {prefix}/config`: the whole configuration.
- `POST {prefix}/config`: a JSON object, any subset of the settings; a bad one is a 400
  `{"error": ...}` and nothing is applied; answers with the whole configuration.
- `GET {prefix}/stats`: the counters.
- `POST {prefix}/reset`: zero the counters (the configuration stays); answers with them.
- `GET {prefix}/health`: 200 once serving.

What the settings, counters and reset mean is the emulator's own (`Controlled`).

Every route but health requires the stack's own header, `X-IDENTITY-HEADER` with the
stack's IDENTITY_HEADER value (each emulator's `control_header`): without it the answer is a
401, with a wrong value a 403, and nothing is read or changed. The emulators listen on
127.0.0.1, but anyone on the machine could otherwise turn faults on, read the counters or
make the identity endpoint issue expired tokens. Health stays open: it tells only that the
service runs, and the stack asks it before it knows the child is its own.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Protocol

import aiohttp
from aiohttp import web

HEALTH = "/health"
# The managed-identity protocol's header name; the value is the stack's IDENTITY_HEADER.
HEADER = "X-IDENTITY-HEADER"


class Controlled(Protocol):
    """What an emulator provides to be controlled."""

    def control_config(self) -> dict[str, Any]:
        """The whole configuration, as JSON."""
        ...

    def configure(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, or raise ValueError/TypeError (naming the bad field) and apply nothing."""
        ...

    def control_stats(self) -> dict[str, Any]:
        """The counters, as JSON."""
        ...

    def reset(self) -> None:
        """Zero the counters."""
        ...

    def health(self) -> dict[str, Any]:
        """The body of a healthy answer."""
        ...


def _denied(request: web.Request, header: str) -> web.Response | None:
    sent = request.headers.get(HEADER)
    if sent is None:
        return web.json_response({"error": f"the control API requires the {HEADER} header"}, status=401)
    # Constant time: the value is a secret, and a timing difference would leak it byte by byte.
    if not secrets.compare_digest(sent.encode(), header.encode()):
        return web.json_response({"error": f"{HEADER} does not match this stack's header"}, status=403)
    return None


def add_control_routes(app: web.Application, prefix: str, target: Controlled, header: str) -> None:
    """Serve the control API of `target` under `prefix` (for example "/_emulator"), requiring `header`."""
    if not header:
        raise ValueError("the control API needs a header value to require")

    @web.middleware
    async def require_header(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(prefix + "/") and request.path != prefix + HEALTH:
            denied = _denied(request, header)
            if denied is not None:
                return denied
        return await handler(request)

    app.middlewares.append(require_header)

    async def get_config(request: web.Request) -> web.Response:
        return web.json_response(target.control_config())

    async def set_config(request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            target.configure(changes)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(target.control_config())

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(target.control_stats())

    async def reset(request: web.Request) -> web.Response:
        target.reset()
        return web.json_response(target.control_stats())

    async def health(request: web.Request) -> web.Response:
        return web.json_response(target.health())

    app.router.add_get(f"{prefix}/config", get_config)
    app.router.add_post(f"{prefix}/config", set_config)
    app.router.add_get(f"{prefix}/stats", get_stats)
    app.router.add_post(f"{prefix}/reset", reset)
    app.router.add_get(prefix + HEALTH, health)


class ControlError(RuntimeError):
    """A control-API request was refused; the message has the method, URL, status and body."""


async def call(base_url: str, method: str, path: str, body: dict[str, Any] | None = None, *, header: str) -> Any:
    """One control-API request (`path` with its prefix, such as "/_emulator/stats"); the JSON answer.

    `header`: the stack's IDENTITY_HEADER (`Stack.identity_header`), which the control API requires.
    """
    url = base_url + path
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.request(method, url, json=body, headers={HEADER: header}) as response,
    ):
        text = await response.text()
        if response.status >= 400:
            raise ControlError(f"{method} {url} -> {response.status}: {text}")
        return json.loads(text)
