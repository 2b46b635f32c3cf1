"""The duration type every configuration section uses: ``30s``, ``5m``, ``3h``, ``1d`` or seconds."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> object:
    """Seconds for a duration string; numbers pass through for pydantic to check."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration like 30s, 5m, 3h or a number of seconds, got {value!r}")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
