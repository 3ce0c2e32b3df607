// Event Grid system topic on one Azure ML workspace, kept in the control plane's resource group (main.bicep
// deploys it once for the home workspace and once per further environment's workspace).
// Its subscriptions to the on_registry_event function need the function's Event Grid extension key, which
// exists only once the code is deployed: infra/hooks/postdeploy.sh / .ps1 create them (one per file in
// infra/hooks/event-subscriptions/), each with its filter, a retry policy and dead-lettering into the
// container below through the topic's own identity (the account takes no shared keys).
param location string
param tags object
param resourceToken string
@description('The topic\'s name, distinct for every workspace: Azure allows one system topic per source.')
param name string = 'evgst-aml-${resourceToken}'
param workspaceId string
param storageAccountName string
param deadLetterContainerName string

// Write dead-lettered events; scoped to the dead-letter container only.
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location // a system topic lives in its source's region
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    source: workspaceId
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
  resource blobs 'blobServices' existing = {
    name: 'default'
    resource deadLetters 'containers' existing = {
      name: deadLetterContainerName
    }
  }
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage::blobs::deadLetters.id, topic.id, storageBlobDataContributor)
  scope: storage::blobs::deadLetters
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

output name string = topic.name
