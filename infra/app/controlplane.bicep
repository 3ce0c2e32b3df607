// Function App on Flex Consumption with identity-only access to storage and Event Hubs.
param location string
param tags object
param resourceToken string
param telemetryEventHubName string
param telemetryConsumerGroup string
@secure()
param approvalSigningKey string
param teamsWebhookUrl string
param slackWebhookUrl string
param webhookUrl string
@secure()
param webhookSecret string
param publishDecisions bool
param azureMlResourceGroup string
param azureMlWorkspace string

var deploymentContainer = 'app-package-${resourceToken}'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-cp-${resourceToken}'
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stcp${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
  resource blobs 'blobServices' = {
    name: 'default'
    resource packages 'containers' = { name: deploymentContainer }
    resource artifacts 'containers' = { name: 'artifacts' }
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-cp-${resourceToken}'
  location: location
  tags: tags
  properties: { retentionInDays: 30, sku: { name: 'PerGB2018' } }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-cp-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id, DisableLocalAuth: true }
}

resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: 'evhns-cp-${resourceToken}'
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard', capacity: 1 }
  properties: { disableLocalAuth: true, minimumTlsVersion: '1.2' }
  resource hub 'eventhubs' = {
    name: telemetryEventHubName
    properties: { partitionCount: 4, messageRetentionInDays: 1 }
    resource group 'consumergroups' = { name: telemetryConsumerGroup }
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-cp-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-cp-${resourceToken}'
  location: location
  tags: union(tags, { 'azd-service-name': 'controlplane' })
  kind: 'functionapp,linux'
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identity.id }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: { minTlsVersion: '1.2' }
    keyVaultReferenceIdentity: identity.id
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-cp-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
  resource signingKey 'secrets' = {
    name: 'approval-signing-key'
    properties: { value: approvalSigningKey, contentType: 'HMAC-SHA256 key for approval links' }
  }
}

resource decisionsTopic 'Microsoft.EventGrid/topics@2024-06-01-preview' = if (publishDecisions) {
  name: 'evgt-cp-${resourceToken}'
  location: location
  tags: tags
  properties: { inputSchema: 'CloudEventSchemaV1_0', disableLocalAuth: true, publicNetworkAccess: 'Enabled' }
}

// Names match local.settings.sample.json and controlplane/settings.py; connections are identity-based.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
    AZURE_CLIENT_ID: identity.properties.clientId
    CONTROLPLANE_STORE: 'tables'
    CONTROLPLANE_POLICY: 'policy.yaml'
    CONTROLPLANE_DISPATCH: empty(azureMlWorkspace) ? 'dry-run' : 'azureml'
    AZUREML_SUBSCRIPTION_ID: subscription().subscriptionId
    AZUREML_RESOURCE_GROUP: azureMlResourceGroup
    AZUREML_WORKSPACE: azureMlWorkspace
    // The online endpoints' diagnostic settings must send AmlOnlineEndpointTrafficLog to this workspace.
    CONTROLPLANE_LOGS_WORKSPACE_ID: logs.properties.customerId
    CONTROLPLANE_ARTIFACTS: '${storage.properties.primaryEndpoints.blob}artifacts'
    CONTROLPLANE_LEASE_SECONDS: '300'
    CONTROLPLANE_TABLE_PREFIX: 'controlplane'
    CONTROLPLANE_PUBLIC_URL: 'https://${functionApp.properties.defaultHostName}'
    APPROVAL_SIGNING_KEY: '@Microsoft.KeyVault(SecretUri=${vault::signingKey.properties.secretUri})'
    NOTIFY_TEAMS_WEBHOOK_URL: teamsWebhookUrl
    NOTIFY_SLACK_WEBHOOK_URL: slackWebhookUrl
    NOTIFY_WEBHOOK_URL: webhookUrl
    NOTIFY_WEBHOOK_SECRET: webhookSecret
    EVENTGRID_TOPIC_ENDPOINT: publishDecisions ? decisionsTopic!.properties.endpoint : ''
    EVENTGRID_TOPIC_KEY: ''
    TelemetryEventHub__fullyQualifiedNamespace: '${eventHubs.name}.servicebus.windows.net'
    TelemetryEventHub__credential: 'managedidentity'
    TelemetryEventHub__clientId: identity.properties.clientId
    TELEMETRY_EVENTHUB_NAME: telemetryEventHubName
    TELEMETRY_CONSUMER_GROUP: telemetryConsumerGroup
  }
  dependsOn: [vaultRole]
}

// Data-plane roles for the identity (built-in role definition ids).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner (host leases, package)
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor (ledger)
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor (host)
  eventHubsDataReceiver: 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde' // Azure Event Hubs Data Receiver (telemetry)
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher (App Insights)
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User (signing key reference)
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender (decisions topic)
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource senderRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (publishDecisions) {
  name: guid(resourceGroup().id, identity.id, roles.eventGridDataSender, 'decisions')
  scope: decisionsTopic
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
  }
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [roles.storageBlobDataOwner, roles.storageTableDataContributor, roles.storageQueueDataContributor]: {
  name: guid(storage.id, identity.id, role)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource receiverRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventHubs.id, identity.id, roles.eventHubsDataReceiver)
  scope: eventHubs
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataReceiver)
  }
}

resource publisherRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

output functionAppName string = functionApp.name
