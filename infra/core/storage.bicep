// The one storage account: the app's containers and queues, the Functions host's own
// storage, and the deployment package. Shared keys are off, so every caller (the app,
// the host, Event Grid, the CLI) authenticates with Entra ID and an RBAC role.

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

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
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

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
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

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for container in containers: {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in queues: {
    parent: queueService
    name: queue
  }
]

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
