"""Postfix queue collector: scans each instance's queue through showq in the background.

Sample output::

    mtaq_up{mta="postfix"} 1.0
    mtaq_queue_messages{lane="normal",queue="deferred"} 2.0
    mtaq_queue_oldest_message_timestamp_seconds{lane="normal",queue="deferred"} 1.7958e+09
    mtaq_queue_deferred_recipients{provider="google",reason="rate_limited"} 2.0
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from collectors.base import BaseCollector, Clock
from collectors.classify import Classifier
from collectors.queue_model import QueueMessage, QueueSnapshot, QueueTally, queue_families
from collectors.showq import POSTFIX_QUEUES, MailSystemDown, read_postqueue, read_showq_socket


@dataclass(frozen=True)
class PostfixInstance:
    """Where to read one Postfix instance's queue."""

    name: str
    showq_path: str
    config_dir: str | None = None
    postqueue: str = "postqueue"

    def postqueue_command(self) -> list[str]:
        """The ``postqueue -j`` fallback command for this instance."""
        command = [self.postqueue]
        if self.config_dir:
            command += ["-c", self.config_dir]
        return [*command, "-j"]


def postconf_value(name: str, config_dir: str | None = None) -> str:
    """Ask ``postconf`` for one parameter of an instance (raises when Postfix is absent)."""
    command = ["postconf", "-h"] + (["-c", config_dir] if config_dir else []) + [name]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout.strip()


Source = Callable[[PostfixInstance], Iterator[QueueMessage]]


def read_instance(instance: PostfixInstance) -> Iterator[QueueMessage]:
    """The showq socket, else ``postqueue -j`` when the socket cannot be reached from here.

    A refused connection on an existing socket means Postfix is stopped: that is reported as a
    failure, not papered over by postqueue's direct queue access. Errors name both attempts.
    """
    try:
        messages = read_showq_socket(instance.showq_path)
    except ConnectionRefusedError as exc:
        raise MailSystemDown(f"Postfix is not running (showq socket {instance.showq_path}: {exc})") from None
    except OSError as socket_error:
        try:
            yield from read_postqueue(instance.postqueue_command())
        except (OSError, subprocess.SubprocessError) as fallback_error:
            raise OSError(f"showq socket {instance.showq_path}: {socket_error}; "
                          f"fallback {' '.join(instance.postqueue_command())}: {fallback_error}") from None
        return
    yield from messages


class PostfixQueueCollector(BaseCollector):
    """Reads every configured instance's queue each ``interval`` seconds; scrapes see the last scan."""

    id = "postfix_queue"

    def __init__(self, instances: Iterable[PostfixInstance], classifier: Classifier, *,
                 interval: float = 30.0, clock: Clock = time.time, source: Source = read_instance) -> None:
        super().__init__(clock)
        self.instances = tuple(instances)
        self.interval = interval
        self.tally = QueueTally(classifier, POSTFIX_QUEUES)
        self.source = source
        self.snapshot: QueueSnapshot | None = None
        self.up = False

    def refresh(self) -> None:
        """Scan all instances; on any failure keep the previous snapshot and report down."""
        start = time.monotonic()
        snapshot = self.tally.new_snapshot()
        errors = []
        for instance in self.instances:
            try:
                for message in self.source(instance):
                    self.tally.add(snapshot, message, instance.name)
            except Exception as exc:
                errors.append(f"{instance.name}: {exc}")
        self.up = not errors
        if errors:
            raise OSError("; ".join(errors))
        snapshot.duration_seconds = time.monotonic() - start
        snapshot.scanned_at = self.clock()
        self.snapshot = snapshot

    def families(self) -> Iterator[Metric]:
        """``mtaq_up{mta="postfix"}`` and the queue gauges of the last successful scan."""
        up = GaugeMetricFamily("mtaq_up", "1 if the last read of the MTA's queue succeeded.", labels=["mta"])
        up.add_metric(["postfix"], 1 if self.up else 0)
        yield up
        yield from queue_families(self.snapshot, "Postfix showq")
