"""Background scheduling of named jobs: first run at start, interval and jitter, never
overlapping, run-now, and collectors' default jobs."""

import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest

from collectors.base import BaseCollector, Job
from collectors.families import Family
from exporter.scheduler import Scheduler
from tests.helpers import wait_until


class Slow:
    """A job body that blocks until released and records how many runs overlap."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.runs = 0
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.runs += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.release.wait(10)
        with self.lock:
            self.running -= 1


class Periodic(BaseCollector):
    def __init__(self, interval: float | None, jitter: float = 0) -> None:
        super().__init__("periodic")
        self.interval = interval
        self.jitter = jitter

    def describe(self) -> tuple[Family, ...]:
        return ()

    def families(self) -> Iterator:
        return iter(())


def test_first_run_at_start_and_no_overlap() -> None:
    slow = Slow()
    scheduler = Scheduler([Job("slow", 0.05, slow)])
    scheduler.start()
    try:
        wait_until(lambda: slow.runs == 1, 10, "the first run")
        time.sleep(0.3)  # several intervals pass while the first run is still busy
        assert scheduler.run_now("slow")
        time.sleep(0.1)
        assert slow.runs == 1 and slow.max_running == 1
        slow.release.set()
        wait_until(lambda: slow.runs >= 2, 10, "a second run")
        assert slow.max_running == 1
    finally:
        slow.release.set()
        scheduler.stop()


def test_collectors_without_an_interval_have_no_job() -> None:
    assert Periodic(interval=None).jobs() == []
    job, = Periodic(interval=3600, jitter=300).jobs()
    assert (job.name, job.interval, job.jitter) == ("periodic", 3600, 300)
    scheduler = Scheduler([job])
    assert not scheduler.run_now("another")


def test_job_names_are_unique() -> None:
    with pytest.raises(ValueError, match="two jobs named 'x'"):
        Scheduler([Job("x", 1, lambda: None), Job("x", 2, lambda: None)])


def test_interval_and_jitter_bounds() -> None:
    scheduler = Scheduler([Job("slow", 3 * 3600, lambda: None, jitter=300)])
    job = scheduler._scheduler.get_job("slow")
    assert job.trigger.interval == dt.timedelta(hours=3)
    assert job.trigger.jitter == 300
    assert job.max_instances == 1 and job.coalesce
    previous = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for _ in range(50):
        nxt = job.trigger.get_next_fire_time(previous, previous)
        delay = (nxt - previous).total_seconds()
        assert 3 * 3600 <= delay <= 3 * 3600 + 300
