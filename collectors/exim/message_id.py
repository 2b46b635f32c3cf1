"""Exim message ids: both formats, and the arrival second they encode.

Before Exim 4.97 an id is ``tttttt-pppppp-ss`` (16 characters), from 4.97 on
``tttttt-ppppppppppp-ssss`` (23 characters; ChangeLog JH/29). Every part is base 62
(``0-9A-Za-z``); the first six characters are the second the message arrived, which gives the
``exim -bp`` fallback an arrival time to the second (the listing itself says only "25m").
Builds for Darwin and Cygwin use base 36 (case-insensitive file systems); their ids pass the
format check, but the decoded time is only meaningful for base 62.
"""

from __future__ import annotations

import re
import string

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_DIGIT = {c: i for i, c in enumerate(_BASE62)}
ID_LENGTHS = frozenset({16, 23})
#: Seconds the six base-62 digits of an arrival part can hold.
_TIME_RANGE = 62**6

#: An id of either format (anchor or delimit it where it is searched for).
ID_PATTERN = re.compile(r"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})")


def is_message_id(token: str) -> bool:
    """Whether ``token`` is an Exim message id of either format."""
    return len(token) in ID_LENGTHS and ID_PATTERN.fullmatch(token) is not None


def id_time(message_id: str) -> int | None:
    """The arrival second a (base-62) message id encodes, None for anything else."""
    if not is_message_id(message_id):
        return None
    value = 0
    for c in message_id[:6]:
        value = value * 62 + _DIGIT[c]
    return value


def shift_arrival(message_id: str, seconds: int) -> str:
    """``message_id`` with the arrival second its first six characters encode moved by ``seconds``
    (around the ``62**6`` seconds they hold): still an id of its format, the rest unchanged."""
    second = id_time(message_id)
    if second is None:
        raise ValueError(f"not an Exim message id: {message_id!r}")
    second = (second + seconds) % _TIME_RANGE
    digits = []
    for _ in range(6):
        second, digit = divmod(second, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits)) + message_id[6:]


def subdirectory(message_id: str) -> str:
    """The split-spool subdirectory of ``message_id`` (``split_spool_directory``): its sixth
    character, the fastest-changing digit of the arrival second."""
    return message_id[5]
