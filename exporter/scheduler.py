"""Background scheduling of named jobs (queue scans, blocklist runs, health checks, …).

Each job runs once at start-up and then every interval (plus up to ``jitter`` seconds), never
overlapping itself; a missed run is coalesced, not queued. Jobs come from the collectors and,
later, from other parts of the agent (action expiry, ledger retention): the scheduler only
knows their names.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from apscheduler.schedulers.background import BackgroundScheduler

from collectors.base import Job

# APScheduler logs every run at INFO: thousands of lines a day that say nothing.
logging.getLogger("apscheduler").setLevel(logging.WARNING)


class Scheduler:
    """Runs jobs in a background thread pool."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self._scheduler = BackgroundScheduler(timezone=dt.UTC, job_defaults={"misfire_grace_time": None})
        names: set[str] = set()
        for job in jobs:
            if job.name in names:
                raise ValueError(f"two jobs named {job.name!r}")
            names.add(job.name)
            self._scheduler.add_job(
                job.run, "interval", id=job.name, seconds=job.interval, jitter=job.jitter or None,
                next_run_time=dt.datetime.now(dt.UTC), max_instances=1, coalesce=True,
            )

    def start(self) -> None:
        """Start the background thread; the first runs begin at once."""
        self._scheduler.start()

    def stop(self) -> None:
        """Stop scheduling; waits for runs in progress."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def run_now(self, name: str) -> bool:
        """Ask for an immediate extra run (still never overlapping); False if unknown."""
        job = self._scheduler.get_job(name)
        if job is None:
            return False
        job.modify(next_run_time=dt.datetime.now(dt.UTC))
        return True
