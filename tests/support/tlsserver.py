"""A real HTTP/1.1 keep-alive server, over TLS or plain, on a loopback address, one thread per connection.

It counts what a test needs to see from the server's side: connections accepted, TLS handshakes done and
failed, requests served by method, connections the client closed. TLS runs through :class:`ssl.SSLObject` on
memory buffers, so the server decides when its bytes go out: with ``hold_after_handshake`` set, what OpenSSL
wrote once the handshake was done (a TLS 1.3 server's session tickets) waits until :meth:`release` is called,
so a test can make those healthy, unasked bytes arrive on a connection the client holds idle.

A ``HEAD`` is answered with ``Content-Length: 2`` and no body, as RFC 9110 says a server should; a ``GET``
with the two bytes ``ok``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from pathlib import Path

__all__ = ["HTTPServer"]

RESPONSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n"


class _Channel:
    """One accepted connection: plain bytes, or TLS records through an SSLObject."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext | None) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True) if context else None

    def _pull(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def handshake(self) -> None:
        assert self.tls is not None
        while True:
            try:
                self.tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                self.flush()
                if not self._pull():
                    raise ConnectionError("closed during the handshake") from None

    def read(self) -> bytes:
        """Some bytes of the request stream; b"" when the client closed."""
        if self.tls is None:
            return self.sock.recv(65536)
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.flush()
                if not self._pull():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def write(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
        else:
            self.tls.write(data)
            self.flush()


class HTTPServer:
    """See the module. ``tls``: (certificate, key) PEM files, or None for plain HTTP."""

    def __init__(
        self, tls: tuple[Path, Path] | None = None, host: str = "127.0.0.1", hold_after_handshake: bool = False
    ) -> None:
        self.context: ssl.SSLContext | None = None
        if tls is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(str(tls[0]), str(tls[1]))
        self.listener = socket.create_server((host, 0))
        self.host = host
        self.port = self.listener.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self.port}/"
        self.lock = threading.Lock()
        self.accepted = 0
        self.handshakes = 0
        self.failed_handshakes = 0
        self.served: dict[str, int] = {}
        self.closed_by_client = 0
        self.dropped = 0
        self.drop_reused = 0  # requests on a reused connection to answer by closing it (the keep-alive race)
        self.delay_s = 0.0  # how long to work on each request before answering
        self.held_after_handshake = 0  # connections whose post-handshake bytes were held back
        self.release_event = threading.Event()
        self.released = threading.Event()  # set once held bytes went out
        self.hold = hold_after_handshake
        self.open: list[socket.socket] = []
        self._idle: set[socket.socket] = set()
        self._closing: set[socket.socket] = set()  # closed by the server itself (close_idle, stop)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def requests(self) -> int:
        return sum(self.served.values())

    @property
    def idle_connections(self) -> int:
        """Connections waiting for their next request (the ones :meth:`close_idle` would close now)."""
        with self.lock:
            return len(self._idle)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        channel = _Channel(sock, self.context)
        try:
            if channel.tls is not None:
                try:
                    channel.handshake()
                except (ssl.SSLError, ConnectionError, OSError):
                    with self.lock:
                        self.failed_handshakes += 1
                    with contextlib.suppress(OSError):
                        channel.flush()  # the alert saying why
                    sock.close()
                    return
                with self.lock:
                    self.handshakes += 1
                if self.hold:
                    with self.lock:
                        self.held_after_handshake += 1
                    self.release_event.wait(30)
                    channel.flush()
                    self.released.set()
                else:
                    channel.flush()
            self._requests(channel, sock)
        except OSError:
            return  # closed under it by close_idle() or stop()

    def _requests(self, channel: _Channel, sock: socket.socket) -> None:
        buffer = b""
        served_here = 0
        while True:
            with self.lock:
                self._idle.add(sock)
            while b"\r\n\r\n" not in buffer:
                data = channel.read()
                if not data:
                    with self.lock:
                        self.closed_by_client += sock not in self._closing
                        self._idle.discard(sock)
                    sock.close()
                    return
                buffer += data
            with self.lock:
                self._idle.discard(sock)
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            method = head.split(b" ", 1)[0].decode("latin-1")
            with self.lock:
                drop = served_here > 0 and self.drop_reused > 0
                if drop:
                    self.drop_reused -= 1
                    self.dropped += 1
                else:
                    self.served[method] = self.served.get(method, 0) + 1
            if drop:
                sock.close()
                return
            if self.delay_s:
                time.sleep(self.delay_s)
            served_here += 1
            channel.write(RESPONSE_HEAD + (b"" if method == "HEAD" else b"ok"))

    def release(self) -> None:
        """Let the bytes held after each handshake go out, and wait until they have."""
        self.release_event.set()
        assert self.released.wait(10), "no held bytes went out"

    def close_idle(self) -> None:
        """Close every connection waiting for a request, as a graceful server does when it stops."""
        with self.lock:
            idle, self._idle = list(self._idle), set()
            self._closing.update(idle)
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stop(self) -> None:
        self.release_event.set()
        self.listener.close()
        with self.lock:
            socks = list(self.open)
            self._closing.update(socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
