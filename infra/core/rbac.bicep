// Every role assignment of the deployment, and nothing else. Each one is scoped to the
// single resource it is for and named guid(scope, principal, role), so re-running
// `azd up` finds the same assignment instead of failing or duplicating it. No identity
// gets Owner, Contributor or any role that can list keys. docs/deploy.md explains each.

param storageAccountName string

param openAiAccountName string

param appInsightsName string

@description('Object id of the Function App\'s system-assigned identity.')
param functionAppPrincipalId string

@description('Object id of the Event Grid system topic\'s system-assigned identity.')
param eventGridPrincipalId string

@description('Object id of the deploying user; empty skips the user\'s assignments.')
param userPrincipalId string = ''

// Built-in role definition ids (the same in every Azure cloud).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a' // Storage Queue Data Message Sender
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
var cognitiveServicesOpenAIUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd' // Cognitive Services OpenAI User
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// ---- The Function App's identity ----

// Storage Blob Data Owner: the host's own blobs (leases, keys) and the deployment package,
// for which Functions asks for this role; the app's input, output and jobs blobs.
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionAppPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor: the queue triggers read and delete messages, the app
// sends rows and finalize checks, and the host moves failed messages to -poison queues.
resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionAppPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: functionAppPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: the Functions host writes its diagnostic events to tables.
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
// nothing else (it cannot read or delete messages).
resource eventGridQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, eventGridPrincipalId, storageQueueDataMessageSender)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- The deploying user (az login / azd auth login) ----

// Storage Blob Data Contributor: upload CSVs and read results with the rowsmith CLI or
// `func start` against the deployment.
resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: userPrincipalId
    principalType: 'User'
  }
}

// Storage Queue Data Contributor: submit and inspect queue messages from the CLI, and run
// the queue triggers locally with `func start`.
resource userQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: userPrincipalId
    principalType: 'User'
  }
}

// Cognitive Services OpenAI User: call the model from a local run.
resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(openAi.id, userPrincipalId, cognitiveServicesOpenAIUser)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAIUser)
    principalId: userPrincipalId
    principalType: 'User'
  }
}
