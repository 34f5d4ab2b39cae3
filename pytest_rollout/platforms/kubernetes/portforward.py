"""A port-forward to a Service's pod through the API server: how the plugin reaches an in-cluster Prometheus."""

from __future__ import annotations

import socket
import threading
from typing import Any

from pytest_rollout.errors import KubernetesError
from pytest_rollout.platforms.kubernetes.api import api_error, label_selector, pod_ready

__all__ = ["PortForward", "parse_service"]


def parse_service(value: str) -> tuple[str, str, str]:
    """``NAMESPACE/NAME:PORT`` as ``(namespace, name, port)``; the port may be a number or a port name."""
    ns, sep, rest = value.partition("/")
    name, sep2, port = rest.partition(":")
    if not (sep and sep2 and ns and name and port):
        raise ValueError("expected NAMESPACE/NAME:PORT, e.g. monitoring/prometheus:9090")
    return ns, name, port


class PortForward:
    """A local listener on 127.0.0.1 relaying each connection to a pod behind a Service (``kubectl port-forward``).

    The Service's selector and port are resolved to a ready pod and its
    container port once, at :meth:`start`; each accepted connection opens its
    own forwarding stream through the API server.
    """

    def __init__(self, api: Any, service: str) -> None:
        from kubernetes import client as k8s

        self.api = api
        self.service = service
        self.namespace, self.name, self.port_spec = parse_service(service)
        self.core: Any = k8s.CoreV1Api(api)
        self.pod = ""
        self.pod_port = 0
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._conns: set[Any] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def resolve(self) -> tuple[str, int]:
        """The ready pod and container port behind the Service."""
        from kubernetes.client.exceptions import ApiException

        try:
            svc = self.core.read_namespaced_service(self.name, self.namespace)
        except ApiException as exc:
            raise api_error(exc, f"--rollout-prometheus-service {self.service}: reading the Service") from None
        ports = svc.spec.ports or []
        chosen = [p for p in ports if str(p.port) == self.port_spec or p.name == self.port_spec]
        if not chosen:
            have = ", ".join(f"{p.name or '-'}:{p.port}" for p in ports) or "none"
            raise KubernetesError(
                f"--rollout-prometheus-service {self.service}: the Service has no port {self.port_spec} (it has {have})"
            )
        target = chosen[0].target_port if chosen[0].target_port is not None else chosen[0].port
        selector = svc.spec.selector or {}
        if not selector:
            raise KubernetesError(f"--rollout-prometheus-service {self.service}: the Service selects no pods")
        sel = label_selector(selector)
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=sel).items
        except ApiException as exc:
            raise api_error(exc, f"--rollout-prometheus-service {self.service}: listing its pods") from None
        ready = [p for p in pods if p.metadata.deletion_timestamp is None and pod_ready(p)]
        if not ready:
            raise KubernetesError(f"--rollout-prometheus-service {self.service}: no ready pod behind the Service")
        pod = sorted(ready, key=lambda p: p.metadata.name)[0]
        if isinstance(target, int) or str(target).isdigit():
            return pod.metadata.name, int(target)
        for container in pod.spec.containers:
            for cp in container.ports or []:
                if cp.name == target:
                    return pod.metadata.name, int(cp.container_port)
        raise KubernetesError(
            f"--rollout-prometheus-service {self.service}: pod {pod.metadata.name} has no port named {target}"
        )

    def start(self) -> None:
        self.pod, self.pod_port = self.resolve()
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(0.2)
        self._server = server
        thread = threading.Thread(target=self._accept, name="rollout-port-forward", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._relay, args=(conn,), name="rollout-port-forward-conn", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, conn: socket.socket) -> None:
        import select

        from kubernetes.stream import portforward

        remote: Any = None
        try:
            forward = portforward(
                self.core.connect_get_namespaced_pod_portforward, self.pod, self.namespace, ports=str(self.pod_port)
            )
            remote = forward.socket(self.pod_port)
            remote.setblocking(True)
            with self._lock:
                self._conns.add(conn)
            while not self._closing.is_set():
                readable, _, _ = select.select([conn, remote], [], [], 0.2)
                for src in readable:
                    dst = remote if src is conn else conn
                    data = src.recv(65536)
                    if not data:
                        return
                    dst.sendall(data)
        except Exception:  # a broken stream ends this connection; the client sees it closed
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            if remote is not None:
                try:
                    remote.close()
                except Exception:
                    pass

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads.clear()
