"""A local managed-identity endpoint speaking App Service's protocol (api-version 2019-08-01).

Point the real `azure.identity.ManagedIdentityCredential` (sync or aio) at it with

    IDENTITY_ENDPOINT=http://127.0.0.1:<port>/msi/token
    IDENTITY_HEADER=<the header value this endpoint printed or was given>

Protocol: `GET /msi/token?api-version=2019-08-01&resource=<audience>[&client_id=<id>]` with
the header `X-IDENTITY-HEADER`. A wrong or missing header is a 401, a missing or wrong
parameter a 400, both with App Service's error body `{"statusCode": n, "message": ...}`.
The answer is `{"access_token", "expires_on" (epoch seconds, a string), "resource",
"token_type": "Bearer", "client_id"}`.

Tokens are RS256 JWTs signed with a key pair generated at start (no key material is
stored anywhere), with claims aud (= resource), iss (https://sts.windows.net/<tenant>/),
tid, oid, sub, appid, iat, nbf, exp. The public key is served as a JWKS at
`/.well-known/jwks.json`; the Azure OpenAI emulator verifies tokens against it.

Any resource gets a token; the two the app asks for are Azure OpenAI
(`https://cognitiveservices.azure.com`, checked by the emulator) and Storage
(`https://storage.azure.com`, with or without the trailing slash, as the storage SDKs'
scope `https://storage.azure.com/.default` becomes). Azurite in OAuth mode (`--oauth
basic`) accepts the storage tokens: it needs exactly these claims (nbf <= now <= exp, iat,
an issuer starting https://sts.windows.net/, the storage audience) and does not check the
signature.

Control API (for tests and fault drills; localdev.control serves it, and requires the same
`X-IDENTITY-HEADER` as the token route):
- `POST /_identity/config` JSON, any subset of: `failure_rate` (0..1: that share of token
  requests get a 500), `expired` (issue tokens that have already expired),
  `lifetime_seconds` (default 3600). Answers with the whole configuration, as does GET.
- `GET /_identity/stats`: requests, tokens issued per resource (`tokens`) and per identity
  (`by_identity`: "system" for the system-assigned identity, else the user-assigned
  identity's client id, each with its tokens per resource), failures, rejections.
- `POST /_identity/reset`: zero the counters.
- `GET /_identity/health`: 200 once serving.

Run: `python -m localdev.identity_endpoint --port N [--header H] [--tenant T]`; it prints
one JSON line starting `{"ready": "identity-endpoint"` once it listens, with the header value
only if it made one up (a header it was given never reaches its output, which the stack logs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from localdev.control import add_control_routes
from localdev.ports import LOOPBACK, ServedApp, run_forever, serve_app

API_VERSION = "2019-08-01"
TOKEN_PATH = "/msi/token"
JWKS_PATH = "/.well-known/jwks.json"
HEADER_NAME = "X-IDENTITY-HEADER"
ISSUER_PREFIX = "https://sts.windows.net/"
# The resources (token audiences) the app asks for.
STORAGE_RESOURCE = "https://storage.azure.com"
OPENAI_RESOURCE = "https://cognitiveservices.azure.com"
# `by_identity` key of the system-assigned identity (a request without client_id).
SYSTEM_IDENTITY = "system"
# Clearly fake, fixed ids, so logs and tests can recognise the local identity.
DEFAULT_TENANT_ID = "00000000-0000-4000-8000-00000000a001"
DEFAULT_PRINCIPAL_ID = "00000000-0000-4000-8000-00000000b001"  # oid of the system-assigned identity
DEFAULT_CLIENT_ID = "00000000-0000-4000-8000-00000000c001"  # its appid
DEFAULT_LIFETIME_SECONDS = 3600
PROCESS_MARKER = "localdev.identity_endpoint"
CONTROL_PREFIX = "/_identity"  # localdev.control's routes
# uuid5 namespace for deriving a stable oid from a user-assigned identity's client id.
_IDS_NAMESPACE = uuid.UUID("5b0b2a54-3c0f-4c2e-9d55-6b1f3e8f0a11")


@dataclass
class IdentityConfig:
    failure_rate: float = 0.0
    expired: bool = False
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; raises ValueError (nothing applied) on a bad field."""
        unknown = set(changes) - {"failure_rate", "expired", "lifetime_seconds"}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        rate = float(changes.get("failure_rate", self.failure_rate))
        if not 0.0 <= rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        expired = changes.get("expired", self.expired)
        if not isinstance(expired, bool):
            raise ValueError("expired must be true or false")
        lifetime = int(changes.get("lifetime_seconds", self.lifetime_seconds))
        if lifetime < 1:
            raise ValueError("lifetime_seconds must be at least 1")
        self.failure_rate, self.expired, self.lifetime_seconds = rate, expired, lifetime


@dataclass
class IdentityStats:
    requests: int = 0
    failures: int = 0  # injected 500s
    rejected: int = 0  # 400/401: bad header or parameters
    tokens: Counter[str] = field(default_factory=Counter)  # per resource
    by_identity: dict[str, Counter[str]] = field(default_factory=dict)  # identity -> per resource

    def count(self, resource: str, client_id: str | None) -> None:
        self.tokens[resource] += 1
        self.by_identity.setdefault(client_id or SYSTEM_IDENTITY, Counter())[resource] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "rejected": self.rejected,
            "tokens_issued": sum(self.tokens.values()),
            "tokens": dict(self.tokens),
            "by_identity": {identity: dict(tokens) for identity, tokens in self.by_identity.items()},
        }


class IdentityEndpoint:
    """The endpoint's state: signing key, expected header, configuration and counters."""

    def __init__(
        self,
        *,
        header: str | None = None,
        tenant_id: str = DEFAULT_TENANT_ID,
        principal_id: str = DEFAULT_PRINCIPAL_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS,
        seed: int | None = None,
    ) -> None:
        # A fresh value per start, like the platform's: a leaked one is worthless next time.
        self.header = header or secrets.token_urlsafe(32)
        self.tenant_id = tenant_id
        self.principal_id = principal_id
        self.client_id = client_id
        self.config = IdentityConfig(lifetime_seconds=lifetime_seconds)
        self.stats = IdentityStats()
        self._random = random.Random(seed)
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self._private_key.public_key()))
        # kid as Entra does it: derived from the key, so a new key pair means a new kid.
        self.kid = hashlib.sha256(jwk["n"].encode()).hexdigest()[:32]
        self.jwks = {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    @property
    def issuer(self) -> str:
        return f"{ISSUER_PREFIX}{self.tenant_id}/"

    def issue_token(self, resource: str, *, client_id: str | None = None, now: float | None = None) -> tuple[str, int]:
        """A signed token for `resource` and its expiry (epoch seconds)."""
        now = int(time.time() if now is None else now)
        lifetime = self.config.lifetime_seconds
        # An expired token is issued as if an hour-long token was minted long enough ago.
        iat = now - lifetime - 300 if self.config.expired else now
        exp = iat + lifetime
        appid = client_id or self.client_id
        oid = self.principal_id if client_id is None else str(uuid.uuid5(_IDS_NAMESPACE, client_id))
        claims = {
            "aud": resource,
            "iss": self.issuer,
            "tid": self.tenant_id,
            "oid": oid,
            "sub": oid,
            "appid": appid,
            "idtyp": "app",
            "iat": iat,
            "nbf": iat,
            "exp": exp,
        }
        token = jwt.encode(claims, self._private_key, algorithm="RS256", headers={"kid": self.kid})
        return token, exp

    # --- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(TOKEN_PATH, self._token)
        app.router.add_get(JWKS_PATH, self._jwks)
        add_control_routes(app, CONTROL_PREFIX, self, self.header)  # the same header guards it
        return app

    async def _token(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        # Compare in constant time: it is the one secret this protocol has.
        sent = request.headers.get(HEADER_NAME, "")
        if not secrets.compare_digest(sent.encode(), self.header.encode()):
            return self._reject(401, f"{HEADER_NAME} header is missing or does not match IDENTITY_HEADER")
        query = request.query
        if query.get("api-version") != API_VERSION:
            return self._reject(400, f"api-version must be {API_VERSION}")
        resource = query.get("resource", "").strip()
        if not resource:
            return self._reject(400, "resource is required")
        if self.config.failure_rate and self._random.random() < self.config.failure_rate:
            self.stats.failures += 1
            return web.json_response(
                {"statusCode": 500, "message": "An unexpected error occurred (injected by the local endpoint)."},
                status=500,
            )
        client_id = query.get("client_id") or None
        token, exp = self.issue_token(resource, client_id=client_id)
        self.stats.count(resource, client_id)
        return web.json_response(
            {
                "access_token": token,
                "expires_on": str(exp),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id or self.client_id,
            }
        )

    def _reject(self, status: int, message: str) -> web.Response:
        self.stats.rejected += 1
        return web.json_response({"statusCode": status, "message": message}, status=status)

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks)

    # --- control API (localdev.control) -----------------------------------------------------

    def control_config(self) -> dict[str, Any]:
        return asdict(self.config)

    def configure(self, changes: dict[str, Any]) -> None:
        self.config.update(changes)

    def control_stats(self) -> dict[str, Any]:
        return self.stats.as_dict()

    def reset(self) -> None:
        self.stats = IdentityStats()

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def serve(self, host: str = LOOPBACK, port: int = 0) -> ServedApp:
        return await serve_app(self.app(), host, port)


def endpoint_settings(base_url: str, header: str) -> dict[str, str]:
    """The two variables that send ManagedIdentityCredential to this endpoint."""
    return {"IDENTITY_ENDPOINT": base_url.rstrip("/") + TOKEN_PATH, "IDENTITY_HEADER": header}


async def _main(args: argparse.Namespace) -> None:
    endpoint = IdentityEndpoint(
        header=args.header, tenant_id=args.tenant, lifetime_seconds=args.lifetime, seed=args.seed
    )
    served = await endpoint.serve(LOOPBACK, args.port)
    settings = endpoint_settings(served.url, endpoint.header)
    if args.header:
        # Given, so the caller has it; this line goes to a log (the stack's identity.log), and a
        # secret never does.
        del settings["IDENTITY_HEADER"]
    ready = {
        "ready": "identity-endpoint",
        "url": served.url,
        **settings,
        "jwks_url": served.url + JWKS_PATH,
        "tenant_id": endpoint.tenant_id,
    }
    print(json.dumps(ready), flush=True)
    try:
        await asyncio.Event().wait()  # until SIGTERM/SIGINT
    finally:
        await served.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localdev.identity_endpoint", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    # The environment variable keeps the value out of `ps` output; the stack uses it.
    parser.add_argument(
        "--header",
        default=os.environ.get("IDENTITY_HEADER") or None,
        help="IDENTITY_HEADER value to require (default: $IDENTITY_HEADER, else random and printed)",
    )
    parser.add_argument("--tenant", default=DEFAULT_TENANT_ID, help="tenant id in the tokens")
    parser.add_argument("--lifetime", type=int, default=DEFAULT_LIFETIME_SECONDS, help="token lifetime, seconds")
    parser.add_argument("--seed", type=int, help="seed of the failure injection")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run_forever(_main(parse_args(argv)))


if __name__ == "__main__":
    main()
