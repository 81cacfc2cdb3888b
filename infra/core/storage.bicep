// The one storage account: the app's containers and queues, the Functions host's own
// storage, the deployment package and Event Grid's dead letters. Shared keys are off, so
// every caller (the app, the host, Event Grid, the CLI) authenticates with Entra ID and
// an RBAC role scoped to the container or queue it uses (core/rbac.bicep).

@description('Storage account name (3-24 lowercase letters and digits).')
param name string

param location string

param tags object

@description('Blob containers to create.')
param containers array

@description('Queues to create.')
param queues array

@description('Days a deleted blob or container can be restored.')
param softDeleteDays int = 7

@minValue(1)
@description('Days a previous blob version is kept before lifecycle management deletes it.')
param blobVersionRetentionDays int = 7

@description('Resource id of the Log Analytics workspace that receives the blob and queue logs.')
param logAnalyticsWorkspaceId string

resource account 'Microsoft.Storage/storageAccounts@2026-09-01' = {
  // checkov:skip=CKV_AZURE_35:The Flex Consumption app has no VNet integration here, so it reaches the account over the public endpoint; every request still needs an Entra token and a data role (docs/security.md, network).
  // checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the endpoint is public, but anonymous and shared-key access are off.
  // checkov:skip=CKV_AZURE_206:Locally redundant on purpose (cheapest); inputs stay with the user and a job can be rerun by uploading again. Use ZRS/GRS where that matters.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    isSftpEnabled: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Versioning is a setting of the account's blob service, so it covers every container
// (input and output, but also jobs, the host's containers and the deployment package).
// Append Block does not create versions, so the results shards add none; overwrites and
// deletes do. The lifecycle rule below bounds what the versions cost.
resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2026-09-01' = {
  parent: account
  name: 'default'
  properties: {
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

// Previous versions (of an overwritten or deleted blob) are deleted after
// blobVersionRetentionDays. Lifecycle management runs about once a day.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2026-09-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'delete-previous-versions'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
                'appendBlob'
              ]
            }
            actions: {
              version: {
                delete: {
                  daysAfterCreationGreaterThan: blobVersionRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    blobService
  ]
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' = [
  for container in containers: {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2026-09-01' = {
  parent: account
  name: 'default'
}

resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2026-09-01' = [
  for queue in queues: {
    parent: queueService
    name: queue
  }
]

// Every data-plane read, write and delete on blobs and queues, with the caller's identity,
// to Log Analytics (table StorageBlobLogs / StorageQueueLogs). docs/costs.md has the cost.
resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
