#!/usr/bin/env bash
# Set up Kubi, start a server, and walk through the book's chapter-5 examples with kubectl:
# with real containers where this machine can run them (root, runc or crun, and the tools
# the book's images are built from), else on simulated nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
data=${KUBI_DATA_DIR:-$PWD/.kubi-example}
port=${KUBI_PORT:-6443}
manifests=${SEED_MANIFESTS:-../shared/seed/manifests}
rm -rf "$data"
if [ "${KUBI_EXAMPLE:-auto}" != simulated ] && [ "$(id -u)" = 0 ] \
    && [ -x /usr/bin/docker-registry ] \
    && .venv/bin/python -c 'import sys; sys.path.insert(0, ".")
from kubi.cli.server import agent_problem
from tests.images import missing_tools
sys.exit(1 if agent_problem() or missing_tools() else 0)' 2>/dev/null; then
  echo "== real containers: the book's pod, then its deployment and an image update"
  exec .venv/bin/python scripts/book_example.py "$data" "$port" "$manifests"
fi
echo "== simulated nodes (this machine cannot run the real containers; see README)"
.venv/bin/kubi server --data-dir "$data" --port "$port" --disable-agent --simulated-nodes 2 \
  > "$data.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
export KUBECONFIG=$data/kubeconfig.yaml
for _ in $(seq 100); do
  kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
set -x
kubectl get namespace
kubectl apply -f "$manifests/simple-deployment.yml" --record
kubectl rollout status deployment echo --timeout=60s
kubectl get pod,replicaset,deployment --selector app=echo
kubectl rollout history deployment echo
kubectl apply -f "$manifests/simple-service.yml"
kubectl get svc echo
kubectl delete -f "$manifests/simple-service.yml" -f "$manifests/simple-deployment.yml"
