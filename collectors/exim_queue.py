"""Collector ``exim_queue``: every configured Exim instance's queue, from its spool.

The MTA-neutral :class:`~collectors.queue_collector.QueueCollector` with one
:class:`~collectors.exim.instance.EximQueueReader` per ``exim.instances[]`` entry. Queues are
``queued`` and ``frozen``; recipients of ``queued`` messages with a defer reason in their message
log make ``mtaq_queue_deferred_recipients``. Sample output::

    mtaq_up{mta="exim",mta_instance="exim"} 1.0
    mtaq_queue_messages{lane="normal",mta="exim",mta_instance="exim",queue="frozen"} 1.0
    mtaq_queue_deferred_recipients{mta="exim",mta_instance="exim",provider="google",reason="rate_limited"} 4.0
"""

from __future__ import annotations

from collectors.exim.instance import MTA, EximQueueReader, EximSection
from collectors.exim.spool import EXIM_QUEUES, QUEUED
from collectors.queue_collector import QueueCollector
from collectors.spec import BuildContext, CollectorSpec, Flag

ID = "exim_queue"


def _build(ctx: BuildContext) -> QueueCollector:
    section: EximSection = ctx.config.exim
    return QueueCollector(ID, MTA, [EximQueueReader(i) for i in section.instances], ctx.classifier, EXIM_QUEUES,
                          interval=section.queue_scan_interval, read_timeout=section.queue_read_timeout,
                          deferred_queue=QUEUED)


SPEC = CollectorSpec(
    id=ID,
    reads="Exim spool (`input/`, `msglog/`; fallback `exim -bp`) of each instance, every 30 s in the background",
    section="exim",
    model=EximSection,
    enabled=lambda section: section.queue_enabled(),
    default="on when `exim.instances` is set (`--exim.spool-dir`)",
    needs="the Exim group (`Debian-exim`), or admin rights for `exim -bp`",
    factory=_build,
    flags=(
        Flag("--exim.spool-dir", "exim.instances[0].spool_directory", "Exim spool directory of the instance",
             metavar="DIR"),
    ),
)
