"""Collector ``postfix_log``: tails Postfix's mail log and accounts every delivery it reports.

The MTA-neutral :class:`~collectors.log_collector.LogCollector` with the Postfix log format
(``collectors/postfix/log_parse.py`` and ``log_events.py``). Sample output::

    mtaq_messages_received_total{lane="normal",mta="postfix",mta_instance="postfix"} 1520.0
    mtaq_delivery_attempts_total{lane="normal",mta="postfix",mta_instance="postfix",provider="google",status="sent"} 1410.0
    mtaq_deferrals_total{mta="postfix",mta_instance="postfix",provider="google",reason="rate_limited"} 37.0
    mtaq_log_lines_total{mta="postfix",result="parsed",source="/var/log/mail.log"} 10873.0
"""  # noqa: E501 - sample exposition lines are kept whole

from __future__ import annotations

from collectors.log_collector import LogCollector, LogSection
from collectors.postfix.log_events import POSTFIX_LOG
from collectors.spec import BuildContext, CollectorSpec, Flag

ID = "postfix_log"


def _build(ctx: BuildContext) -> LogCollector:
    section: LogSection = ctx.config.log
    return LogCollector(ID, POSTFIX_LOG, section.paths, ctx.classifier, checkpoint_path=section.checkpoint_file,
                        start_at=section.start_from, poll_interval=section.poll_interval,
                        max_tracked_messages=section.max_tracked_messages,
                        instances=[i.name for i in ctx.config.postfix.instances])


SPEC = CollectorSpec(
    id=ID,
    reads="the mail log file(s) in `log.paths` (or standard input), tailed continuously",
    section="log",
    model=LogSection,
    enabled=lambda section: bool(section.paths),
    default="on when `log.paths` is set",
    needs="read access to the log (`adm` group on Debian)",
    factory=_build,
    routes=(("GET", "/api/v1/dead-letters"),),
    disabled="no mail log configured: set log.paths (or --log.path) to tail one, or exim.instances[].log_path",
    flags=(
        Flag("--log.path", "log.paths", "mail log to tail (repeatable; - for standard input)", metavar="PATH",
             repeatable=True),
        Flag("--log.from", "log.from", "where to begin a log without checkpoint", choices=("start", "end")),
    ),
)
