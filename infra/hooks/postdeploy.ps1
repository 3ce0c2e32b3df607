# azd postdeploy hook (PowerShell): connects what needs the deployed function's keys.
#
#  0. Roles for the app's managed identity: AzureML Data Scientist on the home workspace and on every further
#     environment's workspace (AZURE_ML_ENVIRONMENT_WORKSPACE_IDS), AzureML Registry User on the registry
#     (AZURE_ML_REGISTRY_ID). They are assigned here rather than in Bicep so that `azd down` never counts those
#     resource groups as part of this deployment.
#     Telemetry capture (AZURE_TELEMETRY_CAPTURE_ACCOUNT, with a home workspace): the identity-based Azure ML
#     datastore telemetry_capture on the capture container, and Storage Blob Data Reader on the capture account
#     for the workspace's identity and for TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS (the compute clusters'
#     managed identities, which read the files in jobs). The app's identity never reads them: it gets nothing.
#  1. Event Grid: subscribes the on_registry_event function to the system topic of the home workspace and to
#     that of every further environment (AZURE_ML_ENVIRONMENT_TOPIC_NAMES) through the host's
#     eventgrid_extension system key, once per file in infra/hooks/event-subscriptions/ (the file name is the
#     subscription's name; the file is its ARM body, filtered to the events the control plane acts on). Each
#     subscription is created in one ARM call with its filter, a retry policy (30 attempts, 24 hours) and
#     dead-lettering into the eventgrid-deadletter container with the topic's own identity (the account takes
#     no shared keys). postdeploy.sh sends the same files.
#  2. Azure Monitor: an action group whose webhook posts the common alert schema to /api/alerts with the
#     on_alert function key. Point your alert rules at it. With ALERTS_AUTH_AUDIENCE set (the app registration
#     whose tokens the app requires, see docs/alerts.md), the webhook is a secure webhook: Azure Monitor also
#     sends an Entra ID token for that registration. Whoever runs the hook must own the registration.
#
# Every call creates or updates, so every `azd deploy` applies them again (and picks up rotated keys).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    throw 'postdeploy: the Azure CLI (az) is required'
}

function Invoke-Az {
    # Native commands do not throw: stop on a non-zero exit code.
    $output = & az @args
    if ($LASTEXITCODE -ne 0) { throw "postdeploy: az $(($args | Select-Object -First 3) -join ' ') failed ($LASTEXITCODE)" }
    return $output
}

function Protect-Url([string]$Url) {
    # On Windows az is a batch file and cmd.exe would split the URL at '&': hand it over quoted.
    if ([System.Environment]::OSVersion.Platform -eq 'Win32NT') { return '"' + $Url + '"' }
    return $Url
}

function Wait-For([string]$What, [scriptblock]$Query) {
    # The host writes its keys when it first starts on the new package: ask again for up to five minutes.
    $ErrorActionPreference = 'Continue'  # a failed attempt (stderr) is expected while the host starts
    for ($try = 0; $try -lt 30; $try++) {
        $value = & $Query 2>$null
        if ($LASTEXITCODE -eq 0 -and $value) { return "$value".Trim() }
        Start-Sleep -Seconds 10
    }
    throw "postdeploy: $What did not appear within five minutes"
}

# The Event Grid subscriptions' bodies, and the ARM API version they are written for.
$templates = Join-Path $PSScriptRoot 'event-subscriptions'
$eventGridApi = '2022-06-15'

function ConvertTo-JsonText([string]$Value) {
    # The value as the inside of a JSON string.
    $quoted = ConvertTo-Json -InputObject $Value -Compress
    return $quoted.Substring(1, $quoted.Length - 2)
}

function Get-AzRestValue([string]$Url, [string]$Query) {
    # One field of an ARM resource, or nothing when the resource does not exist (yet).
    $ErrorActionPreference = 'Continue'  # a missing resource (404 on stderr) is an answer here
    $value = & az rest --method get --url $Url --query $Query -o tsv 2>$null
    if ($LASTEXITCODE -ne 0 -or -not $value) { return '' }
    return "$value".Trim()
}

function Wait-Provisioned([string]$Name, [string]$Url) {
    # Event Grid validates the webhook (the Functions host answers the handshake) before the subscription is
    # Succeeded: wait for it, for up to two and a half minutes.
    for ($try = 0; $try -lt 30; $try++) {
        $state = Get-AzRestValue $Url 'properties.provisioningState'
        if ($state -eq 'Succeeded') { return }
        if ($state -in @('Failed', 'Canceled')) {
            throw "postdeploy: Event Grid subscription $Name is $state (did the webhook validation fail?)"
        }
        Start-Sleep -Seconds 5
    }
    throw "postdeploy: Event Grid subscription $Name was not provisioned within two and a half minutes"
}

# azd passes the environment's values to hooks; load them when the script is run by hand.
if (-not $env:AZURE_FUNCTION_APP_NAME -and (Get-Command azd -ErrorAction SilentlyContinue)) {
    foreach ($line in (& azd env get-values)) {
        if ($line -match '^([^=]+)=(.*)$') {
            [Environment]::SetEnvironmentVariable($Matches[1], ($Matches[2] -replace '^"|"$'))
        }
    }
}

$rg = $env:AZURE_RESOURCE_GROUP
$app = $env:AZURE_FUNCTION_APP_NAME
if (-not $rg -or -not $app) { throw 'postdeploy: AZURE_RESOURCE_GROUP / AZURE_FUNCTION_APP_NAME are not set: run azd provision first' }
$functionHost = $env:AZURE_FUNCTION_APP_HOSTNAME
if (-not $functionHost) {
    $functionHost = Invoke-Az functionapp show --resource-group $rg --name $app --query defaultHostName -o tsv
}

# Role definition ids of the built-in roles the app's identity (and the capture's readers) get.
$dataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'  # AzureML Data Scientist
$registryUser = '1823dd4f-9b8c-4ab6-ab4e-7397a3684615'   # AzureML Registry User
$blobReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'     # Storage Blob Data Reader (the captured telemetry)

function Grant-Role([string]$Role, [string]$RoleName, [string]$Scope, [string]$Principal, [string]$Who) {
    # Assigns the role to a service principal (by default the app's identity) on the scope unless it holds it
    # already. ($principal is the parameter: PowerShell names are case-insensitive.)
    if (-not $principal) {
        $principal = $env:AZURE_CONTROLPLANE_PRINCIPAL_ID
        $Who = 'the control plane'
    }
    if (-not $principal) { throw 'postdeploy: AZURE_CONTROLPLANE_PRINCIPAL_ID is not set' }
    $existing = Invoke-Az role assignment list --assignee $principal --role $Role --scope $Scope --query 'length(@)' -o tsv
    if ("$existing".Trim() -eq '0') {
        Write-Host "postdeploy: granting $Who $RoleName on $Scope"
        Invoke-Az role assignment create --assignee-object-id $principal --assignee-principal-type ServicePrincipal `
            --role $Role --scope $Scope --output none | Out-Null
    }
}

function Split-List([string]$Value) {
    # The items of a space-separated output of main.bicep (AZURE_ML_ENVIRONMENT_*); unset or empty: none.
    "$Value" -split ' ' | Where-Object { $_ }
}

if ($env:AZURE_ML_WORKSPACE_ID) {
    Grant-Role $dataScientist 'AzureML Data Scientist' $env:AZURE_ML_WORKSPACE_ID
}
foreach ($environmentWorkspaceId in @(Split-List $env:AZURE_ML_ENVIRONMENT_WORKSPACE_IDS)) {
    Grant-Role $dataScientist 'AzureML Data Scientist' $environmentWorkspaceId
}
if ($env:AZURE_ML_REGISTRY_ID) {
    Grant-Role $registryUser 'AzureML Registry User' $env:AZURE_ML_REGISTRY_ID
}

function Test-AzExtension([string]$Name) {
    # Whether the CLI extension is installed.
    $ErrorActionPreference = 'Continue'  # a missing extension (stderr) is an answer here
    & az extension show --name $Name --output none 2>$null | Out-Null
    return $LASTEXITCODE -eq 0
}

# Event Hubs Capture writes the telemetry hub's Avro files to their own account; Azure ML jobs read them through
# the datastore telemetry_capture of the home workspace, which holds no credentials: a job reads with its
# compute's managed identity, Studio with the workspace's. `az ml datastore create` creates or updates.
$captureAccount = $env:AZURE_TELEMETRY_CAPTURE_ACCOUNT
if ($env:AZURE_ML_WORKSPACE_ID -and $captureAccount) {
    $captureAccountId = $env:AZURE_TELEMETRY_CAPTURE_ACCOUNT_ID
    if (-not $captureAccountId) { throw 'postdeploy: AZURE_TELEMETRY_CAPTURE_ACCOUNT_ID is not set' }
    $captureContainer = if ($env:AZURE_TELEMETRY_CAPTURE_CONTAINER) { $env:AZURE_TELEMETRY_CAPTURE_CONTAINER } else { 'telemetry-capture' }
    # /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.MachineLearningServices/workspaces/<name>
    $workspaceParts = $env:AZURE_ML_WORKSPACE_ID.Split('/')
    $mlSubscription = $workspaceParts[2]
    $mlGroup = $workspaceParts[4]
    $mlWorkspace = $workspaceParts[-1]
    if (-not (Test-AzExtension 'ml')) { Invoke-Az extension add --name ml --only-show-errors --output none | Out-Null }
    $datastoreDir = Join-Path ([System.IO.Path]::GetTempPath()) ([System.IO.Path]::GetRandomFileName())
    New-Item -ItemType Directory -Path $datastoreDir | Out-Null
    $datastore = Join-Path $datastoreDir 'telemetry-capture.yml'
    try {
        # No credentials section: the datastore is identity-based. The endpoint defaults to the CLI's cloud.
        $yaml = @(
            'name: telemetry_capture'
            'type: azure_data_lake_gen2'
            "description: Event Hubs Capture of the control plane's telemetry hub (Avro), read with the caller's identity"
            "account_name: $captureAccount"
            "filesystem: $captureContainer"
        ) -join "`n"
        [System.IO.File]::WriteAllText($datastore, "$yaml`n")
        Write-Host "postdeploy: Azure ML datastore telemetry_capture: $captureAccount/$captureContainer in $mlWorkspace"
        Invoke-Az ml datastore create --file $datastore --subscription $mlSubscription --resource-group $mlGroup `
            --workspace-name $mlWorkspace --output none | Out-Null
    }
    finally {
        Remove-Item $datastoreDir -Recurse -ErrorAction SilentlyContinue
    }
    $workspacePrincipal = "$(Invoke-Az resource show --ids $env:AZURE_ML_WORKSPACE_ID --query identity.principalId -o tsv)".Trim()
    if (-not $workspacePrincipal) {
        Write-Host "postdeploy: workspace $mlWorkspace has no system-assigned identity: grant the identity it uses Storage Blob Data Reader on $captureAccountId"
    }
    foreach ($reader in @(@($workspacePrincipal) + @(Split-List $env:TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS) | Where-Object { $_ })) {
        Grant-Role $blobReader 'Storage Blob Data Reader' $captureAccountId $reader "principal $reader"
    }
}

function Add-Subscriptions([string]$Topic, [System.Collections.IDictionary]$Placeholders) {
    # Creates or updates every subscription of infra/hooks/event-subscriptions/ on the system topic; returns
    # the topic's resource id.
    $topicId = "$(Invoke-Az eventgrid system-topic show --resource-group $rg --name $Topic --query id -o tsv)".Trim()
    foreach ($template in (Get-ChildItem -Path $templates -Filter '*.json' | Sort-Object Name)) {
        $name = $template.BaseName
        $url = "$topicId/eventSubscriptions/$($name)?api-version=$eventGridApi"
        Write-Host "postdeploy: Event Grid subscription $($name): system topic $Topic to on_registry_event"
        $json = [System.IO.File]::ReadAllText($template.FullName)
        foreach ($placeholder in $Placeholders.Keys) { $json = $json.Replace($placeholder, $Placeholders[$placeholder]) }
        $body = (New-TemporaryFile).FullName  # holds the function's key: removed right after the call
        try {
            [System.IO.File]::WriteAllText($body, $json)  # UTF-8 without a byte order mark
            Invoke-Az rest --method put --url $url --body "@$body" --output none | Out-Null
        }
        finally {
            Remove-Item $body -ErrorAction SilentlyContinue
        }
        Wait-Provisioned $name $url
    }
    return $topicId
}

$topic = $env:AZURE_ML_SYSTEM_TOPIC_NAME
$environmentTopics = @(Split-List $env:AZURE_ML_ENVIRONMENT_TOPIC_NAMES)
if ($topic -or $environmentTopics.Count -gt 0) {
    $key = Wait-For 'the eventgrid_extension system key' {
        az functionapp keys list --resource-group $rg --name $app --query 'systemKeys.eventgrid_extension' -o tsv
    }
    $endpoint = "https://$functionHost/runtime/webhooks/eventgrid?functionName=on_registry_event&code=$key"
    if (-not $env:AZURE_STORAGE_ACCOUNT_ID) { throw 'postdeploy: AZURE_STORAGE_ACCOUNT_ID is not set' }
    $container = if ($env:AZURE_EVENTGRID_DEADLETTER_CONTAINER) { $env:AZURE_EVENTGRID_DEADLETTER_CONTAINER } else { 'eventgrid-deadletter' }
    $placeholders = [ordered]@{
        '{{endpointUrl}}'         = ConvertTo-JsonText $endpoint
        '{{deadLetterAccountId}}' = ConvertTo-JsonText $env:AZURE_STORAGE_ACCOUNT_ID
        '{{deadLetterContainer}}' = ConvertTo-JsonText $container
    }
}
else {
    Write-Host 'postdeploy: no Azure ML workspace configured (AZURE_ML_WORKSPACE): no Event Grid subscription to create'
}

if ($topic) {
    $topicId = Add-Subscriptions $topic $placeholders
    # Before the subscriptions were filtered, one subscription took every run event of the home workspace.
    $legacy = "$topicId/eventSubscriptions/on-registry-event?api-version=$eventGridApi"
    if (Get-AzRestValue $legacy 'name') {
        Write-Host 'postdeploy: deleting the unfiltered Event Grid subscription on-registry-event'
        Invoke-Az rest --method delete --url $legacy --output none | Out-Null
    }
}

# The further environments' topics get the same subscriptions: on_registry_event tells the environments apart
# by the workspace each event comes from.
foreach ($environmentTopic in $environmentTopics) {
    Add-Subscriptions $environmentTopic $placeholders | Out-Null
}

$alertKey = Wait-For 'the on_alert function key' {
    az functionapp function keys list --resource-group $rg --name $app --function-name on_alert --query default -o tsv
}
$actionGroup = if ($env:AZURE_ACTION_GROUP_NAME) { $env:AZURE_ACTION_GROUP_NAME } else { 'ag-controlplane' }

# The webhook receiver: NAME URI [useaadauth OBJECT_ID IDENTIFIER_URI].
$receiver = @('webhook', 'controlplane', (Protect-Url "https://$functionHost/api/alerts?code=$alertKey"))
$audience = $env:ALERTS_AUTH_AUDIENCE
if ($audience) {
    # Secure webhook: the receiver names the app registration by its object id and Application ID URI (the
    # audience itself when it is a URI, else the registration's first one). The function key stays in the URL.
    $appObjectId = "$(Invoke-Az ad app show --id $audience --query id -o tsv)".Trim()
    $identifierUri = if ($audience -match '://') { $audience } else {
        "$(Invoke-Az ad app show --id $audience --query 'identifierUris[0]' -o tsv)".Trim()
    }
    if (-not $appObjectId -or -not $identifierUri) {
        throw "postdeploy: app registration $audience (ALERTS_AUTH_AUDIENCE) has no object id or Application ID URI"
    }
    $receiver += @('useaadauth', $appObjectId, $identifierUri)
    Write-Host "postdeploy: pointing action group $actionGroup at https://$functionHost/api/alerts (secure webhook for $identifierUri)"
}
else {
    Write-Host "postdeploy: pointing action group $actionGroup at https://$functionHost/api/alerts"
}

Invoke-Az monitor action-group create `
    --resource-group $rg `
    --name $actionGroup `
    --short-name ctrlplane `
    --action @receiver usecommonalertschema `
    --tags "azd-env-name=$($env:AZURE_ENV_NAME)" `
    --output none | Out-Null

Write-Host "postdeploy: done. Use action group $actionGroup in the alert rules whose alerts the control plane should handle."
