#!/usr/bin/env bash
# examples/kind/run.sh on the single-node cluster of scripts/cluster instead of kind: the same images, the
# same Prometheus manifest (its image built locally), the same SLO tests with the same options. Only how
# the cluster is made and the images loaded differs. Needs root (see scripts/cluster).
#
#   examples/kind/run-local-node.sh                 # start (or reuse) the cluster and run
#   KEEP_CLUSTER=0 examples/kind/run-local-node.sh  # stop it afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."

worker_image=pytest-rollout-worker:0.1.0
app_image=pytest-rollout-example-app:1

export_line=$(scripts/cluster up | tail -n 1)  # export KUBECONFIG=...; Prometheus is installed by `up`
eval "$export_line"
context=rollout

docker build -f docker/worker.Dockerfile -t "$worker_image" .
docker build -f docker/app.Dockerfile -t "$app_image" .
scripts/cluster load "$worker_image" "$app_image"

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
  scripts/cluster down
fi
exit "$status"
