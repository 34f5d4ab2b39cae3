"""A small HTTP service to upgrade under load: the target of the example SLO tests.

It listens on 127.0.0.1 (``--host`` to change; 0.0.0.0 in a pod) at the port in env var ``PORT`` and answers
``GET /`` (and ``POST /``) with its version after ``--delay-ms`` of simulated work, and
``GET /healthz`` with 200 once started (503 before, and while shutting down). ``/search``, ``/cart`` and
``/items/<id>`` (a traffic mix's routes), with any method, are answered the same way as ``/``; any other path is
404.

Graceful by default, as well-behaved servers are: on SIGTERM it reports
unready and stops accepting at once; for ``--drain-s`` (1) it answers on the
connections already open with ``Connection: close``, so clients leave them
between requests rather than racing a close; then it finishes what is in
flight, closes what is left and exits. On a cluster (and on the local platform)
its endpoint leaves the load balancer a moment after SIGTERM, so new
connections in that moment are refused: deploy it with ``pre_stop`` longer
than the endpoint delay (``rollout.deploy(..., pre_stop="2s")``), as the
examples do. Flags make the bad releases the examples and tests catch:

- ``--on-sigterm drop``    exit at once on SIGTERM, dropping requests in flight
- ``--on-sigterm shutdown``  keep serving for ``--linger-s`` (3), then shut down as aiohttp's cleanup,
  Go's ``http.Server.Shutdown`` and ``nginx -s quit`` do: stop accepting, finish requests in flight, close
  idle keep-alive connections (a mainstream graceful server: its clients resend a request that raced the
  close, as browsers and Go clients do)
- ``--on-sigterm linger``  stop accepting on SIGTERM but never close open connections; exit after
  ``--linger-s`` (default 3), resetting whatever is in flight on them
- ``--no-keep-alive``      close every connection after its response (like gunicorn's sync workers):
  every request is a new connection, balanced anew
- ``--delay-ms 600``       a slower release
- ``--error-rate 0.05``    answer 5% of requests with 500
- ``--never-ready``        never pass the readiness check
- ``--tls-cert server.pem --tls-key server.key``  serve HTTPS (``/healthz`` too) with that certificate chain and key
- ``--fault-path /cart``   the errors and the delay above only on paths starting with ``/cart`` (repeatable);
  every other path takes 2 ms and never errs: a release broken on one route of a mix
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import ssl
import sys

from aiohttp import web


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--version", default="1", help="version reported in answers (default 1)")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="simulated work per request (default 2)")
    parser.add_argument("--startup-s", type=float, default=0.3, help="time to become ready (default 0.3)")
    parser.add_argument("--on-sigterm", choices=["graceful", "drop", "linger", "shutdown"], default="graceful")
    parser.add_argument(
        "--linger-s", type=float, default=3.0, help="with --on-sigterm linger or shutdown: serve on for (default 3)"
    )
    parser.add_argument("--no-keep-alive", action="store_true", help="close each connection after its response")
    parser.add_argument(
        "--drain-s", type=float, default=1.0, help="graceful: how long open connections are drained (default 1)"
    )
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500")
    parser.add_argument("--never-ready", action="store_true", help="never answer 200 on /healthz")
    parser.add_argument(
        "--fault-path",
        action="append",
        default=[],
        help="apply --delay-ms and --error-rate only to paths starting with this (repeatable); others take 2 ms",
    )
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (chain) file, PEM; needs --tls-key")
    parser.add_argument("--tls-key", help="the private key of --tls-cert, PEM")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    return args


async def serve(args: argparse.Namespace) -> None:
    port = int(os.environ["PORT"])
    state = {"ready": False, "draining": False}
    body = f"hello from v{args.version}\n".encode()
    delay = args.delay_ms / 1000.0

    faulty = tuple(args.fault_path)

    async def index(request: web.Request) -> web.Response:
        hit = not faulty or request.path.startswith(faulty)
        wait = delay if hit else 0.002
        if wait > 0:
            await asyncio.sleep(wait)
        if hit and args.error_rate and random.random() < args.error_rate:
            response = web.Response(status=500, text="injected error\n")
        else:
            response = web.Response(body=body, headers={"X-Version": args.version})
        if args.no_keep_alive or state["draining"]:
            response.force_close()  # Connection: close
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(status=200 if state["ready"] else 503, text="ok\n" if state["ready"] else "not ready\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    for path in ("/", "/search", "/cart", "/items/{id}"):  # a traffic mix's routes, with any method
        app.router.add_route("*", path, index)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    site = web.TCPSite(runner, args.host, port, ssl_context=tls)
    await site.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await asyncio.sleep(args.startup_s)
    state["ready"] = not args.never_ready
    await stop.wait()
    if args.on_sigterm == "drop":
        os._exit(0)  # the bad release: requests in flight die with their connections
    state["ready"] = False
    if args.on_sigterm == "shutdown":
        await asyncio.sleep(args.linger_s)  # still accepting and serving while the endpoint leaves
        await runner.cleanup()  # stop accepting, finish what is in flight, close idle keep-alive connections
        return
    if args.on_sigterm == "linger":
        await site.stop()  # no new connections; those open stay open, and keep being served
        await asyncio.sleep(args.linger_s)
        os._exit(0)  # the bad release: idle keep-alive connections were never closed; in-flight requests die
    await site.stop()  # stop accepting at once, as most servers do
    state["draining"] = True  # answer on open connections with "Connection: close", so clients leave them
    await asyncio.sleep(args.drain_s)
    await runner.cleanup()  # finish requests in flight, close the connections left (idle for drain_s)


def main() -> int:
    args = parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
