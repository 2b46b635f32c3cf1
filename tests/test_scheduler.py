"""Background scheduling: first run at start, interval and jitter, never overlapping, run-now."""

import datetime as dt
import threading
import time
from collections.abc import Iterator

from collectors.base import BaseCollector
from exporter.scheduler import Scheduler


class Slow(BaseCollector):
    id = "slow"

    def __init__(self, interval: float, jitter: float = 0) -> None:
        super().__init__()
        self.interval = interval
        self.jitter = jitter
        self.release = threading.Event()
        self.runs = 0
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def refresh(self) -> None:
        with self.lock:
            self.runs += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.release.wait(10)
        with self.lock:
            self.running -= 1

    def families(self) -> Iterator:
        return iter(())


class Passive(Slow):
    id = "passive"


def wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_first_run_at_start_and_no_overlap() -> None:
    slow = Slow(interval=0.05)
    scheduler = Scheduler([slow])
    scheduler.start()
    try:
        wait_for(lambda: slow.runs == 1)
        time.sleep(0.3)  # several intervals pass while the first run is still busy
        assert scheduler.run_now("slow")
        time.sleep(0.1)
        assert slow.runs == 1 and slow.max_running == 1
        slow.release.set()
        wait_for(lambda: slow.runs >= 2)
        assert slow.max_running == 1
    finally:
        slow.release.set()
        scheduler.stop()


def test_only_collectors_with_an_interval_are_scheduled() -> None:
    passive = Passive(interval=0)
    scheduler = Scheduler([passive, Slow(interval=3600, jitter=300)])
    assert set(scheduler.collectors) == {"slow"}
    assert not scheduler.run_now("passive")


def test_interval_and_jitter_bounds() -> None:
    slow = Slow(interval=3 * 3600, jitter=300)
    scheduler = Scheduler([slow])
    job = scheduler._scheduler.get_job("slow")
    assert job.trigger.interval == dt.timedelta(hours=3)
    assert job.trigger.jitter == 300
    assert job.max_instances == 1 and job.coalesce
    previous = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for _ in range(50):
        nxt = job.trigger.get_next_fire_time(previous, previous)
        delay = (nxt - previous).total_seconds()
        assert 3 * 3600 <= delay <= 3 * 3600 + 300
