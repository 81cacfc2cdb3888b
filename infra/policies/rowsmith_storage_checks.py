"""Storage account policies: no shared keys, no anonymous blobs, TLS 1.2 or later, blob versions kept."""

from __future__ import annotations

from checkov.common.models.enums import CheckCategories
from rowsmith_policy_base import LiteralPropertyCheck

STORAGE = "Microsoft.Storage/storageAccounts"
BLOB_SERVICE = "Microsoft.Storage/storageAccounts/blobServices"

# The API default is true: an account that omits the property still accepts account keys
# and SAS tokens signed with them. checkov has no built-in check for this.
shared_key_disabled = LiteralPropertyCheck(
    "CKV_ROWSMITH_1",
    STORAGE,
    "allowSharedKeyAccess",
    (False,),
    "Storage accounts disable shared key access",
    category=CheckCategories.IAM,
)
blob_public_access_disabled = LiteralPropertyCheck(
    "CKV_ROWSMITH_2", STORAGE, "allowBlobPublicAccess", (False,), "Storage accounts disallow anonymous blob access"
)
minimum_tls_12 = LiteralPropertyCheck(
    "CKV_ROWSMITH_3",
    STORAGE,
    "minimumTlsVersion",
    ("TLS1_2", "TLS1_3"),
    "Storage accounts require TLS 1.2 or later",
    category=CheckCategories.ENCRYPTION,
)
# Versioning keeps the previous content of every overwritten or deleted blob. It is a
# setting of the account's blob service, so it covers every container at once.
blob_versioning_enabled = LiteralPropertyCheck(
    "CKV_ROWSMITH_12",
    BLOB_SERVICE,
    "isVersioningEnabled",
    (True,),
    "Blob services keep previous versions of blobs",
    category=CheckCategories.BACKUP_AND_RECOVERY,
)
