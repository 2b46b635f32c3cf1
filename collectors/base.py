"""The contract every collector follows: families it emits, background jobs, HTTP routes, health.

A collector has an ``id`` (the ``collector`` label, the ``--collector.<id>`` flag, its module's
name), ``describe()`` naming the catalogue families it emits, ``families()`` rendering its latest
state as fresh metric families, and optionally ``refresh()``: background work (a queue scan, a
blocklist run) that the scheduler runs every ``interval`` seconds as a named :class:`Job`.
Scrapes never call ``refresh()``, so ``/metrics`` latency does not depend on queue size or DNS
latency. ``routes()`` adds JSON endpoints to the agent's HTTP server, each with its auth policy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from prometheus_client.metrics_core import Metric

from collectors.deadline import ReadCancelled
from collectors.families import Family

#: Seconds since the epoch; injected everywhere so tests can drive time.
Clock = Callable[[], float]


# -- what the scheduler runs ------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """Background work: ``run()`` once at start-up, then every ``interval`` (+ up to ``jitter``)
    seconds, never overlapping itself."""

    name: str
    interval: float
    run: Callable[[], object]
    jitter: float = 0.0


class Services(Protocol):
    """What the agent offers a collector's route handlers."""

    #: Every collector the agent runs (a route may show what several of them hold).
    collectors: Sequence[BaseCollector]

    def run_now(self, job: str) -> bool:
        """Ask for an extra run of the named job now; False if there is no such job."""
        ...


# -- what the HTTP server serves ---------------------------------------------------------------

class Auth(StrEnum):
    """Who may call a route."""

    NONE = "none"  # probes (Kubernetes httpGet carries no credentials); must reveal nothing
    WEB = "web"  # the web-config.yml basic auth, when configured
    BEARER = "bearer"  # ``Authorization: Bearer <token>`` (webhooks); refused when no token is configured


@dataclass(frozen=True)
class Request:
    """What a route handler sees. ``trusted``: the caller authenticated, or the operator turned
    address masking off; personal data (mail addresses) is shown in full only then."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    trusted: bool = False


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


@dataclass(frozen=True)
class Route:
    """``method path`` served by ``handler``; ``title`` puts a link on the landing page.

    ``writes``: the route changes state (runs a check, applies an action). The server then
    demands a JSON body (a cross-site form cannot send one) and, unless it is a bearer-token
    route, authentication or ``web.unauthenticated_writes: true``.
    """

    method: str
    path: str
    handler: Handler
    auth: Auth = Auth.WEB
    title: str | None = None
    writes: bool = False


# -- health ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HealthView:
    """A consistent copy of a collector's health, for the landing page and ``mtaq_collector_*``."""

    success: bool = False
    duration_seconds: float = 0.0
    last_run: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_time: float | None = None
    errors_total: int = 0


class CollectorHealth:
    """The only writer of a collector's health; every update and read takes its lock, whichever
    thread (scheduler, tailer, scrape) reports. Logs an error once until it changes or recovers."""

    def __init__(self, name: str, clock: Clock, log: logging.Logger) -> None:
        self._name = name
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self._view = HealthView()

    def succeeded(self, duration: float | None = None) -> None:
        """A run (or a check of a background source) went well."""
        with self._lock:
            view, now = self._view, self._clock()
            if not view.success and view.last_error:
                self._log.info("%s recovered", self._name)
            self._view = HealthView(True, view.duration_seconds if duration is None else duration, now, now,
                                    view.last_error, view.last_error_time, view.errors_total)

    def failed(self, error: BaseException | str, duration: float | None = None) -> None:
        """A run failed; ``error`` is what the landing page and the log show."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._lock:
            view, now = self._view, self._clock()
            if message != view.last_error or view.success:
                self._log.error("%s failed: %s", self._name, message)
            self._view = HealthView(False, view.duration_seconds if duration is None else duration, now,
                                    view.last_success, message, now, view.errors_total + 1)

    def observe_duration(self, seconds: float) -> None:
        """How long the latest unit of work took (a batch of log lines, say)."""
        with self._lock:
            v = self._view
            self._view = HealthView(v.success, seconds, v.last_run, v.last_success, v.last_error,
                                    v.last_error_time, v.errors_total)

    def view(self) -> HealthView:
        """The health now."""
        with self._lock:
            return self._view


# -- the collector -----------------------------------------------------------------------------

class BaseCollector(ABC):
    """Base class: health bookkeeping and exception capture around ``refresh()``.

    Subclasses implement ``describe()`` and ``families()``, set ``interval`` (seconds between
    refreshes; ``None`` for collectors fed by a thread of their own) and may implement
    ``refresh()``, ``start()``, ``stop()``, ``routes()`` and ``sources()``.
    """

    interval: float | None = None
    jitter: float = 0.0

    def __init__(self, collector_id: str, clock: Clock = time.time) -> None:
        self.id = collector_id
        self.clock = clock
        self.log = logging.getLogger(f"mtaq.{collector_id}")
        self.health = CollectorHealth(collector_id, clock, self.log)
        self._refresh_lock = threading.Lock()

    @abstractmethod
    def describe(self) -> tuple[Family, ...]:
        """The catalogue families ``families()`` may emit."""

    @abstractmethod
    def families(self) -> Iterable[Metric]:
        """Render the latest state as new metric families (called on every scrape)."""

    def refresh(self) -> None:
        """Do the collector's background work; raise on failure. Default: nothing to do."""

    def run_refresh(self) -> bool:
        """Run ``refresh()`` once, never concurrently with itself, and record the outcome.

        Exceptions become a failed health record and one log line per distinct error, never an
        escape into the scheduler or HTTP thread. Returns whether the refresh succeeded.
        """
        with self._refresh_lock:
            start = time.monotonic()
            try:
                self.refresh()
            except ReadCancelled:  # the agent is stopping: not a failure of the source
                return False
            except Exception as exc:
                self.health.failed(exc, time.monotonic() - start)
                return False
            self.health.succeeded(time.monotonic() - start)
            return True

    def jobs(self) -> list[Job]:
        """Background jobs: by default ``run_refresh`` every ``interval`` seconds, when set."""
        if not self.interval:
            return []
        return [Job(self.id, self.interval, self.run_refresh, self.jitter)]

    def routes(self, services: Services) -> list[Route]:
        """HTTP routes this collector adds (none by default)."""
        return []

    def sources(self) -> list[str]:
        """What it reads, one phrase each, for the start-up log and the status page."""
        return []

    def preflight(self) -> list[str]:
        """Problems with its sources that ``check-config`` reports (a configured path that does
        not exist, a log that cannot be read); the agent itself waits for them to go away."""
        return []

    def start(self) -> None:
        """Start background threads, if any."""

    def stop(self) -> None:
        """Stop background threads, if any."""
