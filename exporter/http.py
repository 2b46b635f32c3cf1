"""HTTP server: ``/metrics``, ``/healthz``, ``/readyz``, the landing page and JSON APIs.

A threading server from the standard library with a small route table: concurrent scrapes are
safe because collectors only render state that background work prepared. Other parts of the
agent add routes (the blocklist API, later the Alertmanager webhook) with ``add_route``.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest

from collectors.base import BaseCollector
from exporter import __version__
from exporter.web_config import BasicAuth

log = logging.getLogger("mtaq.http")
# The classic text format that generate_latest writes; older Prometheus servers (Debian's 2.42)
# do not know the 1.0.0 content type newer client libraries announce.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Request:
    """What a route handler sees."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    """What a route handler returns."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: object, status: int = 200) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(payload, indent=2, default=str).encode(), "application/json")


Handler = Callable[[Request], Response]


class AgentHTTP:
    """The agent's HTTP endpoints over a set of collectors and a registry."""

    # Probes carry no credentials (Kubernetes httpGet) and these two reveal nothing.
    UNAUTHENTICATED = ("/healthz", "/readyz")

    def __init__(self, registry: CollectorRegistry, collectors: Sequence[BaseCollector], *,
                 telemetry_path: str = "/metrics", title: str = "mtaq-exporter",
                 auth: BasicAuth | None = None) -> None:
        self.registry = registry
        self.auth = auth
        self.collectors = collectors
        self.telemetry_path = telemetry_path
        self.title = title
        self.started = time.time()
        self.routes: dict[tuple[str, str], Handler] = {}
        self.links: list[tuple[str, str]] = [(telemetry_path, "Metrics")]
        self.add_route("GET", "/", self.landing)
        self.add_route("GET", telemetry_path, self.metrics)
        self.add_route("GET", "/healthz", lambda _r: Response(200, b"ok\n"))
        self.add_route("GET", "/readyz", self.ready)
        self.add_route("GET", "/api/v1/status", lambda _r: Response.json(self.status()))
        self._server: ThreadingHTTPServer | None = None

    def add_route(self, method: str, path: str, handler: Handler, link: str | None = None) -> None:
        """Serve ``handler`` at ``method path``; ``link`` puts it on the landing page."""
        self.routes[(method, path)] = handler
        if link:
            self.links.append((path, link))

    def metrics(self, request: Request) -> Response:
        """The Prometheus text exposition, gzip-compressed when the client accepts it."""
        body = generate_latest(self.registry)
        headers = {}
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return Response(200, body, METRICS_CONTENT_TYPE, headers)

    def ready(self, _request: Request) -> Response:
        """Ready once every scheduled collector has finished its first run."""
        waiting = [c.id for c in self.collectors if c.interval and c.health.last_run is None]
        if waiting:
            return Response(503, f"waiting for first run of: {', '.join(waiting)}\n".encode())
        return Response(200, b"ready\n")

    def status(self) -> dict[str, object]:
        """Collector states and last errors (the landing page's data)."""
        return {
            "version": __version__,
            "started": self.started,
            "collectors": {
                c.id: {
                    "success": c.health.success,
                    "last_run": c.health.last_run,
                    "last_success": c.health.last_success,
                    "duration_seconds": round(c.health.duration_seconds, 6),
                    "errors_total": c.health.errors_total,
                    "last_error": c.health.last_error,
                    "last_error_time": c.health.last_error_time,
                }
                for c in self.collectors
            },
        }

    def landing(self, _request: Request) -> Response:
        """A small HTML page: links, each collector's state and its last error."""
        rows = []
        for c in self.collectors:
            h = c.health
            state = "ok" if h.success else ("waiting" if h.last_run is None and not h.last_error else "FAILING")
            error = html.escape(h.last_error or "")
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(h.last_error_time)) if h.last_error_time else ""
            rows.append(f"<tr><td>{c.id}</td><td class='{state.lower()}'>{state}</td>"
                        f"<td>{h.errors_total}</td><td>{when}</td><td>{error}</td></tr>")
        links = "".join(f"<li><a href='{path}'>{html.escape(name)}</a></li>" for path, name in self.links)
        page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{self.title}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
.ok{{color:green}}.failing{{color:#b00;font-weight:bold}}.waiting{{color:#a60}}</style></head>
<body><h1>{self.title}</h1><p>Version {__version__}</p><ul>{links}</ul>
<h2>Collectors</h2><table><tr><th>collector</th><th>state</th><th>errors</th><th>last error at (UTC)</th>
<th>last error</th></tr>{"".join(rows)}</table></body></html>"""
        return Response(200, page.encode(), "text/html; charset=utf-8")

    def dispatch(self, request: Request) -> Response:
        """Route a request; no credentials 401, unknown paths 404, wrong methods 405, crashes 500."""
        if (self.auth is not None and request.path not in self.UNAUTHENTICATED
                and not self.auth.allows(request.headers.get("authorization"))):
            return Response(401, b"unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="mtaq-exporter"'})
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            allowed = sorted(m for (m, p) in self.routes if p == request.path)
            if allowed:
                return Response(405, b"method not allowed\n", headers={"Allow": ", ".join(allowed)})
            return Response(404, b"not found\n")
        try:
            return handler(request)
        except Exception:
            log.exception("handler for %s %s failed", request.method, request.path)
            return Response(500, b"internal error\n")

    def serve(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
        """Start serving in a background thread; returns the server (its port may be 0 → chosen)."""
        agent = self

        class _Handler(BaseHTTPRequestHandler):
            server_version = f"mtaq-exporter/{__version__}"
            protocol_version = "HTTP/1.1"
            timeout = 60  # idle keep-alive connections and stalled clients are dropped

            def _handle(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1 << 20)) if length else b""
                request = Request(self.command, path, query,
                                  {k.lower(): v for k, v in self.headers.items()}, body)
                response = agent.dispatch(request)
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
