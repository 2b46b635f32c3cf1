"""The HTTP server: a route table with per-route policies, served by Hypercorn.

It knows routes, not collectors: the agent hands it its own routes (``/metrics``, ``/healthz``,
``/readyz``, ``/``, ``/api/v1/status``) and those the collectors declare. Each route says who may
call it (``collectors.base.Auth``): probes need no credentials, the web-config basic auth guards
the rest when configured, bearer-token routes need the configured token. Routes that change
state (``writes``) demand a JSON body and, without authentication configured, are refused
unless ``web.unauthenticated_writes`` allows them. Mail addresses are shown in full only to
trusted callers (``Request.trusted``).

Hypercorn (asyncio) parses requests: malformed ones get 400, headers are capped, a client that
stops sending is dropped after ``web.client_timeout``, and a slow client holds a coroutine, not a
thread. This module caps bodies (413), answers HEAD like GET without a body, and runs handlers in
a small thread pool so that a scrape never blocks the event loop. The listening socket is ours:
bound before the server starts (so a port in use is one clear error), IPv6 and IPv4, backlog
1024.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hmac
import logging
import socket
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from collectors.base import Auth, Request, Response, Route
from collectors.settings import Duration, StrictModel, parse_host_port
from exporter.web_config import BasicAuth

log = logging.getLogger("mtaq.http")

#: Largest request body accepted (413 above it); the largest legitimate one is an alert webhook.
MAX_BODY = 1 << 20
#: Largest request head (request line and headers) accepted.
MAX_HEAD = 16384
#: Listen backlog: a burst of scrapes (a fleet's Prometheus servers) must not overflow it.
BACKLOG = 1024
#: Threads that run route handlers; more requests wait for one (the event loop keeps reading).
HANDLER_THREADS = 8
#: The content type state-changing routes demand: a cross-site HTML form cannot send it.
JSON = "application/json"


class ListenError(Exception):
    """The listen address cannot be bound (in use, unknown host, not permitted)."""


def _listen_address(value: str) -> str:
    parse_host_port(value, allow_port_zero=True)
    return value


ListenAddress = Annotated[str, BeforeValidator(str), AfterValidator(_listen_address)]


class WebSection(StrictModel):
    """The ``web:`` section: where to listen, the metrics path, TLS/basic auth and safe defaults."""

    listen_address: ListenAddress = Field(default=":10154",
                                          description="[host]:port; [::1]:port for IPv6; port 0 picks a free one")
    telemetry_path: str = "/metrics"
    config_file: str | None = Field(default=None, description="exporter-toolkit web-config.yml: TLS, basic auth")
    client_timeout: Duration = Field(default=10.0, le=300,
                                     description="a client that sends nothing for this long is dropped")
    unauthenticated_writes: bool = Field(
        default=False, description="allow state-changing endpoints without basic auth configured")
    mask_addresses: bool | None = Field(
        default=None, description="mask mail addresses in API answers; null: unless basic auth is configured")
    readiness_collectors: list[str] | None = Field(
        default=None, description="collectors /readyz requires to be healthy; null: every enabled one")

    @field_validator("telemetry_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/", "/healthz", "/readyz"):
            raise ValueError(f"expected a path like /metrics that no other page uses, got {value!r}")
        return value

    def endpoint(self) -> tuple[str, int]:
        """(host, port) to bind; an empty host means every address."""
        return parse_host_port(self.listen_address, allow_port_zero=True)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (empty host: every IPv6 and IPv4 address).

    Raises ``ListenError`` with one line saying what is wrong.
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    try:
        if host:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        elif socket.has_ipv6:
            family, address = socket.AF_INET6, ("::", port)
        else:
            family, address = socket.AF_INET, ("0.0.0.0", port)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: unknown host ({exc.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {where}: {reason}") from None
    return sock


class HTTPServer:
    """Dispatches requests to routes and serves them."""

    def __init__(self, routes: Sequence[Route], *, basic_auth: BasicAuth | None = None,
                 bearer_token: str | None = None, unauthenticated_writes: bool = False,
                 mask_addresses: bool | None = None, client_timeout: float = 10.0) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        for route in routes:
            key = (route.method, route.path)
            if key in self.routes:
                raise ValueError(f"two handlers for {route.method} {route.path}")
            self.routes[key] = route
        self.basic_auth = basic_auth
        self.bearer_token = bearer_token
        self.unauthenticated_writes = unauthenticated_writes
        # Without credentials anybody who reaches the port reads the API: keep personal data out.
        self.mask_addresses = basic_auth is None if mask_addresses is None else mask_addresses
        self.client_timeout = client_timeout
        self._executor = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="http")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # -- routing and policies ----------------------------------------------------------------

    def _authorized(self, route: Route, header: str | None) -> bool:
        if route.auth is Auth.NONE:
            return True
        if route.auth is Auth.BEARER:
            if self.bearer_token is None or not header or not header.startswith("Bearer "):
                return False
            return hmac.compare_digest(header[7:].encode(), self.bearer_token.encode())
        return self.basic_auth is None or self.basic_auth.allows(header)

    def dispatch(self, request: Request) -> Response:
        """Route a request: 401 without valid credentials, 404/405 for unknown paths or methods,
        403/415 for state-changing routes the policy refuses, 500 when a handler crashes."""
        authorization = request.headers.get("authorization")
        route = self.routes.get(("GET" if request.method == "HEAD" else request.method, request.path))
        if route is None:
            if self.basic_auth is not None and not self.basic_auth.allows(authorization):
                return _unauthorized("Basic")
            allowed = sorted(m for (m, p) in self.routes if p == request.path)
            if allowed:
                return Response(405, b"method not allowed\n", headers={"Allow": ", ".join(allowed)})
            return Response(404, b"not found\n")
        if not self._authorized(route, authorization):
            return _unauthorized("Bearer" if route.auth is Auth.BEARER else "Basic")
        if route.writes:
            refused = self._refuse_write(route, request)
            if refused is not None:
                return refused
        try:
            return route.handler(dataclasses.replace(request, trusted=not self.mask_addresses))
        except Exception:
            log.exception("handler for %s %s failed", request.method, request.path)
            return Response(500, b"internal error\n")

    def _refuse_write(self, route: Route, request: Request) -> Response | None:
        if route.auth is Auth.WEB and self.basic_auth is None and not self.unauthenticated_writes:
            return Response(403, f"{request.method} {request.path} changes state: configure basic auth "
                                 "(web.config_file) or set web.unauthenticated_writes: true\n".encode())
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != JSON:
            return Response(415, f"{request.method} {request.path} takes a JSON body (Content-Type: {JSON})\n"
                            .encode())
        return None

    # -- serving -------------------------------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI application Hypercorn runs."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_body(headers, receive)
        if isinstance(body, Response):
            response = body
        else:
            request = Request(scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers, body)
            response = await asyncio.get_running_loop().run_in_executor(self._executor, self.dispatch, request)
        response_headers = [(b"Content-Type", response.content_type.encode()),
                            (b"Content-Length", str(len(response.body)).encode()),
                            *((k.encode(), v.encode()) for k, v in response.headers.items())]
        await send({"type": "http.response.start", "status": response.status, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else response.body})

    def serve(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Bind and start serving in a background thread; returns the port (0 picks a free one).

        Raises ``ListenError`` when the address cannot be bound.
        """
        sock = bind_socket(host, port)
        bound = sock.getsockname()[1]
        from hypercorn.asyncio import serve  # see _hypercorn_config

        config = _hypercorn_config(tls)
        config.bind = [f"fd://{sock.detach()}"]
        config.backlog = BACKLOG
        config.read_timeout = max(1, round(self.client_timeout))
        config.keep_alive_timeout = self.client_timeout
        config.h11_max_incomplete_size = MAX_HEAD
        config.include_server_header = False
        config.graceful_timeout = 1.0  # SIGTERM must end the agent within seconds
        config.accesslog = None
        config.errorlog = log
        started = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            started.set()
            await serve(self._app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="http", daemon=True)
        self._thread.start()
        started.wait()
        return bound

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop serving: no new connections, requests in progress get ``timeout`` seconds."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)


def _hypercorn_config(tls: ssl.SSLContext | None) -> Any:
    """Hypercorn's configuration with our TLS context (web-config.yml semantics: versions, client
    certificates) instead of one built from file names."""
    # Imported here: the commands that never serve (analyze, qshape, status, ...) start sooner.
    from hypercorn.config import Config

    class _Config(Config):
        @property
        def ssl_enabled(self) -> bool:
            return tls is not None

        def create_ssl_context(self) -> ssl.SSLContext | None:
            return tls

    return _Config()


async def _read_body(headers: dict[str, str], receive: Any) -> bytes | Response:
    """The request body, or the error response when it is larger than ``MAX_BODY``."""
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        return Response(413, f"request body larger than {MAX_BODY} bytes\n".encode())
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return Response(413, f"request body larger than {MAX_BODY} bytes\n".encode())
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _unauthorized(scheme: str) -> Response:
    return Response(401, b"unauthorized\n", headers={"WWW-Authenticate": f'{scheme} realm="mtaq-exporter"'})
