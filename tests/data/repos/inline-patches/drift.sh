#!/usr/bin/env bash
set -euo pipefail
kubectl -n flux-system patch kustomization inline-patches --type merge -p '{"spec":{"suspend":true}}'
kubectl -n inline scale deployment/worker --replicas=5
EDITOR="sed -i -e s/cpu:\ 250m/cpu:\ 500m/" kubectl -n inline edit deployment/worker
kubectl -n inline set image deployment/queue rabbitmq=docker.io/library/rabbitmq:3.13.7-management
