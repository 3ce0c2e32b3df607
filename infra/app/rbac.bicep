// Data-plane roles in the control plane's resource group: what the user-assigned identity may read and write,
// and who may send telemetry. The Azure ML workspace role is assigned by the postdeploy hook (infra/hooks).
// Assignment names are guid(scope, principal, role), so a provision re-run finds the same assignment.
param identityId string
param principalId string
param storageAccountName string
param logAnalyticsName string
param insightsName string
param eventHubsNamespaceName string
param telemetryEventHubName string
param vaultName string
param publishDecisions bool
param decisionsTopicName string
@description('Principal allowed to send telemetry to the event hub; empty for none.')
param telemetryProducerPrincipalId string
@allowed(['ServicePrincipal', 'User', 'Group'])
param telemetryProducerPrincipalType string = 'ServicePrincipal'

// Built-in role definition ids.
// Storage Blob Data Owner rather than Contributor: the Functions host's identity-based AzureWebJobsStorage
// connection is documented with Owner (host locks and keys, Flex Consumption package container).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner (host storage, package, artifacts)
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor (decision ledger)
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor (host)
var eventHubsDataReceiver = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde' // Azure Event Hubs Data Receiver (on_telemetry)
var eventHubsDataSender = '2b629674-e913-4c01-ae53-ef4638d8f975' // Azure Event Hubs Data Sender (scoring scripts)
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher (App Insights, Entra ID auth)
var monitoringReader = '43d0d8ad-25c7-4714-9337-8ba259a9fe05' // Monitoring Reader (rollout health queries)
var logAnalyticsReader = '73c42c96-874c-492b-b04d-ab87d138a893' // Log Analytics Reader (AmlOnlineEndpointTrafficLog)
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User (signing key reference)
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender (decisions topic)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: insightsName
}

resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubsNamespaceName
  resource hub 'eventhubs' existing = {
    name: telemetryEventHubName
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource decisionsTopic 'Microsoft.EventGrid/topics@2024-06-01-preview' existing = {
  name: decisionsTopicName
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [storageBlobDataOwner, storageTableDataContributor, storageQueueDataContributor]: {
  name: guid(storage.id, identityId, role)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource receiverRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventHubs.id, identityId, eventHubsDataReceiver)
  scope: eventHubs
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiver)
  }
}

// Only the telemetry hub, not the namespace: a producer can send there and nowhere else.
resource producerRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(telemetryProducerPrincipalId)) {
  name: guid(eventHubs::hub.id, telemetryProducerPrincipalId, eventHubsDataSender)
  scope: eventHubs::hub
  properties: {
    principalId: telemetryProducerPrincipalId
    principalType: telemetryProducerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataSender)
  }
}

resource publisherRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identityId, monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

resource logRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [monitoringReader, logAnalyticsReader]: {
  name: guid(logs.id, identityId, role)
  scope: logs
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityId, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource senderRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (publishDecisions) {
  name: guid(resourceGroup().id, identityId, eventGridDataSender, 'decisions')
  scope: decisionsTopic
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
  }
}
