# The example target (examples/app.py) as an image, for examples/kind.
#
#   docker build -f docker/app.Dockerfile -t pytest-rollout-example-app:1 .
#   kind load docker-image pytest-rollout-example-app:1
#
# One image serves both versions: the manifests pass --version (and, for the bad
# releases, --delay-ms / --on-sigterm drop / --never-ready).
FROM python:3.11-slim
RUN pip install --no-cache-dir "aiohttp>=3.9,<4"
COPY examples/app.py /app/app.py
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["python", "/app/app.py"]
