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
@description('Region of every resource. It must offer Flex Consumption and the model deployment below.')
param location string

@description('Object id of the deploying user (azd sets AZURE_PRINCIPAL_ID). Empty skips the user role assignments.')
param principalId string = ''

@description('Model to deploy on the Azure OpenAI account.')
param openAiModelName string = 'gpt-4o-mini'

@description('Version of that model.')
param openAiModelVersion string = '2024-07-18'

@description('Deployment SKU: GlobalStandard routes to any region with capacity; Standard stays in the region.')
param openAiDeploymentSku string = 'GlobalStandard'

@minValue(1)
@description('Deployment capacity in units of 1,000 tokens per minute (quota is per subscription and region).')
param openAiDeploymentCapacity int = 30

@description('Name of the model deployment (empty: the model name). The app sends rows to it unless a pipeline names another.')
param openAiDeploymentName string = ''

@description('Azure OpenAI data-plane API version the app calls.')
param openAiApiVersion string = '2024-10-21'

@minValue(40)
@maxValue(1000)
@description('Upper bound on Flex Consumption instances (also bounds the load sent to the model).')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

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

// Must equal the service's name in azure.yaml: azd finds the app by this tag.
var serviceName = 'rowsmith'

var modelDeploymentName = empty(openAiDeploymentName) ? openAiModelName : openAiDeploymentName

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
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
    containers: concat(appContainers, [
      deploymentContainer
    ])
    queues: appQueues
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
    // Capacity is in units of 1,000 tokens per minute, with 6 requests per minute per unit
    // for the chat models this template deploys.
    openAiRequestsPerMinute: openAiDeploymentCapacity * 6
    openAiTokensPerMinute: openAiDeploymentCapacity * 1000
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
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
  }
}

// Created after rbac: the topic's identity must be allowed to send to the queue before
// Event Grid delivers the first event with it.
module blobCreated 'app/eventsubscription.bicep' = {
  name: 'eventsubscription'
  scope: rg
  params: {
    systemTopicName: eventGrid.outputs.name
    storageAccountName: storage.outputs.name
    inputContainerName: inputContainer
    queueName: uploadsQueue
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
