"""The agent: the collectors the configuration turns on, their jobs, the registry and the HTTP server.

It loops over the collector table and never names a collector: each one brings its families
(checked against each other at start-up), its background jobs (for the scheduler) and its HTTP
routes (for the server, each with its auth policy).
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import generate_latest

from collectors.base import Auth, BaseCollector, Request, Response, Route
from collectors.classify import Classifier
from collectors.lane_objectives import LaneObjectivesCollector
from collectors.spec import BuildContext
from collectors.table import COLLECTORS
from exporter.actions import DISABLED as ACTIONS_DISABLED
from exporter.actions import ROUTES as ACTION_ROUTES
from exporter.actions import build_actions
from exporter.config import collector_enabled
from exporter.http import HTTPServer
from exporter.registry import build_registry, check_families
from exporter.scheduler import Scheduler
from exporter.status import landing_page, not_ready, status_document
from exporter.summary import Summary
from exporter.web_config import load_web_config

log = logging.getLogger("mtaq.agent")

# The classic text format that generate_latest writes; older Prometheus servers (Debian's 2.42)
# do not know the 1.0.0 content type newer client libraries announce.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def build_collectors(config: Any, classifier: Classifier) -> list[BaseCollector]:
    """The collectors ``config`` turns on, in table order, not yet started."""
    context = BuildContext(config, classifier)
    return [spec.factory(context) for spec in COLLECTORS if collector_enabled(config, spec)]


class Agent:
    """Collectors + scheduler + HTTP server; ``start()``, then ``stop()`` on shutdown."""

    def __init__(self, config: Any, collectors: Sequence[BaseCollector] | None = None, *,
                 banner: str | None = None) -> None:
        self.config = config
        self.classifier = Classifier(config)
        self.collectors = list(collectors) if collectors is not None else build_collectors(config, self.classifier)
        # The actions engine plugs in like a collector: its families, jobs, routes and health.
        self.actions = build_actions(config, self.classifier)
        if self.actions is not None:
            self.collectors.append(self.actions)
        check_families(self.collectors)
        objectives = config.lanes.resolved_objectives()
        self.registry = build_registry(self.collectors)
        self.registry.register(LaneObjectivesCollector(objectives))
        # The incident summary of "/" and /api/v1/status; ``banner`` tops the page (the demo says it is one).
        enabled = {c.id for c in self.collectors}
        self.summary = Summary(self.collectors, objectives, banner=banner,
                               disabled=[(s.id, s.default) for s in COLLECTORS if s.id not in enabled],
                               actions=self.actions.overview if self.actions is not None else None)
        self.scheduler = Scheduler([*(job for c in self.collectors for job in c.jobs()), self.summary.job()])
        self.tls, auth = load_web_config(config.web.config_file) if config.web.config_file else (None, None)
        routes = self._routes() + self._collector_routes()
        self.links = [(r.path, r.title) for r in routes if r.title and r.method == "GET"]
        web = config.web
        self.http = HTTPServer(routes, basic_auth=auth, unauthenticated_writes=web.unauthenticated_writes,
                               mask_addresses=web.mask_addresses, client_timeout=web.client_timeout,
                               bearer_token=self.actions.bearer_token if self.actions else None)
        self.started = time.time()
        self.stopped = threading.Event()
        self.port = 0

    def run_now(self, job: str) -> bool:
        """Ask the scheduler for an extra run of ``job`` (the ``Services`` collectors' routes use)."""
        return self.scheduler.run_now(job)

    def _routes(self) -> list[Route]:
        return [
            Route("GET", "/", lambda r: Response(200, landing_page(self.status(r.trusted), self.links),
                                                 "text/html; charset=utf-8")),
            Route("GET", self.config.web.telemetry_path, self._metrics, title="Metrics"),
            Route("GET", "/healthz", lambda _r: Response(200, b"ok\n"), Auth.NONE, title="Liveness"),
            Route("GET", "/readyz", self._ready, Auth.NONE, title="Readiness"),
            Route("GET", "/api/v1/status", lambda r: Response.json(self.status(r.trusted)), title="Status (JSON)"),
            *self._disabled_routes(),
        ]

    def _collector_routes(self) -> list[Route]:
        """The collectors' routes; one that several collectors offer (the dead letters of the
        Postfix and the Exim log) shows what all of them hold, and is served once."""
        routes: dict[tuple[str, str], Route] = {}
        for collector in self.collectors:
            for route in collector.routes(self):
                routes.setdefault((route.method, route.path), route)
        return list(routes.values())

    def _disabled_routes(self) -> list[Route]:
        """The routes of what is off (and not served by something that is on), each answering
        404 with how to turn it on."""
        enabled = {c.id for c in self.collectors}
        served = {route for spec in COLLECTORS if spec.id in enabled for route in spec.routes}
        off = [(spec.routes, spec.disabled) for spec in COLLECTORS if spec.id not in enabled]
        if self.actions is None:
            off.append((ACTION_ROUTES, ACTIONS_DISABLED))
        disabled: dict[tuple[str, str], Route] = {}
        for routes, why in off:
            for method, path in routes:
                if (method, path) not in served:
                    disabled.setdefault((method, path), Route(
                        method, path, lambda _r, why=why: Response(404, f"{why}\n".encode())))
        return list(disabled.values())

    def status(self, trusted: bool) -> dict[str, Any]:
        """The status document with the incident summary (addresses masked unless ``trusted``)."""
        return {**status_document(self.collectors, self.started), "summary": self.summary.document(trusted=trusted)}

    def _metrics(self, request: Request) -> Response:
        """The Prometheus text exposition, gzip-compressed when the client accepts it."""
        body = generate_latest(self.registry)
        headers = {}
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return Response(200, body, METRICS_CONTENT_TYPE, headers)

    def _ready(self, _request: Request) -> Response:
        """Ready once every required collector has run and its last run succeeded."""
        required = self.config.web.readiness_collectors
        problems = not_ready([c for c in self.collectors if required is None or c.id in required])
        if problems:
            return Response(503, ("not ready: " + "; ".join(problems) + "\n").encode())
        return Response(200, b"ready\n")

    def start(self) -> None:
        """Start collectors, scheduled jobs and the HTTP server; log what each collector reads."""
        if not self.collectors:
            log.warning("no collector is enabled: serving only the agent's own metrics")
        for collector in self.collectors:
            for source in collector.sources() or ["(no source)"]:
                log.info("collector %s: %s", collector.id, source)
            collector.start()
        self.scheduler.start()
        host, port = self.config.web.endpoint()
        self.port = self.http.serve(host, port, self.tls)
        log.info("listening on %s:%d", f"[{host}]" if ":" in host else host or "*", self.port)

    def stop(self) -> None:
        """Stop serving, abandon reads in progress, let collectors write their checkpoints."""
        self.http.shutdown()
        for collector in self.collectors:
            collector.stop()
        self.scheduler.stop()  # its jobs end at once: their collectors are stopping
        self.stopped.set()
