"""Independent references for the Exim tests: ``exim -bp`` read with a regular expression of its
own, Exim's size formatting, and counts made from a raw main log with plain string handling,
apart from the agent's parser. Shared by the lab tests and the fixture tests."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

PROVIDERS = {"gmail.com": "google", "yahoo.com": "yahoo", "outlook.com": "microsoft", "icloud.com": "apple",
             "gmx.de": "gmx", "comcast.net": "comcast"}
#: Reply texts of the simulator (and Exim's own) -> the reason class they stand for.
REASONS = (("4.7.28", "rate_limited"), ("[TSS04]", "rate_limited"), ("4.7.650", "rate_limited"),
           ("4.2.2", "mailbox_full"), ("5.1.1", "user_unknown"), ("spamhaus", "blocklisted"),
           ("Remote host closed connection", "connection"), ("retry time not reached", "self"))
LINE = re.compile(r"^\S+ \S+ \+\d{4} \[\d+\] ([0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}) (\S+) ?(\S*)(.*)$")
#: What follows the message id on a line the agent parses (the rest, Exim's detail lines, it ignores).
PARSED = frozenset({"<=", "(=", "=>", "->", ">>", "*>", "==", "**", "Completed", "Frozen", "frozen", "Message",
                    "Unfrozen", "unfrozen", "cancelled"})
ID_FORMAT = re.compile(r"^\s*(\d+)([mhd]) +(\S+) (\S+) <([^>]*)>( \*\*\* frozen \*\*\*)?$")
UNITS = {"m": 60, "h": 3600, "d": 86400}


def format_size(size: int) -> str:
    """Exim's ``string_format_size`` (``src/string.c``), as ``-bp`` prints a size."""
    if size == 0:
        return ""
    if size < 1024:
        return f"{size}"
    if size < 10 * 1024:
        return f"{size / 1024:.1f}K"
    if size < 1024 * 1024:
        return f"{(size + 512) // 1024}K"
    if size < 10 * 1024 * 1024:
        return f"{size / (1024 * 1024):.1f}M"
    return f"{(size + 512 * 1024) // (1024 * 1024)}M"


def listing(text: str) -> dict[str, dict[str, Any]]:
    """``exim -bp`` parsed here with a regular expression of its own: id -> age, size, sender,
    frozen, undelivered recipients."""
    out: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        head = ID_FORMAT.match(line)
        if head:
            age, unit, size, message_id, sender, frozen = head.groups()
            current = out[message_id] = {"age": int(age) * UNITS[unit], "size": size, "sender": sender,
                                         "frozen": bool(frozen), "recipients": []}
        elif line.strip() and current is not None and not line.strip().startswith("D "):
            current["recipients"].append(line.strip())
    return out


def reason_of(text: str) -> str:
    return next((reason for marker, reason in REASONS if marker in text), "other")


def reference(lines: list[str]) -> dict[str, Counter]:
    """Counts straight from the raw main log, keyed like the exported series."""
    out: dict[str, Counter] = {k: Counter() for k in (
        "received", "sent", "deferrals", "self", "bounces", "dead_letters", "notifications")}
    last: dict[str, tuple[str, str]] = {}  # message id -> (provider, reason) of its last real deferral
    first_self: dict[str, tuple[str, str]] = {}  # ... or of its first self-inflicted one, if it had none
    pending: dict[str, dict[str, tuple[str, str]]] = {}
    expired: set[str] = set()
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        qid, flag, address, rest = m.groups()
        provider = PROVIDERS.get(address.rpartition("@")[2].rstrip(":"), "other")
        if flag == "<=":
            out["notifications" if address == "<>" and " R=" in rest else "received"][()] += 1
        elif flag in ("=>", "->"):
            out["sent"][provider] += 1
            pending.get(qid, {}).pop(address, None)
        elif flag == "==":
            reason = reason_of(rest)
            if reason == "self":  # counted apart; the recipient stays pending with this cause
                out["self"][()] += 1
                first_self.setdefault(qid, (provider, reason))
                pending.setdefault(qid, {}).setdefault(address, (provider, reason))
                continue
            out["deferrals"][(provider, reason)] += 1
            last[qid] = pending.setdefault(qid, {})[address] = (provider, reason)
        elif flag == "**":
            address = address.rstrip(":")
            if "retry timeout exceeded" in rest:
                if qid not in expired:
                    expired.add(qid)
                    out["dead_letters"][last.get(qid) or first_self[qid]] += 1
                    for r_provider, r_reason in pending.pop(qid, {}).values():
                        out["bounces"][(r_provider, "soft", r_reason)] += 1
            else:
                out["bounces"][(provider, "hard", reason_of(rest))] += 1
                pending.get(qid, {}).pop(address, None)
    return out


def series(samples: dict, name: str, *keys: str, **match: str) -> Counter:
    """Sum of a family's samples by ``keys``, non-zero only."""
    out: Counter = Counter()
    for labels, value in samples.get(name, ()):
        if value and all(labels.get(k) == v for k, v in match.items()):
            out[tuple(labels[k] for k in keys) if len(keys) != 1 else labels[keys[0]]] += int(value)
    return out


def line_results(lines: list[str]) -> Counter:
    """Lines the agent should count as parsed (a message id and a flag or status word) and as
    ignored (the rest: Exim's own chatter and per-host detail lines), non-zero only."""
    parsed = sum(1 for line in lines if (m := LINE.match(line)) and m.group(2) in PARSED)
    return Counter({"parsed": parsed, "ignored": len(lines) - parsed}) - Counter()
