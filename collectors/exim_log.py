"""Collector ``exim_log``: tails each Exim instance's main log and accounts every delivery it reports.

The MTA-neutral :class:`~collectors.log_collector.LogCollector` with the Exim log format
(``collectors/exim/log_parse.py`` and ``log_events.py``). A main log belongs to one instance
(``exim.instances[].log_path``), so the instance of each line is that of its file. The ``log:``
settings ``from``, ``poll_interval`` and ``max_tracked_messages`` apply here too; the checkpoint
is ``exim.log_checkpoint_file`` (one file per tailer). Sample output::

    mtaq_delivery_attempts_total{lane="normal",mta="exim",mta_instance="exim",provider="google",status="deferred"} 12.0
    mtaq_self_deferrals_total{mta="exim",mta_instance="exim",reason="self"} 30.0
    mtaq_log_lines_total{mta="exim",result="parsed",source="/var/log/exim4/mainlog"} 4210.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from collectors.exim.instance import EximSection
from collectors.exim.log_events import EXIM_LOG
from collectors.exim.log_parse import EximLineParser
from collectors.log_collector import LogCollector, LogSection
from collectors.spec import BuildContext, CollectorSpec, Flag

ID = "exim_log"


class EximLogCollector(LogCollector):
    """A log collector whose lines take the instance of the file they come from."""

    def __init__(self, instance_of: Mapping[str, str], *args: Any, **kwargs: Any) -> None:
        """``instance_of``: main log path -> the instance it belongs to; the rest as for ``LogCollector``."""
        super().__init__(*args, **kwargs)
        self._instance_of = dict(instance_of)
        self._parser: EximLineParser = self._processor.parser  # type: ignore[assignment]

    def process_lines(self, source: str, lines: Iterable[str]) -> None:
        """Account ``lines`` of ``source`` under the instance whose main log it is."""
        self._parser.instance = self._instance_of.get(source)
        super().process_lines(source, lines)


def _build(ctx: BuildContext) -> EximLogCollector:
    section: EximSection = ctx.config.exim
    tailing: LogSection = ctx.config.log
    logs = {i.log_path: i.name for i in section.instances if i.log_path}
    return EximLogCollector(logs, ID, EXIM_LOG, list(logs), ctx.classifier, checkpoint_path=section.log_checkpoint_file,
                            start_at=tailing.start_from, poll_interval=tailing.poll_interval,
                            max_tracked_messages=tailing.max_tracked_messages,
                            instances=[i.name for i in section.instances])


SPEC = CollectorSpec(
    id=ID,
    reads="the main log of each Exim instance with a `log_path`, tailed continuously",
    section="exim",
    model=EximSection,
    enabled=lambda section: section.log_enabled(),
    default="on when an `exim.instances[]` entry has a `log_path` (`--exim.log-path`)",
    needs="read access to the log (`adm` group on Debian)",
    factory=_build,
    routes=(("GET", "/api/v1/dead-letters"),),
    disabled="no mail log configured: set log.paths (or --log.path) to tail one, or exim.instances[].log_path",
    flags=(
        Flag("--exim.log-path", "exim.instances[0].log_path", "Exim main log of the instance to tail",
             metavar="FILE"),
    ),
)
