// Function App on Flex Consumption with identity-only access to storage and Event Hubs.
param location string
param tags object
param resourceToken string
param telemetryEventHubName string
param telemetryConsumerGroup string
@secure()
param approvalSigningKey string
@description('Write approvalSigningKey to Key Vault: on the first provision, or when a key is passed explicitly.')
param writeSigningKey bool
param teamsWebhookUrl string
param slackWebhookUrl string
param webhookUrl string
@secure()
param webhookSecret string
param alertsAuthAudience string
param publishDecisions bool
param azureMlResourceGroup string
param azureMlWorkspace string
@description('Principal allowed to send telemetry to the event hub (a scoring deployment\'s identity); empty for none.')
param telemetryProducerPrincipalId string
param telemetryProducerPrincipalType string
@description('Capture the telemetry hub as Avro files into an ADLS Gen2 account, for Azure ML jobs that check whole windows.')
param telemetryCapture bool

var deploymentContainer = 'app-package-${resourceToken}'
// Event Grid dead-letters undeliverable Azure ML events here (see infra/hooks/postdeploy.*).
var deadLetterContainer = 'eventgrid-deadletter'
var signingKeySecretName = 'approval-signing-key'
var decisionsTopicName = 'evgt-cp-${resourceToken}'
// Event Hubs Capture writes the telemetry hub here; Azure ML reads it through the `telemetry_capture` datastore
// the postdeploy hook creates.
var captureAccountName = 'stcap${resourceToken}'
var captureContainer = 'telemetry-capture'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor (Event Hubs Capture writes the Avro files)

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-cp-${resourceToken}'
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: no virtual network here: the Functions host, azd and Event Grid dead-lettering reach the account publicly; shared keys are off, so every caller needs an Entra ID role
  // checkov:skip=CKV_AZURE_43: the name is 'stcp' plus the 13-character lowercase resource token (17 characters, valid); checkov cannot evaluate the interpolation
  name: 'stcp${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  // Geo-redundant: the decision ledger (Table storage) is the audit record of every promotion.
  sku: { name: 'Standard_GRS' }
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
    resource deadLetters 'containers' = { name: deadLetterContainer }
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

// The data lake Capture writes to: hierarchical namespace (so Azure ML reads it as ADLS Gen2), Entra ID only.
resource captureStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = if (telemetryCapture) {
  // checkov:skip=CKV_AZURE_35: no virtual network here: Azure ML compute without one reads the captured files publicly; shared keys are off, so every reader needs an Entra ID role
  // checkov:skip=CKV_AZURE_43: the name is 'stcap' plus the 13-character lowercase resource token (18 characters, valid); checkov cannot evaluate the interpolation
  // checkov:skip=CKV_AZURE_44: checkov reads no properties of a conditional resource; minimumTlsVersion is TLS1_2 below
  // checkov:skip=CKV_AZURE_206: checkov reads no properties of a conditional resource; the sku is Standard_GRS below
  name: captureAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  // Geo-redundant: once the hub's one-day retention has passed, the captured files are the only copy.
  sku: { name: 'Standard_GRS' }
  properties: {
    isHnsEnabled: true
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
  resource blobs 'blobServices' = {
    name: 'default'
    resource capture 'containers' = { name: captureContainer }
  }
}

// Capture authenticates with the namespace's own system-assigned identity, which holds nothing but the role
// below: the app's identity never reads the captured files, so it gets no role on the account.
resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: 'evhns-cp-${resourceToken}'
  location: location
  tags: tags
  // Standard: Capture is not available on Basic.
  sku: { name: 'Standard', tier: 'Standard', capacity: 1 }
  identity: { type: 'SystemAssigned' }
  properties: { disableLocalAuth: true, minimumTlsVersion: '1.2' }
  resource hub 'eventhubs' = {
    name: telemetryEventHubName
    properties: {
      partitionCount: 4
      messageRetentionInDays: 1
      // Absent when switched off: the hub is then captured nowhere.
      captureDescription: telemetryCapture ? {
        enabled: true
        encoding: 'Avro'
        intervalInSeconds: 300
        sizeLimitInBytes: 314572800
        skipEmptyArchives: true
        destination: {
          name: 'EventHubArchive.AzureBlockBlob'
          identity: { type: 'SystemAssigned' }
          properties: {
            blobContainer: captureContainer
            storageAccountResourceId: captureStorage.id
            archiveNameFormat: '{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}'
          }
        }
      } : null
    }
    // Capture writes as soon as it is enabled: the namespace's identity must hold its role first.
    dependsOn: [captureWriter]
    resource group 'consumergroups' = { name: telemetryConsumerGroup }
  }
}

// Here rather than in rbac.bicep: the hub depends on this assignment, and the rbac module depends on the hub.
resource captureWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (telemetryCapture) {
  name: guid(captureStorage.id, eventHubs.id, storageBlobDataContributor)
  scope: captureStorage
  properties: {
    principalId: eventHubs.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy exists only in some regions (and wants zone-redundant storage); forcing it would make the template fail elsewhere
  name: 'plan-cp-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid, Azure Monitor action groups and reviewers' browsers call the app from the internet; function keys and signed links guard it
  // checkov:skip=CKV_AZURE_17: callers (Event Grid, action groups, browsers) present no client certificates, and Flex Consumption does not support platform certificate features
  // checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP endpoint; azd deploys the package to the blob container with Entra ID
  // checkov:skip=CKV_AZURE_212: Flex Consumption sizes the app with functionAppConfig.scaleAndConcurrency; siteConfig.numberOfWorkers does not apply
  // checkov:skip=CKV_AZURE_213: Flex Consumption keeps no fixed instance pool for App Service health check to evict from; GET /api/health (anonymous) serves external probes
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
    siteConfig: { minTlsVersion: '1.2', http20Enabled: true }
    keyVaultReferenceIdentity: identity.id
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: the Function App resolves its Key Vault reference over the public endpoint (no virtual network integration); access is Entra ID RBAC only
  // checkov:skip=CKV_AZURE_189: same reason: without a virtual network the app reaches the vault publicly; RBAC authorizes every read
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
}

// Written on the first provision and whenever a key is passed; otherwise the stored key (and every open
// approval link) survives the provision. Rotating = a new secret version (docs/deploy.md).
resource signingKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (writeSigningKey) {
  // checkov:skip=CKV_AZURE_41: an expiry would make Key Vault refuse the reference and stop every approval; the key is rotated by writing a new version instead
  // checkov:skip=CKV_AZURE_114: checkov reads no properties of a conditional resource; contentType is set below
  parent: vault
  name: signingKeySecretName
  properties: { value: approvalSigningKey, contentType: 'HMAC-SHA256 key for approval links' }
}

resource decisionsTopic 'Microsoft.EventGrid/topics@2024-06-01-preview' = if (publishDecisions) {
  // checkov:skip=CKV_AZURE_192: checkov reads no properties of a conditional resource; disableLocalAuth is true below
  // checkov:skip=CKV_AZURE_193: the app publishes from Flex Consumption without a virtual network, so the topic keeps its public endpoint; local auth is off, publishing needs EventGrid Data Sender
  // checkov:skip=CKV_AZURE_191: the topic only receives; subscribers that deliver with a managed identity configure it on their own subscription
  name: decisionsTopicName
  location: location
  tags: tags
  properties: { inputSchema: 'CloudEventSchemaV1_0', disableLocalAuth: true, publicNetworkAccess: 'Enabled' }
}

module rbac 'rbac.bicep' = {
  name: 'controlplane-rbac'
  params: {
    identityId: identity.id
    principalId: identity.properties.principalId
    storageAccountName: storage.name
    logAnalyticsName: logs.name
    insightsName: insights.name
    eventHubsNamespaceName: eventHubs.name
    telemetryEventHubName: eventHubs::hub.name
    vaultName: vault.name
    publishDecisions: publishDecisions
    decisionsTopicName: decisionsTopicName
    telemetryProducerPrincipalId: telemetryProducerPrincipalId
    telemetryProducerPrincipalType: telemetryProducerPrincipalType
  }
  dependsOn: [decisionsTopic]
}

// The captured files of the telemetry hub: Capture names them '{Namespace}/{EventHub}/...'.
var capturePrefix = '${eventHubs.name}/${telemetryEventHubName}/'
var captureDatastorePath = 'azureml://datastores/telemetry_capture/paths/${capturePrefix}'

// The namespace's host name in this cloud: its endpoint is 'https://<namespace>.<Service Bus suffix>:443/'.
var eventHubsHost = split(split(split(eventHubs.properties.serviceBusEndpoint, '://')[1], '/')[0], ':')[0]

// Names match local.settings.sample.json and controlplane/settings.py; connections are identity-based.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads every sites/config resource as the 'web' configuration; this one is 'appsettings', so these do not apply:
  // checkov:skip=CKV_AZURE_13: App Service authentication is a site setting (authsettingsV2), not an app setting; docs/deploy.md shows how to turn it on
  // checkov:skip=CKV_AZURE_63: HTTP logging is a 'web' configuration setting, not an app setting
  // checkov:skip=CKV_AZURE_65: detailed error messages are a 'web' configuration setting, not an app setting
  // checkov:skip=CKV_AZURE_66: failed request tracing is a 'web' configuration setting, not an app setting
  // checkov:skip=CKV_AZURE_80: .NET Framework version does not apply to a Python app, and it is not an app setting
  // checkov:skip=CKV_AZURE_88: Azure Files mounts are not app settings, and Flex Consumption runs from its blob package
  // checkov:skip=CKV_AZURE_222: public network access is a site property (see functionApp), not an app setting
  parent: functionApp
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: storage.name
    // The account's own endpoints, so that nothing derives a public-cloud host name from the account name.
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
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
    CONTROLPLANE_TELEMETRY_EXPORTER: 'azuremonitor'
    CONTROLPLANE_SWEEP_STALE_MINUTES: '10'
    CONTROLPLANE_TABLE_PREFIX: 'controlplane'
    CONTROLPLANE_PUBLIC_URL: 'https://${functionApp.properties.defaultHostName}'
    // Versionless: the app follows the latest version of the secret, so rotation needs no new provision.
    APPROVAL_SIGNING_KEY: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${signingKeySecretName})'
    NOTIFY_TEAMS_WEBHOOK_URL: teamsWebhookUrl
    NOTIFY_SLACK_WEBHOOK_URL: slackWebhookUrl
    NOTIFY_WEBHOOK_URL: webhookUrl
    NOTIFY_WEBHOOK_SECRET: webhookSecret
    EVENTGRID_TOPIC_ENDPOINT: publishDecisions ? decisionsTopic!.properties.endpoint : ''
    EVENTGRID_TOPIC_KEY: ''
    // With an audience, /api/alerts also requires Entra secure-webhook tokens from this tenant.
    ALERTS_AUTH_TENANT_ID: empty(alertsAuthAudience) ? '' : tenant().tenantId
    ALERTS_AUTH_AUDIENCE: alertsAuthAudience
    ALERTS_AUTH_AUTHORITY: environment().authentication.loginEndpoint
    TelemetryEventHub__fullyQualifiedNamespace: eventHubsHost
    TelemetryEventHub__credential: 'managedidentity'
    TelemetryEventHub__clientId: identity.properties.clientId
    TELEMETRY_EVENTHUB_NAME: telemetryEventHubName
    TELEMETRY_CONSUMER_GROUP: telemetryConsumerGroup
    // Where an Azure ML job's input finds the captured Avro files: the hook's `telemetry_capture` datastore,
    // which exists only with a workspace.
    CONTROLPLANE_TELEMETRY_CAPTURE: (telemetryCapture && !empty(azureMlWorkspace)) ? captureDatastorePath : ''
  }
  // The Key Vault reference and the identity-based connections resolve only once the roles exist.
  dependsOn: [rbac, signingKey]
}

output functionAppName string = functionApp.name
output functionAppHostName string = functionApp.properties.defaultHostName
output identityPrincipalId string = identity.properties.principalId
output storageAccountName string = storage.name
output storageAccountId string = storage.id
output deadLetterContainerName string = deadLetterContainer
output logAnalyticsWorkspaceId string = logs.id
output insightsName string = insights.name
output keyVaultName string = vault.name
output captureAccountName string = telemetryCapture ? captureStorage.name : ''
output captureAccountId string = telemetryCapture ? captureStorage.id : ''
output captureContainerName string = telemetryCapture ? captureContainer : ''
// The same files as a URI for Spark and other ADLS Gen2 clients, with this cloud's storage suffix.
output capturePath string = telemetryCapture ? 'abfss://${captureContainer}@${captureAccountName}.dfs.${environment().suffixes.storage}/${capturePrefix}' : ''
