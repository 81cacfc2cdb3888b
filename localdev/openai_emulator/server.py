"""The emulator's aiohttp application: the chat routes, the order of the checks on a request, the control API.

A chat request is checked in this order: authentication (localdev.openai_emulator.auth),
the api-version (missing: 404, as in Azure), the body (localdev.openai_emulator.chat: a
400), the deployment (404 `DeploymentNotFound`), its model profile (a retired model: 404 "Resource
not found"; parameters the model does not take: Azure's 400; localdev.openai_emulator.models),
the context window (a prompt of more tokens than `context_window`, default 128,000, is a 400
`context_length_exceeded`), an injected 429 (no quota used), the quota
(localdev.openai_emulator.quota), latency, then an injected fault or the answer (localdev.openai_emulator.answers).

Latency: `latency_ms` (mean) plus or minus up to `jitter_ms` (uniform), before answering.

Every response carries `x-ratelimit-remaining-requests`, `x-ratelimit-remaining-tokens`
and an `apim-request-id`. The control API is localdev.control's, under `/_emulator`, and requires
`X-IDENTITY-HEADER: <control_header>` (the stack passes its IDENTITY_HEADER).
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import uuid
from dataclasses import asdict
from typing import Any

from aiohttp import web

from localdev.control import add_control_routes
from localdev.openai_emulator.answers import completion, malformed_answer
from localdev.openai_emulator.auth import TokenVerifier, check_credential, credential_kind
from localdev.openai_emulator.chat import BadRequestError, ChatRequest, chat_request, parse_body
from localdev.openai_emulator.config import EmulatorConfig
from localdev.openai_emulator.errors import (
    CONTENT_FILTER_BODY,
    DEPLOYMENT_NOT_FOUND_BODY,
    INJECTED_500_BODY,
    INJECTED_503_BODY,
    NOT_FOUND_BODY,
    bad_request_body,
    context_length_body,
    throttle_body,
)
from localdev.openai_emulator.faults import MALFORMED_JSON_KINDS, FaultDraw
from localdev.openai_emulator.models import profile_for, reasoning_tokens, rejected
from localdev.openai_emulator.quota import Quotas
from localdev.openai_emulator.stats import Stats
from localdev.ports import LOOPBACK, ServedApp, serve_app

CONTROL_PREFIX = "/_emulator"  # localdev.control's routes


class OpenAIEmulator:
    def __init__(self, jwks_url: str, config: EmulatorConfig | None = None, control_header: str | None = None) -> None:
        # What the control API requires in X-IDENTITY-HEADER: the stack's IDENTITY_HEADER, or a random value.
        self.control_header = control_header or secrets.token_urlsafe(32)
        self.config = config or EmulatorConfig()
        self.config.validate()
        self.verifier = TokenVerifier(jwks_url)
        self.stats = Stats()
        self._quotas = Quotas()
        self._faults = FaultDraw(self.config.seed)
        self._jitter = random.Random()  # separate, so latency never shifts the fault sequence
        self._ids = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        add_control_routes(app, CONTROL_PREFIX, self, self.control_header)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def serve(self, host: str = LOOPBACK, port: int = 0) -> ServedApp:
        return await serve_app(self.app(), host, port)

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.verifier.close()

    # --- the chat endpoint ---------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        deployment = request.match_info.get("deployment", "")
        try:
            response = await self._handle(request, deployment)
        except asyncio.CancelledError:  # the client gave up (or dropped) mid-request
            stats.by_status["cancelled"] += 1
            raise
        finally:
            stats.in_flight -= 1
        if response is None:
            stats.dropped += 1
            stats.by_status["dropped"] += 1
            raise asyncio.CancelledError  # nothing may be written on an aborted connection
        stats.by_status[str(response.status)] += 1
        if response.status == 429:
            stats.throttled += 1
        return response

    async def _handle(self, request: web.Request, deployment: str) -> web.Response | None:
        self.stats.auth[credential_kind(request.headers)] += 1
        denied = await check_credential(request.headers, self.verifier)
        if denied is not None:
            return self._json(*denied)
        api_version = request.query.get("api-version", "")
        if request.match_info.get("deployment") is not None and not api_version:
            return self._json(404, NOT_FOUND_BODY)
        try:
            body = parse_body(await request.read())
        except BadRequestError as exc:
            return self._json(400, bad_request_body(str(exc), exc.param))
        deployment = deployment or str(body.get("model", ""))
        if deployment not in self.config.deployments:
            return self._json(404, DEPLOYMENT_NOT_FOUND_BODY)
        self.stats.deployments[deployment]["requests"] += 1
        profile = profile_for(deployment, self.config.models)
        if profile.retired:
            self.stats.deployments[deployment]["retired"] += 1
            return self._json(404, NOT_FOUND_BODY, deployment)
        refused = rejected(profile, body)
        if refused is not None:
            self.stats.deployments[deployment]["rejected_parameters"] += 1
            return self._json(400, refused, deployment)
        chat = chat_request(deployment, api_version, body, profile.model)
        if chat.prompt_tokens > self.config.context_window:
            return self._json(400, context_length_body(self.config.context_window, chat.prompt_tokens), deployment)
        fault = self._faults.pick(chat.user_text, self.config.fault_rates)
        if fault == "429":
            self.stats.faults[fault] += 1
            return self._throttled(deployment, api_version, self.config.fault_retry_after_ms / 1000, "call")
        cost = chat.prompt_tokens + (chat.max_tokens or self.config.default_max_tokens)
        throttled = self._admit(deployment, api_version, cost)
        if throttled is not None:
            return throttled
        await self._delay()
        if fault is not None:
            self.stats.faults[fault] += 1
            return await self._fault(request, fault, chat)
        return self._answer(chat)

    def _admit(self, deployment: str, api_version: str, cost: int) -> web.Response | None:
        config = self.config
        wait, which = self._quotas.admit(deployment, cost, config.rpm, config.tpm)
        if not wait:
            return None
        self.stats.quota_throttled += 1
        self.stats.deployments[deployment]["throttled"] += 1
        return self._throttled(deployment, api_version, wait, which)

    def _throttled(self, deployment: str, api_version: str, wait: float, which: str) -> web.Response:
        ms = max(1, math.ceil(wait * 1000))
        seconds = max(1, math.ceil(ms / 1000))
        response = self._json(429, throttle_body(api_version, which, seconds), deployment)
        response.headers["retry-after-ms"] = str(ms)
        response.headers["retry-after"] = str(seconds)
        return response

    async def _delay(self) -> None:
        config = self.config
        delay = config.latency_ms
        if config.jitter_ms:
            delay += self._jitter.uniform(-config.jitter_ms, config.jitter_ms)
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    async def _fault(self, request: web.Request, fault: str, chat: ChatRequest) -> web.Response | None:
        if fault == "500":
            return self._json(500, INJECTED_500_BODY, chat.deployment)
        if fault == "503":
            return self._json(503, INJECTED_503_BODY, chat.deployment)
        if fault == "content_filter":
            return self._json(400, CONTENT_FILTER_BODY, chat.deployment)
        if fault == "context_length":
            tokens = max(chat.prompt_tokens, self.config.context_window + 1)
            return self._json(400, context_length_body(self.config.context_window, tokens), chat.deployment)
        if fault == "timeout":
            await asyncio.sleep(self.config.timeout_seconds)
            return self._answer(chat)
        if fault == "invalid_json":
            return self._answer(chat, content='Sure! Here is the JSON: {"category": ')
        if fault in MALFORMED_JSON_KINDS:
            return self._answer(chat, content=malformed_answer(chat, fault))
        # "drop": abort the TCP connection, so the client sees a reset with no response.
        if request.transport is not None:
            request.transport.abort()
        return None

    def _answer(self, chat: ChatRequest, content: str | None = None) -> web.Response:
        self._ids += 1
        profile = profile_for(chat.deployment, self.config.models)
        answer = completion(
            chat,
            f"chatcmpl-emu-{self._ids:010d}",
            content,
            reasoning=reasoning_tokens(profile, chat.body),
            model=profile.model,
        )
        stats = self.stats
        stats.answered += 1
        stats.prompt_tokens += chat.prompt_tokens
        stats.completion_tokens += answer.completion_tokens
        stats.reasoning_tokens += answer.reasoning_tokens
        stats.deployments[chat.deployment]["answered"] += 1
        return self._json(200, answer.body, chat.deployment)

    def _json(self, status: int, body: dict[str, Any], deployment: str | None = None) -> web.Response:
        response = web.json_response(body, status=status)
        requests_left, tokens_left = self._quotas.remaining(deployment, self.config.rpm, self.config.tpm)
        headers = response.headers
        headers["x-ratelimit-remaining-requests"] = str(requests_left)
        headers["x-ratelimit-remaining-tokens"] = str(tokens_left)
        headers["apim-request-id"] = str(uuid.uuid4())
        return response

    # --- control API (localdev.control) ------------------------------------------------------

    def control_config(self) -> dict[str, Any]:
        return asdict(self.config)

    def configure(self, changes: dict[str, Any]) -> None:
        new = self.config.updated(changes)
        if new.seed != self.config.seed:
            self._faults.reseed(new.seed)
        self.config = new

    def control_stats(self) -> dict[str, Any]:
        return self.stats.as_dict()

    def reset(self) -> None:
        """Zero the counters and quota windows, forget marker counts and reseed the fault draw."""
        in_flight = self.stats.in_flight
        self.stats = Stats(in_flight=in_flight, max_in_flight=in_flight)
        self._quotas.clear()
        self._faults.reset(self.config.seed)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "deployments": self.config.deployments}
