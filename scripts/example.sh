#!/usr/bin/env bash
# Set up Kubi, start a server, and walk through the book's chapter-5 manifests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
data=${KUBI_DATA_DIR:-$PWD/.kubi-example}
port=${KUBI_PORT:-6443}
# Simulated nodes: the book's images live on Docker Hub, which this example does not need.
.venv/bin/kubi server --data-dir "$data" --port "$port" --disable-agent --simulated-nodes 2 \
  > "$data.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
export KUBECONFIG=$data/kubeconfig.yaml
for _ in $(seq 100); do
  kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
manifests=${SEED_MANIFESTS:-../shared/seed/manifests}
set -x
kubectl get namespace
kubectl apply -f "$manifests/simple-deployment.yml" --record
kubectl rollout status deployment echo --timeout=60s
kubectl get pod,replicaset,deployment --selector app=echo
kubectl rollout history deployment echo
kubectl apply -f "$manifests/simple-service.yml"
kubectl get svc echo
kubectl delete -f "$manifests/simple-service.yml" -f "$manifests/simple-deployment.yml"
