"""The Postfix adapter: everything the agent knows about Postfix, in one place.

- ``instance``: the instance model (``postfix.instances[]``), discovery through ``postconf``,
  and the queue reader (showq socket, ``postqueue -j`` fallback);
- ``showq``: the showq protocol and ``postqueue -j`` output, decoded to queue records;
- ``log_parse``: mail log lines to typed records;
- ``log_events``: those records to delivery-accounting events (``POSTFIX_LOG``).

The collectors ``postfix_queue`` and ``postfix_log`` plug these into the MTA-neutral queue and
log collectors; ``qshape`` and ``analyze`` use them directly.
"""
