# The load worker image for --rollout-platform kubernetes.
#
#   docker build -f docker/worker.Dockerfile -t pytest-rollout-worker:0.1.0 .
#   kind load docker-image pytest-rollout-worker:0.1.0        # for a kind cluster
#
# The plugin starts it as `python -m pytest_rollout.worker --serve --host 0.0.0.0 --port 8089`
# (see pytest_rollout/kube_objects.py: fleet_deployment) and drives it through the API
# server's pod proxy; Prometheus scrapes /metrics on the same port.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pytest_rollout ./pytest_rollout
RUN pip install --no-cache-dir . && rm -rf /src \
    && python -c "import httptools, uvloop"  # the fast engine: fail the build, not the run, if it cannot load
USER 65534:65534
EXPOSE 8089
ENTRYPOINT ["python", "-m", "pytest_rollout.worker"]
CMD ["--serve", "--host", "0.0.0.0", "--port", "8089"]
