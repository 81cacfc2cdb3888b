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

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
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

resource modelDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
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

output name string = account.name
output endpoint string = account.properties.endpoint
output deploymentName string = modelDeployment.name
