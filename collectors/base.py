"""The contract every collector follows, and the health record the agent reports for it.

A collector has an ``id`` (used as the ``collector`` label, the config section and the module
name), ``families()`` that renders its latest state as fresh metric families, and optionally
``refresh()``: background work (a queue scan, a blocklist run) that the scheduler calls every
``interval`` seconds. Scrapes never call ``refresh()``, so ``/metrics`` latency does not depend
on queue size or DNS latency.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

Clock = Callable[[], float]


@dataclass
class CollectorHealth:
    """What the landing page and ``mtaq_collector_*`` say about one collector."""

    success: bool = False
    duration_seconds: float = 0.0
    last_run: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_time: float | None = None
    errors_total: int = 0


class BaseCollector(ABC):
    """Base class: health bookkeeping and exception capture around ``refresh()``.

    Subclasses set ``id`` and ``interval`` (seconds between refreshes, ``None`` for collectors
    fed by a background thread of their own), implement ``families()``, and may implement
    ``refresh()``, ``start()`` and ``stop()``.
    """

    id: str = ""
    interval: float | None = None
    jitter: float = 0.0

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self.health = CollectorHealth()
        self.log = logging.getLogger(f"mtaq.{self.id or type(self).__name__}")
        self._refresh_lock = threading.Lock()

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
            except Exception as exc:
                self.record_failure(exc)
                ok = False
            else:
                self.record_success()
                ok = True
            self.health.duration_seconds = time.monotonic() - start
            self.health.last_run = self.clock()
            return ok

    def record_success(self) -> None:
        """Mark the collector healthy (for collectors that run their own threads)."""
        if not self.health.success and self.health.last_error:
            self.log.info("%s recovered", self.id)
        self.health.success = True
        self.health.last_success = self.clock()

    def record_failure(self, exc: BaseException | str) -> None:
        """Mark the collector failed; log the error once until it changes or recovers."""
        message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        if message != self.health.last_error or self.health.success:
            self.log.error("%s failed: %s", self.id, message)
        self.health.success = False
        self.health.last_error = message
        self.health.last_error_time = self.clock()
        self.health.errors_total += 1

    @abstractmethod
    def families(self) -> Iterable[Metric]:
        """Render the latest state as new metric families (called on every scrape)."""

    def start(self) -> None:
        """Start background threads, if any."""

    def stop(self) -> None:
        """Stop background threads, if any."""
