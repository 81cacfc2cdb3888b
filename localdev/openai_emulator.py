"""An Azure OpenAI emulator: the chat-completions REST shape, keyless auth, quotas, faults.

It exists to test the protocol around the model, not the model: answers are
deterministic and clearly fake.

Endpoints
---------
- `POST /openai/deployments/{deployment}/chat/completions?api-version=...` (what
  `AsyncAzureOpenAI` calls). A missing api-version is a 404, as in Azure.
- `POST /openai/v1/chat/completions` (the v1 shape: the deployment is the body's `model`).

Authentication (as with `disableLocalAuth: true`)
-------------------------------------------------
- An `api-key` header: 401 `AuthenticationTypeDisabled`.
- `Authorization: Bearer <jwt>`: the token must verify against the identity endpoint's
  JWKS (fetched once, refetched when a token names an unknown kid), be RS256, have the
  audience https://cognitiveservices.azure.com, an issuer starting https://sts.windows.net/
  and valid exp/nbf/iat (no leeway: everything runs on one clock). Otherwise 401
  `InvalidAuthenticationToken`, the message naming the reason (expired, bad audience...).
- Neither: 401 `InvalidAuthenticationToken` ("no access token").
Then: an unknown deployment is a 404 `DeploymentNotFound` (deployments are a configured
list, default `gpt-4o-mini`); a body without a non-empty `messages` list is a 400.

The answer rule
---------------
Let `u` be the text of the LAST message whose role is "user" ("" if there is none; a
content given as parts is the concatenation of its text parts) and
`h = sha256(u.encode()).hexdigest()`.

- Plain text (no `response_format`, or type "text"): `f"emulated answer {h[:16]}"`.
- `response_format = {"type": "json_object"}`: the JSON text of
  `{"answer": f"emulated answer {h[:16]}"}`.
- `response_format = {"type": "json_schema", "json_schema": {"schema": S, ...}}`: the JSON
  text of an object built from S. For each property `p` of an object schema, with
  `hh = sha256((u + "\\x00" + p).encode()).hexdigest()`:
    - `const` -> that value; `enum` -> `enum[int(hh[:8], 16) % len(enum)]`
    - string -> `f"{p}-{hh[:8]}"` (cut to `maxLength` if given)
    - integer -> `int(hh[:4], 16) % 100`; with both `minimum` and `maximum`:
      `minimum + int(hh[:4], 16) % (maximum - minimum + 1)`
    - number -> the integer rule as a float; boolean -> `int(hh[0], 16) % 2 == 0`; null -> None
    - array of plain strings -> `[f"{p}-{hh[:6]}"]`; array of anything else -> one item
      made by these rules under the same name `p` (repeated up to `minItems`)
    - object -> the same rules for its own properties (each hashed with its own name)
  `$ref` to `#/$defs/...` (or `#/definitions/...`) is followed; for `anyOf`/`oneOf` and
  type lists the first non-null choice is used. Every property is filled in, in schema
  order.
- `n` > 1 gives n identical choices.

Usage, in every answer: `prompt_tokens = max(1, sum(len(content) for every message) // 4
+ 4 * len(messages))`, `completion_tokens = len(answer) // 4 + 1`. If that exceeds the
request's `max_completion_tokens` (or `max_tokens`), the content is cut to
`4 * max_tokens` characters, `completion_tokens = max_tokens` and `finish_reason` is
"length" (so a cut JSON answer does not parse, as with a real model); else "stop".
A prompt estimate above `context_window` (default 128,000) is a 400 `context_length_exceeded`.

Quotas
------
`rpm` and `tpm` (0 = unlimited) over a sliding 60-second window per deployment. As in
Azure, a request is admitted against the TPM quota with its prompt estimate plus its
`max_completion_tokens`/`max_tokens`, or `default_max_tokens` (1000) when it names none.
A request that does not fit gets a 429 with `retry-after-ms` (until enough of the window
frees) and `retry-after` (the same, rounded up to whole seconds) and Azure's error body
(code "429"); a request larger than the whole TPM quota never fits (retry-after 60 s).
Throttled requests consume no quota. Every answer carries
`x-ratelimit-remaining-requests` and `x-ratelimit-remaining-tokens` (2147483647 when
unlimited).

Faults
------
`fault_rates` maps kinds to probabilities (summing to at most 1), drawn per request from
a `random.Random(seed)`, so a seeded run with the same requests in the same order
repeats its faults. Kinds: "500", "503", "429" (with `retry-after-ms` =
`fault_retry_after_ms`, default 1000, and no quota used), "timeout" (sleep
`timeout_seconds`, default 30, then answer normally), "drop" (close the connection with
no answer), "content_filter" (400, code content_filter, innererror
ResponsibleAIPolicyViolation), "context_length" (400 context_length_exceeded) and
"invalid_json" (200 with finish_reason "stop" but content that is not JSON, as a model
ignoring its response_format would answer).

Deterministic trigger: a last user message containing `[[fault:KIND]]` always gets that
fault; `[[fault:KIND:N]]` gets it the first N times that exact message is seen, then a
normal answer (to test retries). Markers win over random faults.

Latency: `latency_ms` (mean) plus or minus up to `jitter_ms` (uniform), before answering.

Control API
-----------
- `GET /_emulator/config`, `POST /_emulator/config` (JSON, any subset of the settings;
  `fault_rates` entries are merged; answers with the whole configuration).
- `GET /_emulator/stats`: requests, answered, by_status, throttled (429s sent),
  quota_throttled, auth kinds seen ({"bearer", "api-key", "none"}), tokens served,
  per-deployment counts, faults, in_flight, max_in_flight.
- `POST /_emulator/reset`: zero the counters and quota windows, forget marker counts and
  reseed the fault draw (the configuration stays).
- `GET /_emulator/health`.

Run: `python -m localdev.openai_emulator --port N --jwks-url URL [--rpm R] [--tpm T]
[--latency-ms L] [--deployments a,b] [--seed S] [--fault-rates JSON]`; it prints one JSON
line starting `{"ready": "openai-emulator"` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import json
import math
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt
from aiohttp import web

from localdev.ports import LOOPBACK, ServedApp, run_forever, serve_app

AUDIENCE = "https://cognitiveservices.azure.com"
ISSUER_PREFIX = "https://sts.windows.net/"
DEFAULT_DEPLOYMENTS = ("gpt-4o-mini",)
DEFAULT_MAX_TOKENS = 1000
DEFAULT_CONTEXT_WINDOW = 128_000
WINDOW_SECONDS = 60.0
UNLIMITED = 2_147_483_647
FAULT_KINDS = ("500", "503", "429", "timeout", "drop", "content_filter", "context_length", "invalid_json")
PROCESS_MARKER = "localdev.openai_emulator"
_MARKER = re.compile(r"\[\[fault:([a-z0-9_]+)(?::(\d+))?\]\]")
_TOKEN_CACHE_LIMIT = 10_000
_JWKS_REFETCH_SECONDS = 1.0


# --- configuration ---------------------------------------------------------------------------


@dataclass
class EmulatorConfig:
    deployments: list[str] = field(default_factory=lambda: list(DEFAULT_DEPLOYMENTS))
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rpm: int = 0
    tpm: int = 0
    fault_rates: dict[str, float] = field(default_factory=dict)
    timeout_seconds: float = 30.0
    fault_retry_after_ms: int = 1000
    context_window: int = DEFAULT_CONTEXT_WINDOW
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None

    def updated(self, changes: dict[str, Any]) -> EmulatorConfig:
        """A validated copy with `changes` applied; raises ValueError naming the bad field."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        merged = asdict(self)
        for key, value in changes.items():
            merged[key] = {**self.fault_rates, **value} if key == "fault_rates" and isinstance(value, dict) else value
        new = EmulatorConfig(**merged)
        new.validate()
        return new

    def validate(self) -> None:
        if isinstance(self.deployments, str):
            self.deployments = [d.strip() for d in self.deployments.split(",") if d.strip()]
        if not isinstance(self.deployments, list) or not all(isinstance(d, str) and d for d in self.deployments):
            raise ValueError("deployments must be a list of names")
        for name in ("latency_ms", "jitter_ms", "timeout_seconds"):
            value = float(getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must not be negative")
            setattr(self, name, value)
        for name in ("rpm", "tpm", "fault_retry_after_ms", "context_window", "default_max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number, at least 0")
        if not isinstance(self.fault_rates, dict):
            raise ValueError("fault_rates must be an object of kind: probability")
        rates = {str(k): float(v) for k, v in self.fault_rates.items()}
        bad = set(rates) - set(FAULT_KINDS)
        if bad:
            raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {', '.join(FAULT_KINDS)}")
        if any(not 0.0 <= r <= 1.0 for r in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must each be within 0..1 and sum to at most 1")
        self.fault_rates = rates
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError("seed must be a whole number or null")


# --- the answer rule (see the module docstring) ------------------------------------------------


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    chars = sum(len(content_text(m.get("content"))) for m in messages)
    return max(1, chars // 4 + 4 * len(messages))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def text_answer(user_text: str) -> str:
    return f"emulated answer {_sha(user_text)[:16]}"


def schema_answer(user_text: str, schema: dict[str, Any]) -> Any:
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    return _value(user_text, "", schema, defs, 0)


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < 16:
        ref = str(schema["$ref"])
        schema = defs.get(ref.rsplit("/", 1)[-1], {})
        seen += 1
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [_resolve(s, defs) for s in schema[key]]
            return next((s for s in options if s.get("type") != "null"), options[0] if options else {})
    return schema


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        return next((k for k in kind if k != "null"), "null")
    if "properties" in schema and "type" not in schema:
        return "object"
    return str(kind)


def _value(user_text: str, name: str, schema: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    schema = _resolve(schema, defs)
    kind = _type_of(schema)
    if kind == "object":
        if depth > 10:  # a recursive schema: stop instead of recursing forever
            return {}
        props = schema.get("properties", {})
        return {p: _value(user_text, p, s, defs, depth + 1) for p, s in props.items()}
    hh = _sha(f"{user_text}\x00{name}")
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][int(hh[:8], 16) % len(schema["enum"])]
    if kind == "array":
        items = _resolve(schema.get("items", {}), defs)
        plain_string = _type_of(items) == "string" and not items.get("enum") and "const" not in items
        item = f"{name}-{hh[:6]}" if plain_string else _value(user_text, name, items, defs, depth + 1)
        return [item] * max(1, int(schema.get("minItems", 1)))
    return _scalar(kind, name, hh, schema)


def _scalar(kind: str, name: str, hh: str, schema: dict[str, Any]) -> Any:
    if kind in ("integer", "number"):
        raw = int(hh[:4], 16)
        low, high = schema.get("minimum"), schema.get("maximum")
        value = int(low) + raw % (int(high) - int(low) + 1) if low is not None and high is not None else raw % 100
        return float(value) if kind == "number" else value
    if kind == "boolean":
        return int(hh[0], 16) % 2 == 0
    if kind == "null":
        return None
    text = f"{name}-{hh[:8]}"
    return text[: int(schema["maxLength"])] if "maxLength" in schema else text


# --- quotas ----------------------------------------------------------------------------------


class SlidingWindow:
    """Admitted requests of the last 60 s of one deployment, with their token costs.

    Kept as parallel lists with a moving head and running token totals, so admission is
    O(log n) even with thousands of requests in the window (600+ req/s in benchmarks).
    """

    def __init__(self) -> None:
        self._times: list[float] = []
        self._cums: list[int] = []  # tokens admitted up to and including each entry
        self._head = 0
        self._base = 0  # cumulative tokens before the head entry

    def _prune(self, now: float) -> None:
        cutoff = now - WINDOW_SECONDS
        head = bisect.bisect_right(self._times, cutoff, lo=self._head)
        if head > self._head:
            self._base = self._cums[head - 1]
            self._head = head
        if self._head > 1024 and self._head * 2 > len(self._times):
            del self._times[: self._head], self._cums[: self._head]
            self._head = 0

    def usage(self, now: float) -> tuple[int, int]:
        self._prune(now)
        count = len(self._times) - self._head
        return count, (self._cums[-1] - self._base) if count else 0

    def admit(self, now: float, cost: int, rpm: int, tpm: int) -> float:
        """Admit the request (return 0) or return the seconds until it would fit."""
        count, tokens = self.usage(now)
        wait = 0.0
        if rpm and count + 1 > rpm:
            wait = self._times[self._head + count - rpm] + WINDOW_SECONDS - now
        if tpm and tokens + cost > tpm:
            if cost > tpm:
                wait = max(wait, WINDOW_SECONDS)
            else:
                # The earliest entry whose expiry frees enough tokens.
                need = self._base + tokens + cost - tpm
                i = bisect.bisect_left(self._cums, need, lo=self._head)
                wait = max(wait, self._times[i] + WINDOW_SECONDS - now)
        if wait > 0:
            return wait
        self._times.append(now)
        self._cums.append((self._cums[-1] if self._cums else 0) + cost)
        return 0.0


# --- token verification -----------------------------------------------------------------------


class AuthError(Exception):
    pass


class TokenVerifier:
    """Verifies bearer tokens against the identity endpoint's JWKS.

    Results are cached per token string (a process sends the same token for about an
    hour), so a request costs a dict lookup, not an RSA verification; the cache still
    re-checks the expiry on every hit.
    """

    def __init__(self, jwks_url: str, audience: str = AUDIENCE) -> None:
        host = urlsplit(jwks_url).hostname
        if host != LOOPBACK:
            raise ValueError(f"the JWKS URL must be on {LOOPBACK} (got {jwks_url})")
        self.jwks_url = jwks_url
        self.audiences = [audience, audience + "/"]
        self._keys: dict[str, jwt.PyJWK] = {}
        self._missing: dict[str, float] = {}  # kid -> when a fetch last failed to find it
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[str, dict[str, Any] | str] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def verify(self, token: str) -> dict[str, Any]:
        cached = self._cache.get(token)
        if cached is None:
            cached = await self._verify_uncached(token)
            if len(self._cache) >= _TOKEN_CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = cached
        if isinstance(cached, str):
            raise AuthError(cached)
        now = time.time()
        if cached["exp"] <= now:
            raise AuthError(f"the access token expired at {cached['exp']} (now {int(now)})")
        if cached["nbf"] > now:
            raise AuthError("the access token is not yet valid (nbf is in the future)")
        return cached

    async def _verify_uncached(self, token: str) -> dict[str, Any] | str:
        """The claims, or the reason (a string) the token is refused for good."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return "the access token is not a well-formed JWT"
        if header.get("alg") != "RS256":
            return f"the access token's algorithm {header.get('alg')!r} is not RS256"
        key = await self._key(str(header.get("kid", "")))
        if key is None:
            raise AuthError(f"the access token's signing key {header.get('kid')!r} is unknown to the identity endpoint")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.audiences,
                options={"require": ["exp", "nbf", "iat", "iss", "aud"], "verify_exp": False, "verify_nbf": False},
            )
        except jwt.InvalidAudienceError:
            aud = jwt.decode(token, options={"verify_signature": False}).get("aud")
            return f"the access token's audience {aud!r} is wrong: expected {self.audiences[0]}"
        except jwt.InvalidSignatureError:
            return "the access token's signature does not verify"
        except jwt.PyJWTError as exc:
            return f"the access token is invalid: {exc}"
        if not str(claims.get("iss", "")).startswith(ISSUER_PREFIX):
            return f"the access token's issuer {claims.get('iss')!r} does not start with {ISSUER_PREFIX}"
        return claims

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            # Refetch on an unknown kid (the identity endpoint restarted with a new key). A kid
            # still unknown after a fetch is not fetched for again for a second, so a stream
            # of tokens from a foreign key cannot turn every request into a JWKS download.
            missed = self._missing.get(kid)
            if kid not in self._keys and (missed is None or time.monotonic() - missed >= _JWKS_REFETCH_SECONDS):
                await self._fetch()
                if kid not in self._keys:
                    if len(self._missing) >= _TOKEN_CACHE_LIMIT:
                        self._missing.clear()
                    self._missing[kid] = time.monotonic()
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.get(self.jwks_url) as response:
                response.raise_for_status()
                data = await response.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KeysUnavailableError(f"cannot fetch signing keys from {self.jwks_url}: {exc}") from exc
        keys = jwt.PyJWKSet.from_dict(data).keys
        self._keys = {k.key_id: k for k in keys if k.key_id}


class KeysUnavailableError(Exception):
    pass


# --- responses ----------------------------------------------------------------------------------


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


CONTENT_FILTER_BODY = error_body(
    "content_filter",
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
    "Please modify your prompt and retry. To learn more about our content filtering policies please read "
    "our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
    param="prompt",
    type=None,
    status=400,
    innererror={
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_result": {
            "hate": {"filtered": True, "severity": "high"},
            "jailbreak": {"filtered": False, "detected": False},
            "self_harm": {"filtered": False, "severity": "safe"},
            "sexual": {"filtered": False, "severity": "safe"},
            "violence": {"filtered": False, "severity": "safe"},
        },
    },
)
_SAFE = {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}
_PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": _SAFE}]


def context_length_body(window: int, tokens: int) -> dict[str, Any]:
    return error_body(
        "context_length_exceeded",
        f"This model's maximum context length is {window} tokens. However, your messages resulted in "
        f"{tokens} tokens. Please reduce the length of the messages.",
        param="messages",
        type="invalid_request_error",
    )


def throttle_body(api_version: str, which: str, seconds: int) -> dict[str, Any]:
    return error_body(
        "429",
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version} have "
        f"exceeded {which} rate limit of your current AIServices S0 pricing tier. Please retry after {seconds} "
        "seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the "
        "default rate limit. (local emulator)",
    )


@dataclass
class ChatRequest:
    deployment: str
    api_version: str
    body: dict[str, Any]
    messages: list[dict[str, Any]]
    user_text: str
    prompt_tokens: int
    max_tokens: int | None


class BadRequestError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequestError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("'messages' is a required property and must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequestError(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
    if body.get("stream"):
        raise BadRequestError("the emulator does not stream; send stream=false", "stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise BadRequestError(f"'{name}' must be a whole number, at least 1", name)
    _check_response_format(body.get("response_format"))
    return body


def _check_response_format(fmt: Any) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise BadRequestError("response_format.type must be text, json_object or json_schema", "response_format")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict) or not spec.get("name"):
            raise BadRequestError("response_format.json_schema needs a 'name' and a 'schema' object", "response_format")


def render_answer(request: ChatRequest) -> str:
    fmt = request.body.get("response_format") or {}
    kind = fmt.get("type", "text")
    if kind == "json_schema":
        return json.dumps(schema_answer(request.user_text, fmt["json_schema"]["schema"]))
    if kind == "json_object":
        return json.dumps({"answer": text_answer(request.user_text)})
    return text_answer(request.user_text)


# --- state and counters ------------------------------------------------------------------------


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
    completion_tokens: int = 0
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
                "total": self.prompt_tokens + self.completion_tokens,
            },
            "deployments": {name: dict(c) for name, c in self.deployments.items()},
        }


class OpenAIEmulator:
    def __init__(self, jwks_url: str, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.config.validate()
        self.verifier = TokenVerifier(jwks_url)
        self.stats = Stats()
        self._windows: defaultdict[str, SlidingWindow] = defaultdict(SlidingWindow)
        self._marker_counts: Counter[str] = Counter()
        self._faults = random.Random(self.config.seed)
        self._jitter = random.Random()  # separate, so latency never shifts the fault sequence
        self._ids = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        app.router.add_get("/_emulator/config", self._get_config)
        app.router.add_post("/_emulator/config", self._set_config)
        app.router.add_get("/_emulator/stats", self._get_stats)
        app.router.add_post("/_emulator/reset", self._reset)
        app.router.add_get("/_emulator/health", self._health)
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
        denied = await self._authenticate(request)
        if denied is not None:
            return denied
        api_version = request.query.get("api-version", "")
        if request.match_info.get("deployment") is not None and not api_version:
            return self._json(404, error_body("404", "Resource not found"))
        try:
            body = parse_body(await request.read())
        except BadRequestError as exc:
            return self._json(400, error_body("BadRequest", str(exc), param=exc.param, type="invalid_request_error"))
        deployment = deployment or str(body.get("model", ""))
        if deployment not in self.config.deployments:
            return self._json(
                404,
                error_body(
                    "DeploymentNotFound",
                    "The API deployment for this resource does not exist. If you created the deployment within "
                    "the last 5 minutes, please wait a moment and try again.",
                ),
            )
        self.stats.deployments[deployment]["requests"] += 1
        chat = self._chat_request(deployment, api_version, body)
        if chat.prompt_tokens > self.config.context_window:
            return self._json(400, context_length_body(self.config.context_window, chat.prompt_tokens), deployment)
        fault = self._pick_fault(chat.user_text)
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

    def _chat_request(self, deployment: str, api_version: str, body: dict[str, Any]) -> ChatRequest:
        messages = body["messages"]
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        return ChatRequest(
            deployment=deployment,
            api_version=api_version,
            body=body,
            messages=messages,
            user_text=last_user_text(messages),
            prompt_tokens=estimate_prompt_tokens(messages),
            max_tokens=max_tokens,
        )

    async def _authenticate(self, request: web.Request) -> web.Response | None:
        headers = request.headers
        if "api-key" in headers:
            self.stats.auth["api-key"] += 1
            return self._json(
                401,
                error_body("AuthenticationTypeDisabled", "Key based authentication is disabled for this resource."),
            )
        authorization = headers.get("Authorization", "")
        if not authorization:
            self.stats.auth["none"] += 1
            return self._unauthorized("no access token (send Authorization: Bearer <token>)")
        self.stats.auth["bearer"] += 1
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._unauthorized("the Authorization header is not 'Bearer <token>'")
        try:
            await self.verifier.verify(token.strip())
        except AuthError as exc:
            return self._unauthorized(str(exc))
        except KeysUnavailableError as exc:
            return self._json(500, error_body("InternalServerError", str(exc)))
        return None

    def _unauthorized(self, reason: str) -> web.Response:
        message = (
            "Unauthorized. Access token is missing, invalid, audience is incorrect "
            f"({AUDIENCE}), or have expired. Reason: {reason}."
        )
        return self._json(401, error_body("InvalidAuthenticationToken", message))

    def _pick_fault(self, user_text: str) -> str | None:
        if "[[fault:" in user_text:
            match = _MARKER.search(user_text)
            if match and match.group(1) in FAULT_KINDS:
                kind, times = match.group(1), match.group(2)
                if times is None:
                    return kind
                key = _sha(user_text)
                self._marker_counts[key] += 1
                if self._marker_counts[key] <= int(times):
                    return kind
                return None
        rates = self.config.fault_rates
        if not rates or not any(rates.values()):
            return None
        draw = self._faults.random()
        for kind in FAULT_KINDS:  # a fixed order, so a seed means the same thing every run
            draw -= rates.get(kind, 0.0)
            if draw < 0:
                return kind
        return None

    def _admit(self, deployment: str, api_version: str, cost: int) -> web.Response | None:
        config = self.config
        if not (config.rpm or config.tpm):
            return None
        window = self._windows[deployment]
        now = time.monotonic()
        count, _ = window.usage(now)
        wait = window.admit(now, cost, config.rpm, config.tpm)
        if not wait:
            return None
        self.stats.quota_throttled += 1
        self.stats.deployments[deployment]["throttled"] += 1
        which = "call" if config.rpm and count + 1 > config.rpm else "token"
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
            message = "The server had an error while processing your request. Sorry about that! (injected)"
            return self._json(500, error_body("InternalServerError", message), chat.deployment)
        if fault == "503":
            message = "The service is temporarily unable to process your request. Please try again later. (injected)"
            return self._json(503, error_body("ServiceUnavailable", message), chat.deployment)
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
        # "drop": abort the TCP connection, so the client sees a reset with no response.
        if request.transport is not None:
            request.transport.abort()
        return None

    def _answer(self, chat: ChatRequest, content: str | None = None) -> web.Response:
        content = render_answer(chat) if content is None else content
        completion = len(content) // 4 + 1
        finish = "stop"
        if chat.max_tokens is not None and completion > chat.max_tokens:
            content, completion, finish = content[: 4 * chat.max_tokens], chat.max_tokens, "length"
        n = int(chat.body.get("n") or 1)
        self._ids += 1
        message = {"role": "assistant", "content": content, "refusal": None}
        body = {
            "id": f"chatcmpl-emu-{self._ids:010d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.deployment,
            "system_fingerprint": "fp_rowsmith_emulator",
            "prompt_filter_results": _PROMPT_FILTER_RESULTS,
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "finish_reason": finish,
                    "logprobs": None,
                    "content_filter_results": _SAFE,
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": chat.prompt_tokens,
                "completion_tokens": completion * n,
                "total_tokens": chat.prompt_tokens + completion * n,
            },
        }
        stats = self.stats
        stats.answered += 1
        stats.prompt_tokens += chat.prompt_tokens
        stats.completion_tokens += completion * n
        stats.deployments[chat.deployment]["answered"] += 1
        return self._json(200, body, chat.deployment)

    def _json(self, status: int, body: dict[str, Any], deployment: str | None = None) -> web.Response:
        response = web.json_response(body, status=status)
        requests_left, tokens_left = self._remaining(deployment)
        headers = response.headers
        headers["x-ratelimit-remaining-requests"] = str(requests_left)
        headers["x-ratelimit-remaining-tokens"] = str(tokens_left)
        headers["apim-request-id"] = str(uuid.uuid4())
        return response

    def _remaining(self, deployment: str | None) -> tuple[int, int]:
        config = self.config
        count, tokens = (0, 0)
        if deployment in self._windows:
            count, tokens = self._windows[deployment].usage(time.monotonic())
        requests_left = max(0, config.rpm - count) if config.rpm else UNLIMITED
        tokens_left = max(0, config.tpm - tokens) if config.tpm else UNLIMITED
        return requests_left, tokens_left

    # --- control API ---------------------------------------------------------------------

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.config))

    async def _set_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            new = self.config.updated(changes)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if new.seed != self.config.seed:
            self._faults = random.Random(new.seed)
        self.config = new
        return web.json_response(asdict(self.config))

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _reset(self, request: web.Request) -> web.Response:
        in_flight = self.stats.in_flight
        self.stats = Stats(in_flight=in_flight, max_in_flight=in_flight)
        self._windows.clear()
        self._marker_counts.clear()
        self._faults = random.Random(self.config.seed)
        return web.json_response(self.stats.as_dict())

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "deployments": self.config.deployments})


# --- command line ---------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    config = EmulatorConfig(
        deployments=[d.strip() for d in args.deployments.split(",") if d.strip()],
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        fault_rates=json.loads(args.fault_rates) if args.fault_rates else {},
        timeout_seconds=args.timeout_seconds,
        fault_retry_after_ms=args.fault_retry_after_ms,
        context_window=args.context_window,
        default_max_tokens=args.default_max_tokens,
        seed=args.seed,
    )
    config.validate()
    return config


def config_to_args(config: EmulatorConfig) -> list[str]:
    """The command-line flags that make a child emulator start with `config`."""
    args = [
        "--deployments", ",".join(config.deployments),
        "--rpm", str(config.rpm),
        "--tpm", str(config.tpm),
        "--latency-ms", str(config.latency_ms),
        "--jitter-ms", str(config.jitter_ms),
        "--timeout-seconds", str(config.timeout_seconds),
        "--fault-retry-after-ms", str(config.fault_retry_after_ms),
        "--context-window", str(config.context_window),
        "--default-max-tokens", str(config.default_max_tokens),
    ]  # fmt: skip
    if config.fault_rates:
        args += ["--fault-rates", json.dumps(config.fault_rates)]
    if config.seed is not None:
        args += ["--seed", str(config.seed)]
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localdev.openai_emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--jwks-url", required=True, help="the identity endpoint's /.well-known/jwks.json")
    parser.add_argument("--deployments", default=",".join(DEFAULT_DEPLOYMENTS), help="comma-separated names")
    parser.add_argument("--rpm", type=int, default=0, help="requests per minute per deployment (0: unlimited)")
    parser.add_argument("--tpm", type=int, default=0, help="tokens per minute per deployment (0: unlimited)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="mean added latency")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="latency jitter, plus or minus")
    parser.add_argument("--fault-rates", help='JSON, for example {"500": 0.1, "drop": 0.05}')
    parser.add_argument("--timeout-seconds", type=float, default=30.0, help="how long a 'timeout' fault stalls")
    parser.add_argument("--fault-retry-after-ms", type=int, default=1000, help="retry-after-ms of a '429' fault")
    parser.add_argument("--context-window", type=int, default=DEFAULT_CONTEXT_WINDOW)
    parser.add_argument("--default-max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--seed", type=int, help="seed of the fault draw (reproducible faults)")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    emulator = OpenAIEmulator(args.jwks_url, config_from_args(args))
    served = await emulator.serve(LOOPBACK, args.port)
    ready = {"ready": "openai-emulator", "url": served.url, "deployments": emulator.config.deployments}
    print(json.dumps(ready), flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM/SIGINT
    finally:
        await served.stop()


def main(argv: list[str] | None = None) -> None:
    run_forever(_main(parse_args(argv)))


if __name__ == "__main__":
    main()
