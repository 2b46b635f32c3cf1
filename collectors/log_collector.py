"""The MTA-neutral mail log collector: tail the log, run it through an MTA's :class:`LogFormat`,
render the accounting.

Data path: the ``Tailer`` hands raw lines to a ``LogProcessor`` (the MTA's parser and record
adapter, per-instance delivery accounting, line counts per source), and ``families()`` renders
the latest snapshots with ``log_metrics``. Health is checked every few seconds by a job (a
missing or unreadable log turns ``mtaq_collector_success`` to 0); the duration is that of the
last batch of lines. ``GET /api/v1/dead-letters`` lists the last expired messages.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Literal, Protocol

from prometheus_client.metrics_core import Metric
from pydantic import Field

from collectors import families as F
from collectors.base import BaseCollector, Clock, Job, Request, Response, Route, Services
from collectors.classify import Classifier
from collectors.delivery_accounting import DEFAULT_MAX_MESSAGES, AccountingSnapshot, DeadLetter
from collectors.log_metrics import LogSourceStats, log_families
from collectors.log_pipeline import LogFormat, LogProcessor
from collectors.settings import Duration, StrictModel
from collectors.tailer import SourceStats, Tailer

#: Seconds between checks of the log sources' health.
HEALTH_INTERVAL = 5.0


class LogSection(StrictModel):
    """The ``log:`` section: which mail logs to tail and how."""

    paths: list[str] = Field(default_factory=list, description='mail logs to tail; "-" reads standard input')
    start_from: Literal["start", "end"] = Field(default="end", alias="from",
                                                description="where to begin a log without checkpoint")
    checkpoint_file: str | None = Field(default=None, description="inode + offset per file, for restarts")
    poll_interval: Duration = 0.25
    max_tracked_messages: int = Field(default=DEFAULT_MAX_MESSAGES, ge=1000,
                                      description="in-flight message states kept per MTA instance")


class TailerLike(Protocol):
    """What the collector needs from ``collectors.tailer.Tailer`` (tests pass a fake)."""

    stats: Mapping[str, SourceStats]
    checkpoint_error: str | None
    checkpoint_write_errors: int

    def start(self) -> None: ...

    def stop(self) -> None: ...


TailerFactory = Callable[..., TailerLike]


def mask_address(address: str | None) -> str | None:
    """``john@example.com`` -> ``j***@example.com``: the domain stays (it names the provider),
    the person does not."""
    if not address:
        return address
    local, at, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if at else f"{address[:1]}***"


def dead_letters_payload(dead_letters: Iterable[DeadLetter], *, mask: bool) -> dict[str, object]:
    """The dead-letter API document: newest first, with the failure context of each; sender and
    recipients masked when ``mask``."""
    documents = []
    for d in sorted(dead_letters, key=lambda d: -d.expired_at):
        document = dataclasses.asdict(d)
        if mask:
            document["sender"] = mask_address(d.sender)
            document["recipients"] = [mask_address(r) for r in d.recipients]
        documents.append(document)
    return {"dead_letters": documents, "addresses_masked": mask}


def _unreadable(path: str) -> str | None:
    """Why ``path`` cannot be tailed, or None."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


class LogCollector(BaseCollector):
    """Follows mail logs in the background; scrapes render the accumulated counters."""

    def __init__(self, collector_id: str, log_format: LogFormat, paths: Sequence[str], classifier: Classifier, *,
                 checkpoint_path: str | None, start_at: Literal["end", "start"] = "end", clock: Clock = time.time,
                 tailer_factory: TailerFactory = Tailer, poll_interval: float = 0.25,
                 max_tracked_messages: int = DEFAULT_MAX_MESSAGES, instances: Iterable[str] = ()) -> None:
        super().__init__(collector_id, clock)
        self.mta = log_format.mta
        self._paths = list(paths)
        self._checkpoint_path = checkpoint_path
        self._lanes = classifier.lane_names
        self._processor = LogProcessor(log_format, classifier, clock=clock, max_tracked_messages=max_tracked_messages,
                                       instances=instances)
        self._last_read: dict[str, float] = {}
        self._tailer = tailer_factory(self._paths, self._sink, checkpoint_path=checkpoint_path,
                                      start_at=start_at, clock=clock, poll_interval=poll_interval)

    def describe(self) -> tuple[F.Family, ...]:
        """The delivery-log families of the catalogue."""
        return F.DELIVERY_LOG

    def sources(self) -> list[str]:
        """The tailed logs and the checkpoint file."""
        where = f", checkpoint {self._checkpoint_path}" if self._checkpoint_path else ", no checkpoint"
        return [f"{self.mta} log {'standard input' if p == '-' else p}{where}" for p in self._paths]

    def preflight(self) -> list[str]:
        """Logs that cannot be read, a checkpoint directory that cannot be written."""
        problems = [f"mail log {path}: {why}" for path in self._paths if path != "-"
                    for why in [_unreadable(path)] if why]
        if self._checkpoint_path:
            directory = os.path.dirname(os.path.abspath(self._checkpoint_path))
            if not os.access(directory, os.W_OK | os.X_OK):
                problems.append(f"checkpoint {self._checkpoint_path}: directory {directory} is not writable "
                                "or does not exist")
        return problems

    def jobs(self) -> list[Job]:
        """A health check of the tailed sources every few seconds."""
        return [Job(self.id, HEALTH_INTERVAL, self.check_sources)]

    def routes(self, services: Services) -> list[Route]:
        """``GET /api/v1/dead-letters``: the dead letters of every mail log the agent tails (each log
        collector offers the same route; the agent serves it once)."""
        def dead_letters(request: Request) -> Response:
            logs = [c for c in services.collectors if isinstance(c, LogCollector)] or [self]
            letters = (d for c in logs for s in c.snapshots().values() for d in s.dead_letter_log)
            return Response.json(dead_letters_payload(letters, mask=not request.trusted))

        return [Route("GET", "/api/v1/dead-letters", dead_letters, title="Dead letters (JSON)")]

    def start(self) -> None:
        """Start tailing."""
        self._tailer.start()

    def stop(self) -> None:
        """Stop tailing (the tailer writes its final checkpoint)."""
        self._tailer.stop()

    def _sink(self, source: str, lines: list[bytes]) -> None:
        # Lines never contain b"\n" and UTF-8 decoding cannot swallow one, so decoding the
        # batch at once keeps line boundaries and is much cheaper than decoding line by line.
        if lines:
            self.process_lines(source, b"\n".join(lines).decode("utf-8", "replace").split("\n"))

    def process_lines(self, source: str, lines: Iterable[str]) -> None:
        """Account decoded ``lines`` from ``source`` (the tailer's sink; also usable offline)."""
        start = time.monotonic()
        self._processor.process_lines(source, lines)
        self._last_read[source] = self.clock()
        self.health.observe_duration(time.monotonic() - start)

    def check_sources(self) -> None:
        """Record the collector healthy unless a tailed source or the checkpoint reports an error."""
        errors = [f"{source}: {stats.last_error}" for source, stats in self._tailer.stats.items()
                  if stats.last_error]
        if self._tailer.checkpoint_error:
            errors.append(self._tailer.checkpoint_error)
        if errors:
            self.health.failed("; ".join(errors))
        else:
            self.health.succeeded()

    def snapshots(self) -> Mapping[str, AccountingSnapshot]:
        """The accounting state now, by ``mta_instance`` (dead-letter log and reply samples included)."""
        return self._processor.accounts.snapshots()

    def families(self) -> Iterator[Metric]:
        """Render the delivery counters, per-source line statistics and checkpoint failures."""
        yield from log_families(self.snapshots(), self._source_stats(), self._lanes, self.mta)
        checkpoint_errors = F.CHECKPOINT_ERRORS.new()
        checkpoint_errors.add_metric([self.mta], self._tailer.checkpoint_write_errors)
        yield checkpoint_errors

    def _source_stats(self) -> dict[str, LogSourceStats]:
        counts = self._processor.line_counts()
        tailed = self._tailer.stats
        stats = {}
        for source in dict.fromkeys([*self._paths, *counts]):
            tail = tailed.get(source)
            last = tail.last_line_time if tail is not None else None
            stats[source] = LogSourceStats(
                lines=counts.get(source, {}),
                reopens=tail.reopens if tail is not None else 0,
                last_line_time=last if last is not None else self._last_read.get(source),
            )
        return stats
