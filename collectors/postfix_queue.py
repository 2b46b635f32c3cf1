"""Collector ``postfix_queue``: every configured Postfix instance's queue, through showq or its spool.

The MTA-neutral :class:`~collectors.queue_collector.QueueCollector` with one reader per
``postfix.instances[]`` entry: :class:`~collectors.postfix.instance.PostfixQueueReader` (showq,
the default) or, with ``queue_source: spool``, the incremental
:class:`~collectors.postfix.spool.SpoolQueueReader`. A spool source whose directories exist but
cannot be read from here stops the agent at start (exit 2): that never fixes itself.
Sample output::

    mtaq_up{mta="postfix",mta_instance="postfix"} 1.0
    mtaq_queue_messages{lane="normal",mta="postfix",mta_instance="postfix",queue="deferred"} 2.0
"""

from __future__ import annotations

from collectors.postfix.instance import MTA, PostfixSection, postfix_present, queue_reader
from collectors.postfix.showq import POSTFIX_QUEUES
from collectors.postfix.spool import SpoolQueueReader
from collectors.queue_collector import QueueCollector
from collectors.settings import ConfigError
from collectors.spec import BuildContext, CollectorSpec, Flag

ID = "postfix_queue"


def _build(ctx: BuildContext) -> QueueCollector:
    section: PostfixSection = ctx.config.postfix
    readers = [queue_reader(i) for i in section.instances]
    problems = [f"postfix.instances[{n}].queue_source: spool: {problem}" for n, reader in enumerate(readers)
                if isinstance(reader, SpoolQueueReader) for problem in reader.access_problems()]
    if problems:
        raise ConfigError(problems)
    return QueueCollector(ID, MTA, readers, ctx.classifier, POSTFIX_QUEUES,
                          interval=section.queue_scan_interval, read_timeout=section.queue_read_timeout)


SPEC = CollectorSpec(
    id=ID,
    reads="Postfix `showq` socket (fallback `postqueue -j`) or, with `queue_source: spool`, the queue directories "
          "of each instance, every 30 s in the background",
    section="postfix",
    model=PostfixSection,
    enabled=lambda section: section.enabled if section.enabled is not None else postfix_present(),
    default="on when Postfix is found (`postfix.enabled`)",
    needs="`postdrop` group, or the Postfix binaries; the spool source: Postfix's uid or root",
    factory=_build,
    flags=(
        Flag("--postfix.showq-path", "postfix.instances[0].showq_path", "Postfix showq socket of the instance",
             metavar="PATH"),
        Flag("--postfix.config-dir", "postfix.instances[0].config_dir",
             "Postfix configuration directory of the instance", metavar="DIR"),
        Flag("--postfix.queue-source", "postfix.instances[0].queue_source",
             "read the instance's queue through showq (default) or from its spool directories, incrementally",
             choices=("showq", "spool")),
    ),
)
