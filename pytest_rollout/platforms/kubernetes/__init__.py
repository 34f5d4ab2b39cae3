"""The kubernetes platform: the target as a Deployment behind a Service, the fleet as worker pods."""
