// The Flex Consumption plan and the Function App (Linux, Python 3.13). The app has a
// system-assigned identity and no secret: every connection in its app settings is
// identity-based, and the deployment package is read with the same identity.

param name string

param planName string

param location string

param tags object

@description('azd service name from azure.yaml; the azd-service-name tag lets azd find the app.')
param serviceName string

param storageAccountName string

param deploymentContainerName string

param appInsightsName string

param openAiEndpoint string

param openAiDeploymentName string

param openAiApiVersion string

@description('Requests and tokens per minute one instance may send (the deployment\'s quota: see README, Performance and scaling).')
param openAiRequestsPerMinute int

param openAiTokensPerMinute int

@description('Upper bound on on-demand instances of each per-function scale group (1 to 1000).')
param maximumInstanceCount int

param instanceMemoryMB int

@description('Resource id of the Log Analytics workspace that receives the FunctionAppLogs.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2026-09-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2025-03-01' = {
  // checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy is offered only in some regions; after an instance loss its queue messages reappear and another instance takes them.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2025-03-01' = {
  // checkov:skip=CKV_AZURE_222:azd deploys over the public SCM endpoint with an Entra token; the app itself has no HTTP functions to expose.
  // checkov:skip=CKV_AZURE_17:No HTTP functions, so no caller could present a client certificate; the app only pulls from queues.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales to zero and adds instances per queue length; a fixed minimum would bill idle time.
  // checkov:skip=CKV_AZURE_213:No HTTP endpoint to probe; the platform scales and restarts queue-driven instances itself.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Every setting the app and the host read in Azure. tests/infra compares these
      // names with processing/settings.py SETTINGS_REFERENCE and a list of platform settings.
      appSettings: [
        // Identity-based host and trigger connection: service URIs only, no key.
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        // The connection string only addresses the resource: with local auth off,
        // ingestion also needs an Entra token from the app's identity.
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD'
        }
        // The Python worker joins the host's OpenTelemetry traces (host.json telemetryMode), so
        // the app's spans (processing/adapters/telemetry.py) are children of each invocation's.
        {
          name: 'PYTHON_ENABLE_OPENTELEMETRY'
          value: 'true'
        }
        {
          name: 'AZURE_OPENAI_ENDPOINT'
          value: openAiEndpoint
        }
        {
          name: 'AZURE_OPENAI_DEPLOYMENT'
          value: openAiDeploymentName
        }
        {
          name: 'AZURE_OPENAI_API_VERSION'
          value: openAiApiVersion
        }
        // One instance never sends more than the whole quota; several instances share it
        // through the 429s and retry-after pauses their limiters react to.
        {
          name: 'AZURE_OPENAI_RPM'
          value: string(openAiRequestsPerMinute)
        }
        {
          name: 'AZURE_OPENAI_TPM'
          value: string(openAiTokensPerMinute)
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
  }
}

// Publishing with a user name and password (FTP, and basic auth on the SCM site) is a
// second credential; azd deploys with an Entra token, so both are switched off.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

// The host's and the app's log records (FunctionAppLogs table). Application Insights
// receives the same records as traces; this copy sits beside the storage and Azure OpenAI
// logs in one workspace, for one query across the whole pipeline.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: app
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

output name string = app.name
output principalId string = app.identity.principalId
