"""Storage account policies: no shared keys, no anonymous blobs, TLS 1.2 or later."""

from __future__ import annotations

from checkov.common.models.enums import CheckCategories
from rowsmith_policy_base import LiteralPropertyCheck

STORAGE = ("Microsoft.Storage/storageAccounts",)

# The API default is true: an account that omits the property still accepts account keys
# and SAS tokens signed with them. checkov has no built-in check for this.
shared_key_disabled = LiteralPropertyCheck(
    check_id="CKV_ROWSMITH_1",
    name="Storage accounts disable shared key access (allowSharedKeyAccess: false)",
    resource_types=STORAGE,
    path=("properties", "allowSharedKeyAccess"),
    allowed=(False,),
    category=CheckCategories.IAM,
)

blob_public_access_disabled = LiteralPropertyCheck(
    check_id="CKV_ROWSMITH_2",
    name="Storage accounts disallow anonymous blob access (allowBlobPublicAccess: false)",
    resource_types=STORAGE,
    path=("properties", "allowBlobPublicAccess"),
    allowed=(False,),
)

minimum_tls_12 = LiteralPropertyCheck(
    check_id="CKV_ROWSMITH_3",
    name="Storage accounts require TLS 1.2 or later (minimumTlsVersion)",
    resource_types=STORAGE,
    path=("properties", "minimumTlsVersion"),
    allowed=("TLS1_2", "TLS1_3"),
    category=CheckCategories.ENCRYPTION,
)

BLOB_SERVICE = ("Microsoft.Storage/storageAccounts/blobServices",)

# Versioning keeps the previous content of every overwritten or deleted blob. It is a
# setting of the account's blob service, so it covers every container at once.
blob_versioning_enabled = LiteralPropertyCheck(
    check_id="CKV_ROWSMITH_12",
    name="Blob services keep previous versions of blobs (isVersioningEnabled: true)",
    resource_types=BLOB_SERVICE,
    path=("properties", "isVersioningEnabled"),
    allowed=(True,),
    category=CheckCategories.BACKUP_AND_RECOVERY,
)
