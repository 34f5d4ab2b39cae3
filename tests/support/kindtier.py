"""What the kind tier (tests/kind) shares: the cluster's names, and what its fixture hands each test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "pytest-rollout"  # examples/kind/kind-config.yaml's name
CONTEXT = f"kind-{NAME}"
PROMETHEUS_IMAGE = "prom/prometheus:v3.5.0"  # examples/kind/prometheus.yaml's


@dataclass(frozen=True)
class KindCluster:
    kubeconfig: Path
    context: str
    image: str  # the node image
    env: dict[str, str]  # PATH with kind and kubectl, KUBECONFIG and KIND_NODE_IMAGE: what run.sh needs
