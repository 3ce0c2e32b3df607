// The control plane's Azure resources: one resource group holding the Function App (Flex
// Consumption, Python 3.11) and what it reads and writes, reached with one user-assigned identity.
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

@secure()
@description('HMAC key for approval links, kept in Key Vault. Pass your own to keep links valid across provisions.')
param approvalSigningKey string = '${newGuid()}${newGuid()}'

@description('Microsoft Teams workflow webhook URL for review and promotion notifications (optional).')
param teamsWebhookUrl string = ''

@description('Slack incoming webhook URL (optional).')
param slackWebhookUrl string = ''

@description('Generic webhook URL receiving signed notifications (optional).')
param webhookUrl string = ''

@secure()
@description('Secret signing the generic webhook bodies (required with webhookUrl).')
param webhookSecret string = ''

@description('Create an Event Grid topic that receives every decision as a CloudEvent.')
param publishDecisions bool = false

@description('Resource group of the existing Azure ML workspace the control plane acts on (same subscription).')
param azureMlResourceGroup string = ''

@description('Name of that Azure ML workspace; empty keeps dispatch in dry-run mode.')
param azureMlWorkspace string = ''

var tags = { 'azd-env-name': environmentName }
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))

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
    approvalSigningKey: approvalSigningKey
    teamsWebhookUrl: teamsWebhookUrl
    slackWebhookUrl: slackWebhookUrl
    webhookUrl: webhookUrl
    webhookSecret: webhookSecret
    publishDecisions: publishDecisions
    azureMlResourceGroup: azureMlResourceGroup
    azureMlWorkspace: azureMlWorkspace
  }
}

output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_RESOURCE_GROUP string = rg.name
