"""Postfix queue listings: the showq socket protocol and ``postqueue -j``, decoded to records.

showq speaks ``attr_print0``: ``name\\0value\\0`` pairs, an empty name ends one message, and an
empty message ends the listing. Postfix >= 3.6 first sends a ``protocol`` record (its value
is ``mail_queue_list_protocol`` in 3.7), which is skipped. Each
message carries ``queue_name``, ``queue_id``, ``time`` (arrival), ``size``, ``forced_expire``,
``sender``, then per recipient ``original_recipient``, ``recipient``, ``reason`` (and, from 3.11,
``log_class``). Decoding streams: chunks in, messages out, nothing held beyond one message, so a
million-message queue costs no more memory than a small one.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Iterator, Sequence

from collectors.command import CommandError, stream
from collectors.deadline import Deadline
from collectors.queue_model import QueueMessage, QueueRecipient

POSTFIX_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
_CHUNK = 1 << 20
#: Longest attribute name or value accepted (a defer reason is a few hundred bytes): a stream
#: without separators must not grow a buffer without bound.
MAX_TOKEN = 1 << 20


class ShowqProtocolError(ValueError):
    """The stream did not follow the showq attribute protocol."""


def _message(attrs: dict[bytes, bytes], recipients: list[QueueRecipient]) -> QueueMessage:
    try:
        return QueueMessage(
            queue=attrs[b"queue_name"].decode("ascii", "replace"),
            queue_id=attrs[b"queue_id"].decode("ascii", "replace"),
            arrival=float(attrs.get(b"time", b"0")),
            size=int(attrs.get(b"size", b"0")),
            sender=attrs.get(b"sender", b"").decode("utf-8", "replace"),
            recipients=tuple(recipients),
            forced_expire=attrs.get(b"forced_expire", b"0") not in (b"0", b""),
        )
    except (KeyError, ValueError) as exc:
        raise ShowqProtocolError(f"malformed showq record {attrs!r}: {exc}") from exc


def decode_showq(chunks: Iterable[bytes]) -> Iterator[QueueMessage]:
    """Decode a showq byte stream (any chunking) into messages.

    Raises ``ShowqProtocolError`` when the stream ends before the end-of-listing marker, so a
    truncated read is never mistaken for a smaller queue.
    """
    attrs: dict[bytes, bytes] = {}
    recipients: list[QueueRecipient] = []
    rcpt_addr: bytes | None = None
    rcpt_reason = b""
    name: bytes | None = None
    tail = b""
    for chunk in chunks:
        tokens = (tail + chunk).split(b"\0")
        tail = tokens.pop()
        if len(tail) > MAX_TOKEN:
            raise ShowqProtocolError(f"showq sent more than {MAX_TOKEN} bytes without a separator")
        for token in tokens:
            if name is not None:
                if name == b"recipient":
                    if rcpt_addr is not None:
                        recipients.append(QueueRecipient(rcpt_addr.decode("utf-8", "replace"),
                                                         rcpt_reason.decode("utf-8", "replace")))
                        rcpt_reason = b""
                    rcpt_addr = token
                elif name == b"reason":
                    rcpt_reason = token
                elif name not in (b"original_recipient", b"log_class"):
                    attrs[name] = token
                name = None
            elif token:
                name = token
            else:  # empty name: end of this record
                if rcpt_addr is not None:
                    recipients.append(QueueRecipient(rcpt_addr.decode("utf-8", "replace"),
                                                     rcpt_reason.decode("utf-8", "replace")))
                if not attrs and not recipients:
                    return
                if b"protocol" not in attrs:
                    yield _message(attrs, recipients)
                attrs, recipients, rcpt_addr, rcpt_reason = {}, [], None, b""
    raise ShowqProtocolError("showq stream ended before the end-of-listing marker")


def read_showq_socket(path: str, deadline: Deadline) -> Iterator[QueueMessage]:
    """Connect to a showq unix socket and stream its listing, within ``deadline``.

    Connection errors are raised at once (the caller may fall back to ``postqueue``); a listing
    that hangs or drips raises ``ReadTimeout`` at the deadline.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(deadline.wait())
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise

    def chunks() -> Iterator[bytes]:
        with sock:
            while True:
                deadline.check()
                sock.settimeout(deadline.wait())
                try:
                    data = sock.recv(_CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    return
                yield data

    return decode_showq(chunks())


def decode_postqueue_json(lines: Iterable[str | bytes]) -> Iterator[QueueMessage]:
    """Decode ``postqueue -j`` output (JSON Lines, one object per message)."""
    for line in lines:
        if not line.strip():
            continue
        obj = json.loads(line)
        yield QueueMessage(
            queue=obj["queue_name"],
            queue_id=obj["queue_id"],
            arrival=float(obj["arrival_time"]),
            size=int(obj.get("message_size", 0)),
            sender=obj.get("sender", ""),
            recipients=tuple(
                QueueRecipient(r.get("address", ""),
                               r.get("delay_reason") or r.get("bounce_reason") or r.get("other_reason") or "")
                for r in obj.get("recipients", ())
            ),
            forced_expire=bool(obj.get("forced_expire", False)),
        )


class MailSystemDown(OSError):
    """Postfix is not running: its queue may still be readable, but nothing is delivered."""


def _postqueue_exit(argv: Sequence[str], returncode: int, stderr: str) -> None:
    if returncode != 0:
        raise CommandError(f"{' '.join(argv)} exited {returncode}: {stderr}")
    if "Mail system is down" in stderr:
        raise MailSystemDown(stderr)


def read_postqueue(argv: Sequence[str], deadline: Deadline) -> Iterator[QueueMessage]:
    """Run ``postqueue -j`` (``argv``) and stream its messages, within ``deadline``.

    Fails on a non-zero exit, and with ``MailSystemDown`` when postqueue says it read the queue
    directly because the mail system is down: a stopped MTA must not look healthy.
    """
    return decode_postqueue_json(stream(argv, deadline, check=_postqueue_exit))
