#!/usr/bin/env bash
set -euo pipefail
kubectl -n flux-system patch kustomization plain --type merge -p '{"spec":{"suspend":true}}'
kubectl -n default set image deployment/blog ghost=docker.io/library/ghost:5.82
kubectl -n default patch configmap blog-theme -p '{"data":{"theme":"london"}}'
kubectl -n default delete deployment adminer
kubectl -n default create configmap blog-redirects --from-literal=old=/new
