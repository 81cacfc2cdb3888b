"""Credentials: the managed identity in Azure, the developer's own login locally.

One credential object per process: it caches tokens (they last about an hour) and
refreshes them before they expire, so the identity endpoint sees a handful of requests
per hour, not one per row.
"""

from __future__ import annotations

import logging

from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.identity import DefaultAzureCredential as SyncDefaultAzureCredential
from azure.identity import ManagedIdentityCredential as SyncManagedIdentityCredential
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from processing.core.settings import Settings

log = logging.getLogger(__name__)


def make_credential(settings: Settings) -> AsyncTokenCredential:
    if settings.managed_identity:
        # System-assigned unless AZURE_CLIENT_ID names a user-assigned identity.
        if settings.client_id:
            return ManagedIdentityCredential(client_id=settings.client_id)
        return ManagedIdentityCredential()
    # A developer's machine: az login / azd auth login / VS Code. The managed-identity probe
    # is skipped because it only wastes seconds off Azure.
    return DefaultAzureCredential(exclude_managed_identity_credential=True)


def make_sync_credential(*, managed_identity: bool, client_id: str | None) -> TokenCredential:
    """The same choice as `make_credential`, for code that calls from threads rather than the event
    loop: the Azure Monitor exporters send telemetry (with an Entra token, as Application Insights
    has local auth off) from their own export threads, so they take a synchronous credential."""
    if managed_identity:
        return SyncManagedIdentityCredential(client_id=client_id) if client_id else SyncManagedIdentityCredential()
    return SyncDefaultAzureCredential(exclude_managed_identity_credential=True)
