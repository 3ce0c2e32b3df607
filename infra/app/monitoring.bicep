// The control plane's own health: an action group for the platform team, four log search
// alert rules over the metrics the app exports to Application Insights (docs/operations.md names each one and
// says what to do about it), and a workbook with every metric.
//
// These alerts are about the control plane itself, so they go to people, never to the control plane's own
// /api/alerts webhook (the action group infra/hooks/postdeploy.* creates, ag-cp-<token>): a control plane that
// is failing would otherwise be asked to handle the alert about its own failure.
param location string
param tags object
param resourceToken string
@description('The Application Insights component the Function App sends its telemetry to.')
param insightsName string
@description('E-mail address of the platform team receiving the control plane\'s own alerts; empty: the group has no receivers and the alerts show in Azure Monitor only.')
param opsEmail string

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: insightsName
}

resource opsGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-cp-ops-${resourceToken}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'cp-ops'
    enabled: true
    emailReceivers: empty(opsEmail) ? [] : [
      { name: 'platform-team', emailAddress: opsEmail, useCommonAlertSchema: true }
    ]
  }
}

// Each rule is evaluated every five minutes over its window and resolves by itself once the condition clears.
// docs/operations.md describes each one; tests/test_infra_monitoring.py checks the thresholds and windows.
var rules = [
  {
    name: 'dead-letters'
    displayName: 'Control plane: tasks dead-lettered'
    description: 'The dispatcher gave up on outbox tasks (controlplane.dispatch.dead_letters), one alert per operation. Runbook: docs/operations.md#dead-lettered-tasks'
    severity: 2
    windowSize: 'PT15M'
    // New dead letters, not the outbox's count of them: a dead-lettered task stays in the outbox until someone
    // retries or replays it, and an alert on the count would never resolve for a task that is rightly abandoned.
    query: '''
customMetrics
| where name == "controlplane.dispatch.dead_letters"
| project timestamp, operation = tostring(customDimensions.operation), dead_letters = valueSum
'''
    timeAggregation: 'Total'
    metricMeasureColumn: 'dead_letters'
    dimensions: [{ name: 'operation', operator: 'Include', values: ['*'] }]
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    name: 'no-successful-sweep'
    displayName: 'Control plane: no successful sweep'
    description: 'No sweep ended well in 10 minutes (controlplane.sweeps, result ok): the outbox is not drained, rollouts and incidents do not move. Runbook: docs/operations.md#no-successful-sweep'
    severity: 1
    windowSize: 'PT10M' // the sweep runs every minute: ten minutes without a good one means it stopped
    // Counts rows: no row at all (the app stopped, or sweeps only fail) is a count of 0 and fires.
    query: '''
customMetrics
| where name == "controlplane.sweeps" and tostring(customDimensions.result) == "ok"
| project timestamp, sweeps = valueSum
'''
    timeAggregation: 'Count'
    metricMeasureColumn: ''
    dimensions: []
    operator: 'LessThan'
    threshold: 1
  }
  {
    name: 'outbox-oldest-due'
    displayName: 'Control plane: outbox task overdue for 30 minutes'
    description: 'The oldest due outbox task has waited more than 30 minutes (controlplane.outbox.oldest_due_age > 1800 s). Runbook: docs/operations.md#outbox-task-overdue'
    severity: 2
    windowSize: 'PT15M'
    query: '''
customMetrics
| where name == "controlplane.outbox.oldest_due_age"
| project timestamp, oldest_due_age_s = value
'''
    timeAggregation: 'Maximum'
    metricMeasureColumn: 'oldest_due_age_s'
    dimensions: []
    operator: 'GreaterThan'
    threshold: 1800 // seconds
  }
  {
    name: 'function-failures'
    displayName: 'Control plane: function invocations failing'
    description: 'Function invocations failed (Application Insights requests, success false, not a 4xx answer to a caller), one alert per function. Runbook: docs/operations.md#function-failures'
    severity: 2
    windowSize: 'PT15M'
    // A 4xx is the caller's mistake (an invalid event, a missing key), recorded as such; a failure is the app's.
    query: '''
requests
| where success == false and not(resultCode startswith "4")
| project timestamp, operation_Name, resultCode
'''
    timeAggregation: 'Count'
    metricMeasureColumn: ''
    dimensions: [{ name: 'operation_Name', operator: 'Include', values: ['*'] }]
    operator: 'GreaterThan'
    threshold: 0
  }
]

resource alerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: 'alert-cp-${rule.name}-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [insights.id]
    evaluationFrequency: 'PT5M'
    windowSize: rule.windowSize
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: rule.timeAggregation
          metricMeasureColumn: empty(rule.metricMeasureColumn) ? null : rule.metricMeasureColumn
          dimensions: rule.dimensions
          operator: rule.operator
          threshold: rule.threshold
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: [opsGroup.id] }
  }
}]

// Workbooks are named by a GUID. This one belongs to the Application Insights component, whose customMetrics
// its queries read (opened from elsewhere, it falls back to the same component).
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, insights.id, 'controlplane-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Control plane (${resourceToken})'
    category: 'workbook'
    sourceId: insights.id
    serializedData: replace(loadTextContent('workbook.json'), '__APPLICATION_INSIGHTS_ID__', insights.id)
  }
}

output actionGroupName string = opsGroup.name
output workbookId string = workbook.id
