// The Azure OpenAI account and its model deployment. Keys are disabled: only Entra
// tokens are accepted, so a caller needs Cognitive Services OpenAI User on this account.

@description('Account name; also its custom subdomain, which token authentication requires.')
param name string

param location string

param tags object

param deploymentName string

param modelName string

param modelVersion string

@description('GlobalStandard or Standard (also DataZoneStandard where offered).')
param skuName string

@description('Thousands of tokens per minute.')
param capacity int

@description('Resource id of the Log Analytics workspace that receives the account\'s audit and request logs.')
param logAnalyticsWorkspaceId string

resource account 'Microsoft.CognitiveServices/accounts@2026-09-01' = {
  // checkov:skip=CKV_AZURE_134:The Function App calls the public endpoint (no VNet here); keys are disabled, so every call needs an Entra token and the OpenAI User role.
  // checkov:skip=CKV_AZURE_238:The account calls no other resource, so it needs no identity of its own; callers use theirs.
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource modelDeployment 'Microsoft.CognitiveServices/accounts/deployments@2026-09-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    versionUpgradeOption: 'OnceNewDefaultVersionAvailable'
  }
}

// Audit: control-plane and key/identity events. RequestResponse: one record per inference
// call (caller, deployment, status, duration; not the prompt or the answer).
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'Audit'
        enabled: true
      }
      {
        category: 'RequestResponse'
        enabled: true
      }
    ]
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
output deploymentName string = modelDeployment.name
