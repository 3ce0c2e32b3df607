#!/bin/sh
# azd postdeploy hook (POSIX shells): connects what needs the deployed function's keys.
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
#     no shared keys). postdeploy.ps1 sends the same files.
#  2. Azure Monitor: an action group whose webhook posts the common alert schema to /api/alerts with the
#     on_alert function key. Point your alert rules at it. With ALERTS_AUTH_AUDIENCE set (the app registration
#     whose tokens the app requires, see docs/alerts.md), the webhook is a secure webhook: Azure Monitor also
#     sends an Entra ID token for that registration. Whoever runs the hook must own the registration.
#
# Every call creates or updates, so every `azd deploy` applies them again (and picks up rotated keys).
set -eu

command -v az >/dev/null 2>&1 || { echo "postdeploy: the Azure CLI (az) is required" >&2; exit 1; }

# azd passes the environment's values to hooks; load them when the script is run by hand.
if [ -z "${AZURE_FUNCTION_APP_NAME:-}" ] && command -v azd >/dev/null 2>&1; then
  values=$(mktemp)
  azd env get-values > "$values"
  while IFS= read -r line; do
    case "$line" in
      *=*)
        value=${line#*=}; value=${value#\"}; value=${value%\"}
        export "${line%%=*}=$value"
        ;;
    esac
  done < "$values"
  rm -f "$values"
fi

rg=${AZURE_RESOURCE_GROUP:?postdeploy: AZURE_RESOURCE_GROUP is not set: run azd provision first}
app=${AZURE_FUNCTION_APP_NAME:?postdeploy: AZURE_FUNCTION_APP_NAME is not set: run azd provision first}
host=${AZURE_FUNCTION_APP_HOSTNAME:-}
[ -n "$host" ] || host=$(az functionapp show --resource-group "$rg" --name "$app" --query defaultHostName -o tsv)

# The host writes its keys when it first starts on the new package: ask again for up to five minutes.
wait_for() {
  what=$1
  shift
  tries=0
  while [ "$tries" -lt 30 ]; do
    value=$("$@" 2>/dev/null || true)
    if [ -n "$value" ]; then
      printf '%s' "$value"
      return 0
    fi
    tries=$((tries + 1))
    sleep 10
  done
  echo "postdeploy: $what did not appear within five minutes" >&2
  return 1
}

# The Event Grid subscriptions' bodies, and the ARM API version they are written for.
templates="$(dirname "$0")/event-subscriptions"
event_grid_api=2022-06-15

# $1 as the inside of a JSON string, escaped again for the replacement side of sed's s|...|...|.
literal() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/[\\&|]/\\&/g'
}

# Event Grid validates the webhook (the Functions host answers the handshake) before the subscription is
# Succeeded: wait for it, for up to two and a half minutes.
wait_until_provisioned() {
  tries=0
  while [ "$tries" -lt 30 ]; do
    state=$(az rest --method get --url "$2" --query properties.provisioningState -o tsv 2>/dev/null || true)
    case "$state" in
      Succeeded) return 0 ;;
      Failed | Canceled)
        echo "postdeploy: Event Grid subscription $1 is $state (did the webhook validation fail?)" >&2
        return 1 ;;
    esac
    tries=$((tries + 1))
    sleep 5
  done
  echo "postdeploy: Event Grid subscription $1 was not provisioned within two and a half minutes" >&2
  return 1
}

# Role definition ids of the built-in roles the app's identity (and the capture's readers) get.
data_scientist=f6c7c914-8db3-469d-8ca1-694a8f32e121  # AzureML Data Scientist
registry_user=1823dd4f-9b8c-4ab6-ab4e-7397a3684615   # AzureML Registry User
blob_reader=2a2b9908-6ea1-4ae2-8e65-a410df84e7d1     # Storage Blob Data Reader (the captured telemetry)

# Assigns role $2 (named $3, for the log) to service principal $1 (named $5) on scope $4 unless it holds it
# already.
grant_to() {
  existing=$(az role assignment list --assignee "$1" --role "$2" --scope "$4" --query "length(@)" -o tsv)
  if [ "$existing" = "0" ]; then
    echo "postdeploy: granting $5 $3 on $4"
    az role assignment create --assignee-object-id "$1" --assignee-principal-type ServicePrincipal \
      --role "$2" --scope "$4" --output none
  fi
}

# Assigns role $1 (named $2, for the log) to the app's identity on scope $3 unless it holds it already.
grant() {
  principal=${AZURE_CONTROLPLANE_PRINCIPAL_ID:?postdeploy: AZURE_CONTROLPLANE_PRINCIPAL_ID is not set}
  grant_to "$principal" "$1" "$2" "$3" "the control plane"
}

workspace_id=${AZURE_ML_WORKSPACE_ID:-}
if [ -n "$workspace_id" ]; then
  grant "$data_scientist" "AzureML Data Scientist" "$workspace_id"
fi
for environment_workspace_id in ${AZURE_ML_ENVIRONMENT_WORKSPACE_IDS:-}; do
  grant "$data_scientist" "AzureML Data Scientist" "$environment_workspace_id"
done
registry_id=${AZURE_ML_REGISTRY_ID:-}
if [ -n "$registry_id" ]; then
  grant "$registry_user" "AzureML Registry User" "$registry_id"
fi

# Event Hubs Capture writes the telemetry hub's Avro files to their own account; Azure ML jobs read them through
# the datastore telemetry_capture of the home workspace, which holds no credentials: a job reads with its
# compute's managed identity, Studio with the workspace's. `az ml datastore create` creates or updates.
capture_account=${AZURE_TELEMETRY_CAPTURE_ACCOUNT:-}
if [ -n "$workspace_id" ] && [ -n "$capture_account" ]; then
  capture_account_id=${AZURE_TELEMETRY_CAPTURE_ACCOUNT_ID:?postdeploy: AZURE_TELEMETRY_CAPTURE_ACCOUNT_ID is not set}
  capture_container=${AZURE_TELEMETRY_CAPTURE_CONTAINER:-telemetry-capture}
  # /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.MachineLearningServices/workspaces/<name>
  ml_subscription=$(printf '%s' "$workspace_id" | cut -d/ -f3)
  ml_group=$(printf '%s' "$workspace_id" | cut -d/ -f5)
  ml_workspace=${workspace_id##*/}
  az extension show --name ml --output none >/dev/null 2>&1 || az extension add --name ml --only-show-errors --output none
  datastore_dir=$(mktemp -d)
  # No credentials section: the datastore is identity-based. The endpoint defaults to the CLI's cloud.
  cat > "$datastore_dir/telemetry-capture.yml" <<YAML
name: telemetry_capture
type: azure_data_lake_gen2
description: Event Hubs Capture of the control plane's telemetry hub (Avro), read with the caller's identity
account_name: $capture_account
filesystem: $capture_container
YAML
  echo "postdeploy: Azure ML datastore telemetry_capture: $capture_account/$capture_container in $ml_workspace"
  if ! az ml datastore create --file "$datastore_dir/telemetry-capture.yml" --subscription "$ml_subscription" \
      --resource-group "$ml_group" --workspace-name "$ml_workspace" --output none; then
    rm -rf "$datastore_dir"
    echo "postdeploy: creating the Azure ML datastore telemetry_capture failed" >&2
    exit 1
  fi
  rm -rf "$datastore_dir"
  workspace_principal=$(az resource show --ids "$workspace_id" --query identity.principalId -o tsv)
  if [ -z "$workspace_principal" ]; then
    echo "postdeploy: workspace $ml_workspace has no system-assigned identity: grant the identity it uses Storage Blob Data Reader on $capture_account_id"
  fi
  for reader in $workspace_principal ${TELEMETRY_CAPTURE_READER_PRINCIPAL_IDS:-}; do
    grant_to "$reader" "$blob_reader" "Storage Blob Data Reader" "$capture_account_id" "principal $reader"
  done
fi

# Creates or updates every subscription of infra/hooks/event-subscriptions/ on system topic $1; leaves the
# topic's resource id in topic_id.
subscribe() {
  topic=$1
  topic_id=$(az eventgrid system-topic show --resource-group "$rg" --name "$topic" --query id -o tsv)
  for template in "$templates"/*.json; do
    name=$(basename "$template" .json)
    url="${topic_id}/eventSubscriptions/${name}?api-version=${event_grid_api}"
    echo "postdeploy: Event Grid subscription $name: system topic $topic to on_registry_event"
    body=$(mktemp)  # holds the function's key: readable by this user only, removed right after the call
    sed -e "s|{{endpointUrl}}|$(literal "$endpoint")|g" \
        -e "s|{{deadLetterAccountId}}|$(literal "$account_id")|g" \
        -e "s|{{deadLetterContainer}}|$(literal "$container")|g" \
        "$template" > "$body"
    if ! az rest --method put --url "$url" --body "@$body" --output none; then
      rm -f "$body"
      echo "postdeploy: creating Event Grid subscription $name on $topic failed" >&2
      exit 1
    fi
    rm -f "$body"
    wait_until_provisioned "$name" "$url"
  done
}

topic=${AZURE_ML_SYSTEM_TOPIC_NAME:-}
environment_topics=${AZURE_ML_ENVIRONMENT_TOPIC_NAMES:-}
if [ -n "$topic" ] || [ -n "$environment_topics" ]; then
  key=$(wait_for "the eventgrid_extension system key" \
    az functionapp keys list --resource-group "$rg" --name "$app" --query "systemKeys.eventgrid_extension" -o tsv)
  endpoint="https://${host}/runtime/webhooks/eventgrid?functionName=on_registry_event&code=${key}"
  account_id=${AZURE_STORAGE_ACCOUNT_ID:?postdeploy: AZURE_STORAGE_ACCOUNT_ID is not set}
  container=${AZURE_EVENTGRID_DEADLETTER_CONTAINER:-eventgrid-deadletter}
else
  echo "postdeploy: no Azure ML workspace configured (AZURE_ML_WORKSPACE): no Event Grid subscription to create"
fi

if [ -n "$topic" ]; then
  subscribe "$topic"
  # Before the subscriptions were filtered, one subscription took every run event of the home workspace.
  legacy="${topic_id}/eventSubscriptions/on-registry-event?api-version=${event_grid_api}"
  if [ -n "$(az rest --method get --url "$legacy" --query name -o tsv 2>/dev/null || true)" ]; then
    echo "postdeploy: deleting the unfiltered Event Grid subscription on-registry-event"
    az rest --method delete --url "$legacy" --output none
  fi
fi

# The further environments' topics get the same subscriptions: on_registry_event tells the environments apart
# by the workspace each event comes from.
for environment_topic in $environment_topics; do
  subscribe "$environment_topic"
done

alert_key=$(wait_for "the on_alert function key" \
  az functionapp function keys list --resource-group "$rg" --name "$app" --function-name on_alert --query default -o tsv)
action_group=${AZURE_ACTION_GROUP_NAME:-ag-controlplane}

# The webhook receiver: NAME URI [useaadauth OBJECT_ID IDENTIFIER_URI], built in the positional parameters.
set -- webhook controlplane "https://${host}/api/alerts?code=${alert_key}"
audience=${ALERTS_AUTH_AUDIENCE:-}
if [ -n "$audience" ]; then
  # Secure webhook: the receiver names the app registration by its object id and Application ID URI (the
  # audience itself when it is a URI, else the registration's first one). The function key stays in the URL.
  app_object_id=$(az ad app show --id "$audience" --query id -o tsv)
  case "$audience" in
    *://*) identifier_uri=$audience ;;
    *) identifier_uri=$(az ad app show --id "$audience" --query "identifierUris[0]" -o tsv) ;;
  esac
  if [ -z "$app_object_id" ] || [ -z "$identifier_uri" ]; then
    echo "postdeploy: app registration $audience (ALERTS_AUTH_AUDIENCE) has no object id or Application ID URI" >&2
    exit 1
  fi
  set -- "$@" useaadauth "$app_object_id" "$identifier_uri"
  echo "postdeploy: pointing action group $action_group at https://${host}/api/alerts (secure webhook for $identifier_uri)"
else
  echo "postdeploy: pointing action group $action_group at https://${host}/api/alerts"
fi

az monitor action-group create \
  --resource-group "$rg" \
  --name "$action_group" \
  --short-name ctrlplane \
  --action "$@" usecommonalertschema \
  --tags "azd-env-name=${AZURE_ENV_NAME:-}" \
  --output none

echo "postdeploy: done. Use action group $action_group in the alert rules whose alerts the control plane should handle."
