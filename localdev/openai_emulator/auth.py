"""Authentication, as with `disableLocalAuth: true`: bearer tokens from the identity endpoint only.

- An `api-key` header: 401 `AuthenticationTypeDisabled`.
- `Authorization: Bearer <jwt>`: the token must verify against the identity endpoint's
  JWKS (fetched once, refetched when a token names an unknown kid), be RS256, have the
  audience https://cognitiveservices.azure.com, an issuer starting https://sts.windows.net/
  and valid exp/nbf/iat (no leeway: everything runs on one clock). Otherwise 401
  `InvalidAuthenticationToken`, the message naming the reason (expired, bad audience...).
- Neither: 401 `InvalidAuthenticationToken` ("no access token").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jwt

from localdev.openai_emulator.errors import KEY_AUTH_DISABLED_BODY, error_body, unauthorized_body
from localdev.ports import LOOPBACK

AUDIENCE = "https://cognitiveservices.azure.com"
ISSUER_PREFIX = "https://sts.windows.net/"
_TOKEN_CACHE_LIMIT = 10_000
_JWKS_REFETCH_SECONDS = 1.0


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


def credential_kind(headers: Mapping[str, str]) -> str:
    """What a request authenticates with: "api-key", "bearer" (any Authorization header) or "none"."""
    if "api-key" in headers:
        return "api-key"
    return "bearer" if headers.get("Authorization", "") else "none"


async def check_credential(headers: Mapping[str, str], verifier: TokenVerifier) -> tuple[int, dict[str, Any]] | None:
    """None if the request may go on, else the status and error body to refuse it with."""
    if "api-key" in headers:
        return 401, KEY_AUTH_DISABLED_BODY
    authorization = headers.get("Authorization", "")
    if not authorization:
        return _unauthorized("no access token (send Authorization: Bearer <token>)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("the Authorization header is not 'Bearer <token>'")
    try:
        await verifier.verify(token.strip())
    except AuthError as exc:
        return _unauthorized(str(exc))
    except KeysUnavailableError as exc:
        return 500, error_body("InternalServerError", str(exc))
    return None


def _unauthorized(reason: str) -> tuple[int, dict[str, Any]]:
    return 401, unauthorized_body(AUDIENCE, reason)
