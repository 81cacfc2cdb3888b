// Rowsmith on Azure: what `azd up` provisions. Keyless end to end: the Function App's
// system-assigned identity reaches Storage and Azure OpenAI, Event Grid delivers to a
// storage queue with its own identity, and core/rbac.bicep grants exactly the roles
// each identity needs. docs/deploy.md explains every resource and role.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@metadata({
  azd: {
    type: 'location'
  }
})
@description('Region of every resource. It must offer Flex Consumption and the model deployment below.')
param location string

@description('Object id of the deploying principal (azd sets AZURE_PRINCIPAL_ID, for a user or a service principal). Empty skips its role assignments.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Type of that principal (azd sets AZURE_PRINCIPAL_TYPE: User, or ServicePrincipal when signed in as one).')
param principalType string = 'User'

// The default model: GA, open to new customers, offered as GlobalStandard, and the latest
// retirement date of the Azure OpenAI chat models in Microsoft's model retirement
// schedule when this was chosen (docs/deploy.md, "The model").
@description('Model to deploy on the Azure OpenAI account.')
param openAiModelName string = 'gpt-5.6-luna'

@description('Version of that model.')
param openAiModelVersion string = '2026-07-09'

@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
@description('Deployment SKU: GlobalStandard routes to any region with capacity; DataZoneStandard stays in the data zone; Standard in the region.')
param openAiDeploymentSku string = 'GlobalStandard'

@minValue(1)
@description('Deployment capacity in units of 1,000 tokens per minute (quota is per subscription and model).')
param openAiDeploymentCapacity int = 100

@minValue(0)
@description('Requests per minute the app paces to (AZURE_OPENAI_RPM). 0: capacity x the model\'s requests per 1,000 tokens from the quota table below.')
param openAiRequestsPerMinute int = 0

@description('Name of the model deployment (empty: the model name). The app sends rows to it unless a pipeline names another.')
param openAiDeploymentName string = ''

@description('Azure OpenAI data-plane API version the app calls (processing/core/settings.py says why not the GA 2024-10-21).')
param openAiApiVersion string = '2025-04-01-preview'

@minValue(1)
@maxValue(1000)
@description('Upper bound on on-demand Flex Consumption instances of each function (1 to 1000; also bounds the load sent to the model).')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(1)
@description('Days a previous blob version (an overwritten or deleted blob) is kept.')
param blobVersionRetentionDays int = 7

// The names the code uses (processing/names.py). tests/infra checks both lists against it.
var inputContainer = 'input'
var outputContainer = 'output'
var jobsContainer = 'jobs'
var uploadsQueue = 'uploads'
var rowsQueue = 'rows'
var finalizeQueue = 'finalize'
var appContainers = [
  inputContainer
  outputContainer
  jobsContainer
]
var appQueues = [
  uploadsQueue
  rowsQueue
  finalizeQueue
  'uploads-poison'
  'rows-poison'
  'finalize-poison'
]

// Flex Consumption reads the deployment package from this container (not used by the app).
var deploymentContainer = 'app-package'

// The Functions host's own containers (AzureWebJobsStorage): locks and host id, key store.
// Created here so that the host's role can be scoped to them (core/rbac.bicep).
var hostContainers = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]

// Event Grid writes events it could not deliver to the uploads queue here.
var deadLetterContainer = 'deadletter'

// Must equal the service's name in azure.yaml: azd finds the app by this tag.
var serviceName = 'rowsmith'

var modelDeploymentName = empty(openAiDeploymentName) ? openAiModelName : openAiDeploymentName

// Requests per minute per capacity unit (1,000 tokens per minute) in Microsoft's Azure
// OpenAI quota tables (learn.microsoft.com/azure/foundry/openai/quotas-limits), for the
// GlobalStandard rows; `model@SKU` where another SKU has a different ratio. A model that
// is not listed gets no request pacing (AZURE_OPENAI_RPM 0): the app then relies on 429s,
// or set openAiRequestsPerMinute. docs/deploy.md says how to add one.
var requestsPerCapacityUnit = {
  'gpt-4.1': 1
  'gpt-4.1-mini': 1
  'gpt-4.1-nano': 1
  'gpt-4o-mini': 10
  'gpt-5': 10
  'gpt-5-mini': 1
  'gpt-5-nano': 1
  'gpt-5.1': 10
  'gpt-5.2': 10
  'gpt-5.4': 10
  'gpt-5.4@DataZoneStandard': 1
  'gpt-5.4-mini': 1
  'gpt-5.4-nano': 1
  'gpt-5.5': 1
  'gpt-5.6-luna': 1
  'gpt-5.6-sol': 1
  'gpt-5.6-terra': 1
  o3: 1
  'o4-mini': 1
  'o4-mini@DataZoneStandard': 6
  'model-router': 1
}
var modelSkuKey = '${openAiModelName}@${openAiDeploymentSku}'
var modelRatioKey = contains(requestsPerCapacityUnit, modelSkuKey) ? modelSkuKey : openAiModelName
var modelRequestsPerCapacityUnit = contains(requestsPerCapacityUnit, modelRatioKey) ? requestsPerCapacityUnit[modelRatioKey] : 0
var modelRequestsPerMinute = (openAiRequestsPerMinute > 0) ? openAiRequestsPerMinute : openAiDeploymentCapacity * modelRequestsPerCapacityUnit

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

resource rg 'Microsoft.Resources/resourceGroups@2025-04-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    containers: concat(appContainers, hostContainers, [
      deploymentContainer
      deadLetterContainer
    ])
    queues: appQueues
    blobVersionRetentionDays: blobVersionRetentionDays
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    appInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

// The jobs workbook, on the Application Insights resource (docs/deploy.md, "Watching jobs").
module workbook 'core/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    appInsightsName: monitoring.outputs.appInsightsName
    location: location
    tags: tags
  }
}

module openAi 'core/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentName: modelDeploymentName
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    skuName: openAiDeploymentSku
    capacity: openAiDeploymentCapacity
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module functionApp 'app/functions.bicep' = {
  name: 'functions'
  scope: rg
  params: {
    name: '${abbrs.webSitesFunctions}${resourceToken}'
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: serviceName
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainer
    appInsightsName: monitoring.outputs.appInsightsName
    openAiEndpoint: openAi.outputs.endpoint
    openAiDeploymentName: openAi.outputs.deploymentName
    openAiApiVersion: openAiApiVersion
    // Capacity is in units of 1,000 tokens per minute; requests per minute follow the
    // model's own ratio (requestsPerCapacityUnit above).
    openAiRequestsPerMinute: modelRequestsPerMinute
    openAiTokensPerMinute: openAiDeploymentCapacity * 1000
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module eventGrid 'app/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    name: '${abbrs.eventGridSystemTopics}${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
  }
}

module rbac 'core/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    openAiAccountName: openAi.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    functionAppPrincipalId: functionApp.outputs.principalId
    eventGridPrincipalId: eventGrid.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    appContainers: appContainers
    hostContainers: hostContainers
    deploymentContainer: deploymentContainer
    appQueues: appQueues
    uploadsQueue: uploadsQueue
    deadLetterContainer: deadLetterContainer
  }
}

// Created after rbac: the topic's identity must be allowed to send to the queue (and to
// write dead letters) before Event Grid delivers the first event with it.
module blobCreated 'app/eventsubscription.bicep' = {
  name: 'eventsubscription'
  scope: rg
  params: {
    systemTopicName: eventGrid.outputs.name
    storageAccountName: storage.outputs.name
    inputContainerName: inputContainer
    queueName: uploadsQueue
    deadLetterContainerName: deadLetterContainer
  }
  dependsOn: [
    rbac
  ]
}

// azd writes these into .azure/<env>/.env; infra/scripts/local_settings_from_azd.py turns
// them into local.settings.json. None of them is a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_DEPLOYMENT string = openAi.outputs.deploymentName
output AZURE_OPENAI_API_VERSION string = openAiApiVersion
output AZURE_STORAGE_ACCOUNT string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_INPUT_CONTAINER string = inputContainer
output AZURE_STORAGE_OUTPUT_CONTAINER string = outputContainer
output AZURE_STORAGE_JOBS_CONTAINER string = jobsContainer
output AZURE_STORAGE_UPLOADS_QUEUE string = uploadsQueue
output AZURE_STORAGE_ROWS_QUEUE string = rowsQueue
output AZURE_STORAGE_FINALIZE_QUEUE string = finalizeQueue
output AZURE_STORAGE_DEADLETTER_CONTAINER string = deadLetterContainer
output AZURE_OPENAI_MODEL string = openAiModelName
output AZURE_OPENAI_MODEL_VERSION string = openAiModelVersion
output AZURE_OPENAI_RPM int = modelRequestsPerMinute
output AZURE_OPENAI_TPM int = openAiDeploymentCapacity * 1000
