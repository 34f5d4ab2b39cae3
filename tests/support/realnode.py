"""What the real-node tier (tests/node) shares."""

#: The example app's image, built from docker/app.Dockerfile and loaded onto the node by the tier.
APP_IMAGE = "pytest-rollout-example-app:1"
