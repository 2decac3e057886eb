#!/usr/bin/env bash
set -euo pipefail
kubectl -n flux-system patch kustomization generators --type merge -p '{"spec":{"suspend":true}}'
cm=$(kubectl -n generators get configmap -o name | grep '/api-config-')
kubectl -n generators patch "$cm" --type merge -p '{"data":{"LOG_LEVEL":"debug","DB_POOL":"20"}}'
kubectl -n generators create configmap hotfix-flags --from-literal=killswitch=on
