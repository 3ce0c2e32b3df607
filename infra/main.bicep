// The control plane's Azure resources: one resource group holding the Function App (Flex Consumption, Python
// 3.11) and what it reads and writes, reached with one user-assigned identity; plus, when an Azure ML workspace
// is named, an Event Grid system topic on it, and one on each further workspace of azureMlEnvironments. What
// needs the deployed function's keys (the topics' subscriptions, the alerts action group) and the roles on the
// workspaces and the registry are created by infra/hooks/postdeploy.*.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; also tags every resource.')
param environmentName string

@minLength(1)
@description('Region for every resource.')
param location string

@description('Name of the telemetry event hub scoring scripts send to.')
param telemetryEventHubName string = 'telemetry'

@description('Consumer group the on_telemetry function reads with.')
param telemetryConsumerGroup string = 'controlplane'

@description('Principal (object) id allowed to send telemetry, for example a scoring deployment\'s managed identity; empty for none.')
param telemetryProducerPrincipalId string = ''

@allowed(['ServicePrincipal', 'User', 'Group'])
@description('Kind of principal telemetryProducerPrincipalId is.')
param telemetryProducerPrincipalType string = 'ServicePrincipal'

@description('Event Hubs Capture of the telemetry hub into an ADLS Gen2 account, which Azure ML jobs read in full (AZURE_TELEMETRY_CAPTURE; false: no account, no capture).')
param telemetryCapture bool = true

@secure()
@description('HMAC key for approval links (AZURE_APPROVAL_SIGNING_KEY). Empty: a key is generated on the first provision and kept by later ones.')
param approvalSigningKey string = ''

@secure()
// checkov:skip=CKV_AZURE_131: not a hardcoded value: newGuid() draws a new random key for every deployment
@description('A fresh random key on every deployment; stored only when no key exists yet and none is passed.')
param generatedSigningKey string = '${newGuid()}${newGuid()}'

@description('Key Vault of an earlier provision of this environment (azd keeps its AZURE_KEY_VAULT_NAME output). Set, it means the signing key already exists and is left as it is.')
param provisionedKeyVaultName string = ''

@description('Microsoft Teams workflow webhook URL for review and promotion notifications (optional).')
param teamsWebhookUrl string = ''

@description('Slack incoming webhook URL (optional).')
param slackWebhookUrl string = ''

@description('Generic webhook URL receiving signed notifications (optional).')
param webhookUrl string = ''

@secure()
@description('Secret signing the generic webhook bodies (required with webhookUrl).')
param webhookSecret string = ''

@description('Entra app registration (audience) whose ActionGroupsSecureWebhook role secure-webhook action groups carry; empty: function key only.')
param alertsAuthAudience string = ''

@description('E-mail address of the platform team, receiving the control plane\'s own health alerts (infra/app/monitoring.bicep); empty: the action group has no receivers yet.')
param opsEmail string = ''

@description('Create an Event Grid topic that receives every decision as a CloudEvent.')
param publishDecisions bool = false

@description('Resource group of the existing Azure ML workspace the control plane acts on (same subscription); empty means the control plane\'s own resource group.')
param azureMlResourceGroup string = ''

@description('Name of that Azure ML workspace; empty keeps dispatch in dry-run mode.')
param azureMlWorkspace string = ''

@description('Region of that workspace (its Event Grid system topic must be there, AZURE_ML_LOCATION); empty: location.')
param azureMlLocation string = ''

@description('Further Azure ML workspaces (MLOps v2: dev, staging, ...; the one above is production), each {name, workspace, resourceGroup (empty: that of the workspace above), location (empty: its region)}; AZURE_ML_ENVIRONMENTS as JSON.')
param azureMlEnvironments array = []

@description('Azure ML registry the environments share models through (AZURE_ML_REGISTRY); empty for none.')
param azureMlRegistry string = ''

@description('Resource group of that registry (same subscription); empty: that of the workspace above.')
param azureMlRegistryResourceGroup string = ''

var tags = { 'azd-env-name': environmentName }
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var useAzureMl = !empty(azureMlWorkspace)
var mlResourceGroup = empty(azureMlResourceGroup) ? rg.name : azureMlResourceGroup
// An empty value (AZURE_ML_LOCATION unset, or passed empty by another tool) means the deployment's region.
var mlLocation = empty(azureMlLocation) ? location : azureMlLocation
// Each further workspace with its defaults filled in; `union` lets an entry leave resourceGroup and location out.
var mlEnvironmentsGiven = [for environment in azureMlEnvironments: union({ resourceGroup: '', location: '' }, environment)]
var mlEnvironments = [for environment in mlEnvironmentsGiven: {
  name: environment.name
  topicName: 'evgst-aml-${environment.name}-${resourceToken}'
  location: empty(environment.location) ? mlLocation : environment.location
  workspaceId: resourceId(subscription().subscriptionId,
    empty(environment.resourceGroup) ? mlResourceGroup : environment.resourceGroup,
    'Microsoft.MachineLearningServices/workspaces', environment.workspace)
}]
var mlEnvironmentNames = [for environment in mlEnvironments: environment.name]
var mlEnvironmentTopicNames = [for environment in mlEnvironments: environment.topicName]
var mlEnvironmentWorkspaceIds = [for environment in mlEnvironments: environment.workspaceId]
var mlRegistryId = empty(azureMlRegistry) ? '' : resourceId(subscription().subscriptionId,
  empty(azureMlRegistryResourceGroup) ? mlResourceGroup : azureMlRegistryResourceGroup,
  'Microsoft.MachineLearningServices/registries', azureMlRegistry)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module app 'app/controlplane.bicep' = {
  name: 'controlplane'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    telemetryEventHubName: telemetryEventHubName
    telemetryConsumerGroup: telemetryConsumerGroup
    approvalSigningKey: empty(approvalSigningKey) ? generatedSigningKey : approvalSigningKey
    writeSigningKey: !empty(approvalSigningKey) || empty(provisionedKeyVaultName)
    teamsWebhookUrl: teamsWebhookUrl
    slackWebhookUrl: slackWebhookUrl
    webhookUrl: webhookUrl
    webhookSecret: webhookSecret
    alertsAuthAudience: alertsAuthAudience
    publishDecisions: publishDecisions
    azureMlResourceGroup: useAzureMl ? mlResourceGroup : ''
    azureMlWorkspace: azureMlWorkspace
    telemetryProducerPrincipalId: telemetryProducerPrincipalId
    telemetryProducerPrincipalType: telemetryProducerPrincipalType
    telemetryCapture: telemetryCapture
  }
}

// The control plane's own health: alerts to the platform team (never to /api/alerts) and a workbook.
module monitoring 'app/monitoring.bicep' = {
  name: 'controlplane-monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    insightsName: app.outputs.insightsName
    opsEmail: opsEmail
  }
}

// Nothing is deployed into the workspaces' or the registry's resource groups, so `azd down` never offers to
// delete them: the identity's AzureML Data Scientist role on each workspace and its AzureML Registry User role on
// the registry are assigned by the postdeploy hook.
var mlWorkspaceId = resourceId(subscription().subscriptionId, mlResourceGroup,
  'Microsoft.MachineLearningServices/workspaces', azureMlWorkspace)

module registryEvents 'app/registry-events.bicep' = if (useAzureMl) {
  name: 'registry-events'
  scope: rg
  params: {
    location: mlLocation
    tags: tags
    resourceToken: resourceToken
    workspaceId: mlWorkspaceId
    storageAccountName: app.outputs.storageAccountName
    deadLetterContainerName: app.outputs.deadLetterContainerName
  }
}

// One system topic per further workspace, named after its environment, with the same dead-lettering; the hook
// gives each the same subscriptions as the one above.
module environmentEvents 'app/registry-events.bicep' = [for environment in mlEnvironments: {
  name: 'registry-events-${environment.name}'
  scope: rg
  params: {
    name: environment.topicName
    location: environment.location
    tags: tags
    resourceToken: resourceToken
    workspaceId: environment.workspaceId
    storageAccountName: app.outputs.storageAccountName
    deadLetterContainerName: app.outputs.deadLetterContainerName
  }
}]

// azd saves these in the environment; the postdeploy hooks and docs/deploy.md use them.
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_FUNCTION_APP_HOSTNAME string = app.outputs.functionAppHostName
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_STORAGE_ACCOUNT_ID string = app.outputs.storageAccountId
output AZURE_EVENTGRID_DEADLETTER_CONTAINER string = app.outputs.deadLetterContainerName
output AZURE_ML_SYSTEM_TOPIC_NAME string = useAzureMl ? registryEvents!.outputs.name : ''
output AZURE_ML_WORKSPACE_ID string = useAzureMl ? mlWorkspaceId : ''
// Space-separated, in the order of azureMlEnvironments, so that the POSIX hook can loop over them without a
// JSON parser (names and resource ids hold no spaces).
output AZURE_ML_ENVIRONMENT_NAMES string = join(mlEnvironmentNames, ' ')
output AZURE_ML_ENVIRONMENT_TOPIC_NAMES string = join(mlEnvironmentTopicNames, ' ')
output AZURE_ML_ENVIRONMENT_WORKSPACE_IDS string = join(mlEnvironmentWorkspaceIds, ' ')
output AZURE_ML_REGISTRY_ID string = mlRegistryId
output AZURE_CONTROLPLANE_PRINCIPAL_ID string = app.outputs.identityPrincipalId
output AZURE_ACTION_GROUP_NAME string = 'ag-cp-${resourceToken}'
output AZURE_KEY_VAULT_NAME string = app.outputs.keyVaultName
output AZURE_LOG_ANALYTICS_WORKSPACE_ID string = app.outputs.logAnalyticsWorkspaceId
output AZURE_OPS_ACTION_GROUP_NAME string = monitoring.outputs.actionGroupName
// Event Hubs Capture of the telemetry hub (empty when telemetryCapture is false): the hook creates the Azure ML
// datastore `telemetry_capture` on this container; the path is the hub's captured files for ADLS Gen2 clients.
output AZURE_TELEMETRY_CAPTURE_ACCOUNT string = app.outputs.captureAccountName
output AZURE_TELEMETRY_CAPTURE_ACCOUNT_ID string = app.outputs.captureAccountId
output AZURE_TELEMETRY_CAPTURE_CONTAINER string = app.outputs.captureContainerName
output AZURE_TELEMETRY_CAPTURE_PATH string = app.outputs.capturePath
