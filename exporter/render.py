"""Text output shared by the operator commands: aligned tables, times, ages and clipped replies."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, align: str | None = None,
          indent: str = "") -> list[str]:
    """Rows under headers, columns padded to their widest cell.

    ``align`` has one letter per column, ``l`` or ``r``; by default the first column is left-
    and the others right-aligned (a name, then numbers). Trailing blanks are removed.
    """
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    return [(indent + "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                for c, w, a in zip(row, widths, align, strict=True))).rstrip()
            for row in cells]


def when(epoch: float | None, *, utc: bool = False) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in local time (or UTC), ``?`` when unknown."""
    if epoch is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch) if utc else time.localtime(epoch))


def age(seconds: float | None) -> str:
    """A duration in its largest unit with one decimal: ``42s``, ``3.5m``, ``2.0h``, ``1.2d``."""
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def clip(text: str, width: int = 100) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis when cut."""
    return text if len(text) <= width else text[:width - 1] + "…"


def ago(epoch: float | None, now: float) -> str:
    """How long before ``now`` ``epoch`` was: ``42s ago``; ``never`` when unknown."""
    return "never" if epoch is None else f"{age(max(0.0, now - epoch))} ago"


def percent(ratio: float | None) -> str:
    """``12.5%``, ``-`` when there is no ratio (nothing to divide by)."""
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One bar per value, scaled from the smallest to the largest (flat when they are equal)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    return "".join(_BARS[0 if not span else round((v - low) / span * (len(_BARS) - 1))] for v in values)


def change(values: Sequence[float]) -> str:
    """The change from the first to the last value, signed: ``+120``, ``-3``, ``±0``; empty for fewer than two."""
    if len(values) < 2:
        return ""
    delta = values[-1] - values[0]
    return f"{delta:+g}" if delta else "±0"


def queue_count(value: int | None) -> str:
    """A queue's count, ``-`` where the MTA has no such queue."""
    return "-" if value is None else str(value)


def parked(lane: Mapping[str, Any]) -> str:
    """A lane's held / frozen count: Postfix's hold queue or Exim's frozen messages."""
    counts = [lane[name] for name in ("held", "frozen") if lane[name] is not None]
    return str(sum(counts)) if counts else "-"
