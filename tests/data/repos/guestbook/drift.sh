#!/usr/bin/env bash
set -euo pipefail
kubectl -n flux-system patch kustomization guestbook --type merge -p '{"spec":{"suspend":true}}'
kubectl -n guestbook set env deployment/frontend GET_HOSTS_FROM=env
kubectl -n guestbook set resources deployment/redis-leader -c leader --limits=cpu=200m,memory=256Mi
kubectl -n guestbook label service redis-leader tier=backend
