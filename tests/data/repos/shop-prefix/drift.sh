#!/usr/bin/env bash
set -euo pipefail
kubectl -n flux-system patch kustomization shop-prefix --type merge -p '{"spec":{"suspend":true}}'
kubectl -n shop-prefix scale deployment/acme-cart-v1 --replicas=4
kubectl -n shop-prefix annotate deployment acme-cart-v1 oncall=alice
kubectl -n shop-prefix label deployment acme-cart-v1 env=staging --overwrite
