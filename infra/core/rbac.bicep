// Every role assignment of the deployment, and nothing else. Each one is scoped to the
// narrowest resource it is for (a container, a queue, the Azure OpenAI account, the
// Application Insights component) and named guid(scope, principal, role), so re-running
// `azd up` finds the same assignment instead of failing or duplicating it. No identity
// gets Owner, Contributor or any role that can list keys. docs/deploy.md lists each one
// and docs/security.md says why each remaining scope is as wide as it is.

param storageAccountName string

param openAiAccountName string

param appInsightsName string

@description('Containers the app reads and writes (input, output, jobs).')
param appContainers array

@description('Containers the Functions host keeps its own state in (locks, host keys).')
param hostContainers array

@description('Container Flex Consumption reads the deployment package from.')
param deploymentContainer string

@description('Queues the app\'s triggers read and the app sends to, with their -poison queues.')
param appQueues array

@description('Queue Event Grid delivers BlobCreated events to.')
param uploadsQueue string

@description('Container Event Grid writes undeliverable events to.')
param deadLetterContainer string

@description('Object id of the Function App\'s system-assigned identity.')
param functionAppPrincipalId string

@description('Object id of the Event Grid system topic\'s system-assigned identity.')
param eventGridPrincipalId string

@description('Object id of the deploying principal; empty skips its assignments.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Type of the deploying principal (azd sets AZURE_PRINCIPAL_TYPE: User, or ServicePrincipal in a pipeline).')
param userPrincipalType string = 'User'

// Built-in role definition ids (the same in every Azure cloud).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a' // Storage Queue Data Message Sender
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
var cognitiveServicesOpenAIUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd' // Cognitive Services OpenAI User
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher

// ---- Scopes ----

resource storage 'Microsoft.Storage/storageAccounts@2026-09-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2026-09-01' existing = {
  parent: storage
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2026-09-01' existing = {
  parent: storage
  name: 'default'
}

resource appContainerScopes 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' existing = [
  for container in appContainers: {
    parent: blobService
    name: container
  }
]

resource hostContainerScopes 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' existing = [
  for container in hostContainers: {
    parent: blobService
    name: container
  }
]

resource deploymentContainerScope 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' existing = {
  parent: blobService
  name: deploymentContainer
}

resource deadLetterContainerScope 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' existing = {
  parent: blobService
  name: deadLetterContainer
}

resource appQueueScopes 'Microsoft.Storage/storageAccounts/queueServices/queues@2026-09-01' existing = [
  for queue in appQueues: {
    parent: queueService
    name: queue
  }
]

resource uploadsQueueScope 'Microsoft.Storage/storageAccounts/queueServices/queues@2026-09-01' existing = {
  parent: queueService
  name: uploadsQueue
}

resource openAi 'Microsoft.CognitiveServices/accounts@2026-09-01' existing = {
  name: openAiAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// ---- The Function App's identity ----

// Storage Blob Data Contributor: the app reads uploads (and leases them while it ingests),
// writes jobs and results; one assignment per container, nothing else in the account.
resource appBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (container, i) in appContainers: {
    name: guid(appContainerScopes[i].id, functionAppPrincipalId, storageBlobDataContributor)
    scope: appContainerScopes[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
      principalId: functionAppPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

// Storage Blob Data Owner: the Functions host's own containers (azure-webjobs-hosts for
// its locks and host id, azure-webjobs-secrets for its key store), the role Functions
// documents for host storage. The containers are created by the Bicep, so the host never
// needs the right to create one elsewhere in the account.
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (container, i) in hostContainers: {
    name: guid(hostContainerScopes[i].id, functionAppPrincipalId, storageBlobDataOwner)
    scope: hostContainerScopes[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
      principalId: functionAppPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

// Storage Blob Data Contributor: Flex Consumption writes the deployment package into this
// container with the app's identity (azd deploy) and reads it when an instance starts.
resource deploymentBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deploymentContainerScope.id, functionAppPrincipalId, storageBlobDataContributor)
  scope: deploymentContainerScope
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor: the queue triggers read, hide and delete messages, the
// app sends rows and finalize checks, the host moves failed messages to -poison queues and
// the scale controller reads each queue's length; one assignment per queue.
resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (queue, i) in appQueues: {
    name: guid(appQueueScopes[i].id, functionAppPrincipalId, storageQueueDataContributor)
    scope: appQueueScopes[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
      principalId: functionAppPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

// Storage Table Data Contributor: the Functions host writes its diagnostic events to a
// table it names by month (AzureFunctionsDiagnosticEvents<yyyymm>), so no table exists
// to scope to in advance. The account holds no other table; the app uses none.
resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionAppPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Cognitive Services OpenAI User: call the model deployment (inference only; no keys,
// no deployment management).
resource appOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(openAi.id, functionAppPrincipalId, cognitiveServicesOpenAIUser)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAIUser)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher: send telemetry to Application Insights with an Entra token
// (local auth is off there).
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionAppPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- The Event Grid system topic's identity ----

// Storage Queue Data Message Sender: add BlobCreated events to the uploads queue, and
// nothing else (no other queue; it cannot read or delete messages).
resource eventGridQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(uploadsQueueScope.id, eventGridPrincipalId, storageQueueDataMessageSender)
  scope: uploadsQueueScope
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Contributor: write events it could not deliver to the dead-letter
// container, and no other container.
resource eventGridDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainerScope.id, eventGridPrincipalId, storageBlobDataContributor)
  scope: deadLetterContainerScope
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- The deploying principal (az login / azd auth login, or a pipeline's service principal) ----

// Storage Blob Data Contributor: upload CSVs and read results with the rowsmith CLI, look
// at dead letters, and run the host with `func start` against the deployment (which needs
// the host's containers too): account-wide on purpose, see docs/security.md.
resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Storage Queue Data Contributor: inspect queues and poison queues, and run the queue
// triggers locally with `func start`.
resource userQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Cognitive Services OpenAI User: call the model from a local run.
resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(openAi.id, userPrincipalId, cognitiveServicesOpenAIUser)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAIUser)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
