"""Collector ``postfix_queue``: every configured Postfix instance's queue, through showq.

The MTA-neutral :class:`~collectors.queue_collector.QueueCollector` with one
:class:`~collectors.postfix.instance.PostfixQueueReader` per ``postfix.instances[]`` entry.
Sample output::

    mtaq_up{mta="postfix",mta_instance="postfix"} 1.0
    mtaq_queue_messages{lane="normal",mta="postfix",mta_instance="postfix",queue="deferred"} 2.0
"""

from __future__ import annotations

from collectors.postfix.instance import MTA, PostfixQueueReader, PostfixSection, postfix_present
from collectors.postfix.showq import POSTFIX_QUEUES
from collectors.queue_collector import QueueCollector
from collectors.spec import BuildContext, CollectorSpec, Flag

ID = "postfix_queue"


def _build(ctx: BuildContext) -> QueueCollector:
    section: PostfixSection = ctx.config.postfix
    return QueueCollector(ID, MTA, [PostfixQueueReader(i) for i in section.instances], ctx.classifier, POSTFIX_QUEUES,
                          interval=section.queue_scan_interval, read_timeout=section.queue_read_timeout)


SPEC = CollectorSpec(
    id=ID,
    reads="Postfix `showq` socket (fallback `postqueue -j`) of each instance, every 30 s in the background",
    section="postfix",
    model=PostfixSection,
    enabled=lambda section: section.enabled if section.enabled is not None else postfix_present(),
    default="on when Postfix is found (`postfix.enabled`)",
    needs="`postdrop` group, or the Postfix binaries",
    factory=_build,
    flags=(
        Flag("--postfix.showq-path", "postfix.instances[0].showq_path", "Postfix showq socket of the instance",
             metavar="PATH"),
        Flag("--postfix.config-dir", "postfix.instances[0].config_dir",
             "Postfix configuration directory of the instance", metavar="DIR"),
    ),
)
