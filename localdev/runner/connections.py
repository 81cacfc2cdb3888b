"""Storage connections: each trigger's `connection` resolved at start, and one queue service client per connection.

A trigger's `connection` names an app-setting prefix, resolved by
`processing.core.settings.StorageSettings` (Azurite's connection string, or identity-based
service URIs with the process's credential). One queue service client per connection, made
once and reused by every fetch, delete and update.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from azure.core.credentials_async import AsyncTokenCredential
from azure.storage.queue.aio import QueueServiceClient

from localdev.runner.discovery import QueueFunction
from localdev.runner.errors import RunnerError
from processing.core.errors import ConfigurationError
from processing.core.settings import StorageSettings

log = logging.getLogger("localdev.runner")
# The host's own queue polling is not the app's: the real host (.NET) logs none of it through the
# Python worker, so the runner's storage clients log their requests here, quiet, instead of
# under azure.*, which stays the app's to set (processing/adapters/clients.py).
HOST_HTTP_LOG = logging.getLogger("localdev.runner.host_http")
HOST_HTTP_LOG.setLevel(logging.WARNING)


def default_credential() -> AsyncTokenCredential:
    """The credential for identity-based connections: the app's own choice (managed identity in Azure)."""
    from processing.adapters.identity import make_credential
    from processing.core.settings import get_settings

    try:
        settings = get_settings()
    except ConfigurationError as exc:
        # The app's settings are incomplete (say, no Azure OpenAI endpoint), but storage can still
        # be reached with the developer's login.
        from azure.identity.aio import DefaultAzureCredential

        log.warning("app settings incomplete (%s); using DefaultAzureCredential for storage", exc)
        return DefaultAzureCredential()
    return make_credential(settings)


class Connections:
    """The connections `functions` name. `env` is what they are resolved from (default: the
    process environment, read by processing.core.settings); `credential` is used for
    identity-based ones (default: `default_credential()`, created only if one is needed; one
    we create, we close)."""

    def __init__(
        self,
        functions: Iterable[QueueFunction],
        env: Mapping[str, str] | None = None,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        # Resolve every connection now: a missing setting fails at start, not on the first message.
        self.settings: dict[str, StorageSettings] = {}
        for fn in functions:
            if fn.connection not in self.settings:
                try:
                    self.settings[fn.connection] = StorageSettings.from_env(env, prefix=fn.connection)
                except ConfigurationError as exc:
                    raise RunnerError(f"function {fn.name}: connection {fn.connection!r}: {exc}") from None
        self._credential_arg = credential
        self._credential: AsyncTokenCredential | None = None
        self._owns_credential = False
        self.services: dict[str, QueueServiceClient] = {}

    def open(self) -> dict[str, QueueServiceClient]:
        """A queue service client per connection (by name); `close()` closes those made so far."""
        for conn, storage in self.settings.items():
            try:
                self.services[conn] = self._service_client(storage)
            except ValueError as exc:  # a malformed connection string or URL
                raise RunnerError(f"connection {conn!r}: {exc}") from None
        return self.services

    async def close(self) -> None:
        for service in self.services.values():
            await service.close()
        if self._credential is not None and self._owns_credential:
            await self._credential.close()

    def _credential_for_identity(self) -> AsyncTokenCredential:
        if self._credential is None:
            if self._credential_arg is None:
                self._credential, self._owns_credential = default_credential(), True
            else:
                self._credential = self._credential_arg
        return self._credential

    def _service_client(self, storage: StorageSettings) -> QueueServiceClient:
        if storage.connection_string:  # Azurite only
            # Loopback needs no proxy or netrc; with env settings on, aiohttp looks both up in a
            # thread for every request.
            return QueueServiceClient.from_connection_string(
                storage.connection_string, use_env_settings=False, logger=HOST_HTTP_LOG
            )
        assert storage.queue_url
        return QueueServiceClient(storage.queue_url, credential=self._credential_for_identity(), logger=HOST_HTTP_LOG)
