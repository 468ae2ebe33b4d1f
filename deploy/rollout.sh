#!/usr/bin/env bash
# Roll BitLoot out to the current kubectl context, in the order the system needs:
#   1. infra    namespace, config, network policy, NATS cluster, Postgres   (waits until ready)
#   2. prepare  stream declaration (R3) and one migration Job per service   (waits to complete)
#   3. apps     every Deployment, Service, PDB, HPA and the Ingress         (waits for rollout)
# Jobs are immutable, so the previous prepare Jobs are deleted before the new ones are applied.
# Secrets must exist first (deploy/k8s/secrets.example.yaml lists names and keys); this script
# never creates or prints them.
#
# usage: deploy/rollout.sh [kustomize-dir]     (default: deploy/k8s; an overlay works too)
set -euo pipefail

DIR="${1:-$(dirname "$0")/k8s}"
NS="${BITLOOT_NAMESPACE:-bitloot}"
TIMEOUT="${ROLLOUT_TIMEOUT:-600s}"
k() { kubectl -n "$NS" "$@"; }

echo "== checking secrets"
missing=0
for secret in bitloot-orders bitloot-payments bitloot-webhooks bitloot-fulfillment bitloot-admin bitloot-web; do
  if ! k get secret "$secret" >/dev/null 2>&1; then
    echo "missing secret $NS/$secret (see deploy/k8s/secrets.example.yaml)" >&2
    missing=1
  fi
done
[ "$missing" = 0 ] || exit 1

echo "== stage 1: infrastructure"
kubectl apply -k "$DIR" -l bitloot.io/stage=infra
k rollout status statefulset/nats --timeout="$TIMEOUT"
if k get statefulset postgres >/dev/null 2>&1; then
  k rollout status statefulset/postgres --timeout="$TIMEOUT"
fi

echo "== stage 2: streams and migrations"
k delete job -l bitloot.io/stage=prepare --ignore-not-found --wait=true
kubectl apply -k "$DIR" -l bitloot.io/stage=prepare
if ! k wait --for=condition=complete job -l bitloot.io/stage=prepare --timeout="$TIMEOUT"; then
  echo "a prepare Job did not complete; its log:" >&2
  for job in $(k get job -l bitloot.io/stage=prepare -o name); do
    k logs "$job" --tail=50 >&2 || true
  done
  exit 1
fi

echo "== stage 3: services"
kubectl apply -k "$DIR"
for deploy in $(k get deployment -l app.kubernetes.io/part-of=bitloot -o name); do
  k rollout status "$deploy" --timeout="$TIMEOUT"
done
echo "== BitLoot rolled out to namespace $NS"
