#!/usr/bin/env bash
set -euo pipefail
kubectl -n flux-system patch kustomization legacy --type merge -p '{"spec":{"suspend":true}}'
kubectl -n legacy set env deployment/web MODE=debug CACHE_TTL=120
kubectl -n legacy scale deployment web --replicas=3
