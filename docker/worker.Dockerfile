# The load worker image for --rollout-platform kubernetes.
#
#   docker build -f docker/worker.Dockerfile -t pytest-rollout-worker:0.1.0 .
#   kind load docker-image pytest-rollout-worker:0.1.0        # for a kind cluster
#
# The plugin starts it as `python -m pytest_rollout.load.worker --serve --host 0.0.0.0 --port 8089
# --metrics-port 8090 --target <the run's Service> --secrets /var/run/pytest-rollout`
# (see pytest_rollout/platforms/kubernetes/objects.py: fleet_deployment), with the run's token and secret
# headers in a Secret mounted there, and drives it through the API server's pod proxy;
# Prometheus scrapes /metrics on 8090. It runs as a non-root user on a read-only root.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pytest_rollout ./pytest_rollout
RUN pip install --no-cache-dir . && rm -rf /src \
    && python -c "import httptools, uvloop"  # the fast engine: fail the build, not the run, if it cannot load
ENV PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8089 8090
ENTRYPOINT ["python", "-m", "pytest_rollout.load.worker"]
CMD ["--serve", "--host", "0.0.0.0", "--port", "8089", "--metrics-port", "8090"]
