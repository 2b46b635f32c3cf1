"""The HTTP server: a route table with a per-route auth policy, served from a background thread.

It knows routes, not collectors: the agent hands it its own routes (``/metrics``, ``/healthz``,
``/readyz``, ``/``, ``/api/v1/status``) and those the collectors declare. Each route says who
may call it (``collectors.base.Auth``): nobody needs credentials for probes, the web-config
basic auth guards the rest when configured, bearer-token routes need the configured token.
"""

from __future__ import annotations

import hmac
import logging
import ssl
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from collectors.base import Auth, Request, Response, Route
from collectors.settings import StrictModel, parse_host_port
from exporter import __version__
from exporter.web_config import BasicAuth

log = logging.getLogger("mtaq.http")

#: Largest request body read; anything longer is cut (the hardening issue turns that into 413).
MAX_BODY = 1 << 20


def _listen_address(value: str) -> str:
    parse_host_port(value, allow_port_zero=True)
    return value


ListenAddress = Annotated[str, BeforeValidator(str), AfterValidator(_listen_address)]


class WebSection(StrictModel):
    """The ``web:`` section: where to listen, the metrics path, optional TLS/basic auth."""

    listen_address: ListenAddress = Field(default=":10154", description="[host]:port; port 0 picks a free one")
    telemetry_path: str = "/metrics"
    config_file: str | None = Field(default=None, description="exporter-toolkit web-config.yml: TLS, basic auth")

    @field_validator("telemetry_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/", "/healthz", "/readyz"):
            raise ValueError(f"expected a path like /metrics that no other page uses, got {value!r}")
        return value

    def endpoint(self) -> tuple[str, int]:
        """(host, port) to bind; an empty host means every address."""
        return parse_host_port(self.listen_address, allow_port_zero=True)


class HTTPServer:
    """Dispatches requests to routes; no credentials 401, unknown paths 404, wrong methods 405,
    handler crashes 500."""

    def __init__(self, routes: Sequence[Route], *, basic_auth: BasicAuth | None = None,
                 bearer_token: str | None = None) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        for route in routes:
            key = (route.method, route.path)
            if key in self.routes:
                raise ValueError(f"two handlers for {route.method} {route.path}")
            self.routes[key] = route
        self.basic_auth = basic_auth
        self.bearer_token = bearer_token
        self._server: ThreadingHTTPServer | None = None

    def _authorized(self, route: Route, header: str | None) -> bool:
        if route.auth is Auth.NONE:
            return True
        if route.auth is Auth.BEARER:
            if self.bearer_token is None or not header or not header.startswith("Bearer "):
                return False
            return hmac.compare_digest(header[7:].encode(), self.bearer_token.encode())
        return self.basic_auth is None or self.basic_auth.allows(header)

    def dispatch(self, request: Request) -> Response:
        """Route a request."""
        route = self.routes.get((request.method, request.path))
        if route is None:
            if self.basic_auth is not None and not self.basic_auth.allows(request.headers.get("authorization")):
                return Response(401, b"unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="mtaq-exporter"'})
            allowed = sorted(m for (m, p) in self.routes if p == request.path)
            if allowed:
                return Response(405, b"method not allowed\n", headers={"Allow": ", ".join(allowed)})
            return Response(404, b"not found\n")
        if not self._authorized(route, request.headers.get("authorization")):
            challenge = 'Bearer realm="mtaq-exporter"' if route.auth is Auth.BEARER else 'Basic realm="mtaq-exporter"'
            return Response(401, b"unauthorized\n", headers={"WWW-Authenticate": challenge})
        try:
            return route.handler(request)
        except Exception:
            log.exception("handler for %s %s failed", request.method, request.path)
            return Response(500, b"internal error\n")

    def serve(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
        """Start serving in a background thread; returns the server (its port may be 0 → chosen)."""
        dispatch = self.dispatch

        class _Handler(BaseHTTPRequestHandler):
            server_version = f"mtaq-exporter/{__version__}"
            protocol_version = "HTTP/1.1"
            timeout = 60  # idle keep-alive connections and stalled clients are dropped

            def _handle(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, MAX_BODY)) if length else b""
                request = Request(self.command, path, query, {k.lower(): v for k, v in self.headers.items()}, body)
                response = dispatch(request)
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):  # type: ignore[no-untyped-def]
                if tls is None:
                    super().finish_request(request, client_address)
                    return
                # The TLS handshake runs here, in the request's own thread, so a slow or broken
                # client cannot stall the accept loop.
                request.settimeout(_Handler.timeout)
                try:
                    wrapped = tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.debug("TLS handshake with %s failed: %s", client_address, exc)
                    return
                try:
                    super().finish_request(wrapped, client_address)
                finally:
                    wrapped.close()

        server = _Server((host, port), _Handler)
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
        self._server = server
        return server

    def shutdown(self) -> None:
        """Stop serving."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
