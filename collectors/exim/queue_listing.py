"""``exim -bp`` output, decoded to queue records: the fallback when the spool cannot be read.

Each message is a line ``<age> <size> <id> <sender>[ (<login>)][ *** frozen ***]`` (``*** spool
format error …`` for a -H file Exim cannot read) followed by one indented line per recipient,
``D`` in front of those already delivered (``+D`` for generated addresses with ``-bpa``), and a
blank line. The listing rounds what the spool says exactly: the arrival comes from the message id
(to the second; the age column says only ``25m``), the size is ``2.9K``-precise, and there are no
defer reasons (those live in ``msglog/``, no more readable than the spool).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator

from collectors.exim.message_id import id_time, is_message_id
from collectors.exim.spool import FROZEN, QUEUED
from collectors.queue_model import QueueMessage, QueueRecipient

# "25m  2.9K 0t5C6f-0000c8-00 <alice@example> (login) *** frozen ***"; without age and size when Exim
# could not read the envelope (the next line then says "*** spool format error ***").
_HEAD = re.compile(r"^ *(?:(\d+)([mhd]) +)?(?:([\d.]+[KMG]?) +)?([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})"
                   r"(?: <(.*?)>(?: \([^)]*\))?)?( \*\*\* frozen \*\*\*)?$")
_AGE_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {"K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024}
_DELIVERED = ("D ", "+D ")


def _size(text: str | None) -> int:
    """``391`` / ``2.9K`` / ``52K`` / ``1.2M`` in bytes (as precise as the listing); blank is 0."""
    if not text:
        return 0
    unit = _SIZE_UNITS.get(text[-1:], 1)
    return round(float(text[:-1] if unit != 1 else text) * unit)


def _head(line: str, now: float) -> QueueMessage | None:
    """The message line (recipients to follow), None if it is not one."""
    match = _HEAD.match(line)
    if match is None or not is_message_id(match.group(4)):
        return None
    age, unit, size_text, message_id, sender, frozen = match.groups()
    arrival = id_time(message_id)
    if arrival is None and age is not None:
        arrival = round(now) - int(age) * _AGE_SECONDS[unit]
    if arrival is None or sender is None:
        return _unreadable(message_id)
    return QueueMessage(FROZEN if frozen else QUEUED, message_id, float(arrival), _size(size_text), sender, ())


def _unreadable(message_id: str) -> QueueMessage:
    return QueueMessage(QUEUED, message_id, math.nan, 0, "", ())


def decode_bp(lines: Iterable[str | bytes], now: float) -> Iterator[QueueMessage]:
    """Decode ``exim -bp`` output read at ``now``. A message Exim reports a spool format or read
    error for comes out with a non-finite arrival (left out of the totals and counted); any other
    line that is neither a message nor a recipient raises ``ValueError``: a listing that cannot be
    read must not pass for a smaller queue."""
    head: QueueMessage | None = None
    recipients: list[QueueRecipient] = []
    for raw in lines:
        line = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw).rstrip("\r\n")
        text = line.strip()
        if not text:
            continue
        message = _head(line, now)
        if message is None:
            if head is None or not line[:1].isspace():
                raise ValueError(f"not an exim -bp line: {line[:80]!r}")
            if text.startswith("*** spool "):
                head = _unreadable(head.queue_id)
            elif not text.startswith(_DELIVERED):
                recipients.append(QueueRecipient(text))
            continue
        if head is not None:
            yield _with(head, recipients)
        head, recipients = message, []
    if head is not None:
        yield _with(head, recipients)


def _with(message: QueueMessage, recipients: list[QueueRecipient]) -> QueueMessage:
    if not math.isfinite(message.arrival):
        return message
    return QueueMessage(message.queue, message.queue_id, message.arrival, message.size, message.sender,
                        tuple(recipients))
