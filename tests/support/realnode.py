"""What the real-node tier (tests/node) shares."""

#: The example app's image, built from docker/app.Dockerfile and loaded onto the node by the tier.
APP_IMAGE = "pytest-rollout-example-app:1"
#: The worker image (docker/worker.Dockerfile), the plugin's default --rollout-worker-image.
WORKER_IMAGE = "pytest-rollout-worker:0.1.0"
