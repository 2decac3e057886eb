#!/usr/bin/env bash
# Manual changes a person makes with kubectl while Flux is suspended (KUBECONFIG is set by the test).
set -euo pipefail
kubectl -n flux-system patch kustomization components --type merge -p '{"spec":{"suspend":true}}'
kubectl -n podinfo set image deployment/podinfo podinfod=ghcr.io/example/podinfo:6.8.0
kubectl -n podinfo scale deployment/podinfo --replicas=3
kubectl -n podinfo scale deployment/backend --replicas=3
kubectl -n podinfo annotate service podinfo owner=team-a
