#!/usr/bin/env bash
# Create a kind cluster, build and load the images, install Prometheus, and run
# the example SLO tests on it. Needs docker, kind and kubectl.
#
#   examples/kind/run.sh            # create (or reuse) the cluster and run
#   KEEP_CLUSTER=0 examples/kind/run.sh   # delete the cluster afterwards
#   KIND_NODE_IMAGE=IMAGE examples/kind/run.sh   # create it with that node image (kind create cluster --image)
set -euo pipefail
cd "$(dirname "$0")/../.."

cluster=pytest-rollout
worker_image=pytest-rollout-worker:0.1.0
app_image=pytest-rollout-example-app:1
prometheus_image=prom/prometheus:v3.5.0  # examples/kind/prometheus.yaml's

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 2; }
done

if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --config examples/kind/kind-config.yaml ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
context="kind-$cluster"

docker build -f docker/worker.Dockerfile -t "$worker_image" .
docker build -f docker/app.Dockerfile -t "$app_image" .
kind load docker-image --name "$cluster" "$worker_image" "$app_image"
# Prometheus' image goes in from docker's store when it is there (a machine without registry access builds
# it); otherwise the cluster pulls it
if docker image inspect "$prometheus_image" >/dev/null 2>&1; then
  kind load docker-image --name "$cluster" "$prometheus_image"
fi

kubectl --context "$context" apply -f examples/kind/prometheus.yaml
kubectl --context "$context" -n monitoring rollout status deployment/prometheus --timeout=180s

python3 -m pip install -q -e '.[kubernetes]'
status=0
python3 -m pytest examples/kind -v \
  --rollout-platform kubernetes \
  --rollout-kube-context "$context" \
  --rollout-worker-image "$worker_image" \
  --rollout-prometheus-service monitoring/prometheus:9090 \
  --rollout-report rollout-report.json \
  --junitxml rollout-junit.xml || status=$?

if [ "${KEEP_CLUSTER:-1}" = 0 ]; then
  kind delete cluster --name "$cluster"
fi
exit "$status"
