#!/usr/bin/env bash
# The flux bootstrap layout: suspend the root Kustomization (it re-applies apps.yaml, and Flux
# takes back fields kubectl patched) and the apps Kustomization, as `flux suspend` would; hotfix.
set -euo pipefail
kubectl -n flux-system patch kustomization flux-system --type merge -p '{"spec":{"suspend":true}}'
kubectl -n flux-system patch kustomization apps --type merge -p '{"spec":{"suspend":true}}'
kubectl -n web scale deployment/podinfo --replicas=4
kubectl -n web set image deployment/podinfo podinfod=ghcr.io/example/podinfo:6.7.2
