"""The collector table: every collector the agent can run, in the order it runs and lists them.

Adding a collector is adding its module here; nothing else in the agent names it.
"""

from __future__ import annotations

from collectors import dnsbl, exim_log, exim_queue, postfix_log, postfix_queue
from collectors.spec import CollectorSpec

COLLECTORS: tuple[CollectorSpec, ...] = (postfix_queue.SPEC, postfix_log.SPEC, exim_queue.SPEC, exim_log.SPEC,
                                         dnsbl.SPEC)

