#!/usr/bin/env bash
set -euo pipefail
kubectl -n flux-system patch kustomization deep --type merge -p '{"spec":{"suspend":true}}'
kubectl -n deep scale deployment/search-eu --replicas=5
kubectl -n deep set image deployment/search-eu search=docker.io/library/opensearch:2.11.2
kubectl -n deep label deployment search-eu team=search --overwrite
