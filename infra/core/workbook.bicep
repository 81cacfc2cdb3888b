// An Azure Monitor workbook over the app's telemetry: jobs by state, throughput, tokens, cost,
// errors by code, 429s, model latency and queue delay. Its queries (workbook.json) read the
// metrics (customMetrics) and spans (dependencies) that processing/adapters/telemetry.py emits;
// tests/infra/test_workbook.py checks that every name they use is one the code emits.
// Azure portal: the Application Insights resource, Workbooks, "Rowsmith jobs".

param appInsightsName string

param location string

param tags object

@description('Name shown in the portal.')
param displayName string = 'Rowsmith jobs'

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID: derived from the component, so `azd up` updates this one.
  name: guid(appInsights.id, 'rowsmith-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: appInsights.id
    serializedData: loadTextContent('workbook.json')
  }
}

output id string = workbook.id
output name string = workbook.name
