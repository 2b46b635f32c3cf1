"""Background scheduling of collector refreshes (queue scans, blocklist runs).

Each collector with an ``interval`` runs once at start-up and then every interval (plus up to
``jitter`` seconds), never overlapping itself; a missed run is coalesced, not queued.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from apscheduler.schedulers.background import BackgroundScheduler

from collectors.base import BaseCollector


class Scheduler:
    """Runs ``run_refresh`` of every scheduled collector in a background thread pool."""

    def __init__(self, collectors: Iterable[BaseCollector]) -> None:
        self._scheduler = BackgroundScheduler(timezone=dt.UTC, job_defaults={"misfire_grace_time": None})
        self.collectors = {c.id: c for c in collectors if c.interval}
        for collector in self.collectors.values():
            self._scheduler.add_job(
                collector.run_refresh, "interval", id=collector.id, seconds=collector.interval,
                jitter=collector.jitter or None, next_run_time=dt.datetime.now(dt.UTC),
                max_instances=1, coalesce=True,
            )

    def start(self) -> None:
        """Start the background thread; the first runs begin at once."""
        self._scheduler.start()

    def stop(self) -> None:
        """Stop scheduling; waits for runs in progress."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def run_now(self, collector_id: str) -> bool:
        """Ask for an immediate extra run (still never overlapping); False if unknown."""
        job = self._scheduler.get_job(collector_id)
        if job is None:
            return False
        job.modify(next_run_time=dt.datetime.now(dt.UTC))
        return True

    def next_run(self, collector_id: str) -> dt.datetime | None:
        """When the collector's next run is due."""
        job = self._scheduler.get_job(collector_id)
        return job.next_run_time if job else None
