// Log Analytics and Application Insights. Local (instrumentation-key) auth is off on
// both: the Function App sends telemetry with an Entra token from its identity
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING), authorised by Monitoring Metrics Publisher.
// The workspace also receives the diagnostic settings of storage, Azure OpenAI and the
// Function App (declared next to each of those resources).

param logAnalyticsName string

param appInsightsName string

param location string

param tags object

@description('Days Log Analytics keeps data (30 is included in the price).')
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2026-03-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

output appInsightsName string = appInsights.name
output logAnalyticsName string = logAnalytics.name
output logAnalyticsId string = logAnalytics.id
