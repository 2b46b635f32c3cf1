"""What every configuration section is built from: one strict base model, one duration type, one
``host:port`` parser, one validation-error formatter and the error the agent exits 2 on.

Sections live beside the code that consumes them (``collectors/postfix/instance.py`` has the
``postfix:`` section, ``collectors/dnsbl_catalogue.py`` the ``dnsbl:`` section, …);
``exporter/config.py`` only composes them.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one line per bad key. The CLI exits 2 on it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


#: An MTA instance's name: its ``mta_instance`` label (Postfix's ``syslog_name``, an Exim instance's name).
InstanceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def parse_duration(value: object) -> object:
    """Seconds for a duration string (``30s``, ``5m``, ``3h``, ``1d``, ``250ms``); numbers pass through
    for pydantic to check."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration like 30s, 5m, 3h or a number of seconds, got {value!r}")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite duration, got {value!r}")
    return value


#: A positive duration in seconds, written as ``30s``, ``5m``, ``3h``, ``1d`` or a number.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
#: The same, zero allowed (a cool-down that may be none).
NonNegativeDuration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


def parse_host_port(value: str, *, default_port: int | None = None, ip_only: bool = False,
                    allow_port_zero: bool = False) -> tuple[str, int]:
    """Split ``host:port`` into its parts.

    Accepted: ``host:port``, ``[IPv6]:port``, ``:port`` (empty host: every address), and, when
    ``default_port`` is given, a host alone (``192.0.2.53``, ``2001:db8::53``). ``ip_only``
    refuses host names; ``allow_port_zero`` accepts port 0 (the system picks one). Raises
    ``ValueError`` naming what is wrong.
    """
    text = value.strip()
    port_text: str | None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r}: expected [IPv6]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text and default_port is None:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:10154")
    else:
        host, port_text = text, None
    if ip_only:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(f"{value!r}: expected an IP address with an optional port, e.g. 192.0.2.53, "
                             "192.0.2.53:5353 or [2001:db8::53]:5353") from None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"expected [host]:port, got {value!r}")
        return host, default_port
    lowest = 0 if allow_port_zero else 1
    if not (port_text.isdigit() and port_text.isascii()) or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from {lowest} to 65535")
    return host, int(port_text)


def dotted_key(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the key a user writes: ``lanes.rules[2].match.sender``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_errors(exc: ValidationError, *, origin: Callable[[str], str | None] = lambda _key: None,
                    name: Callable[[str], str] = lambda key: key, prefix: str = "") -> list[str]:
    """One line per problem: ``<prefix><key>: <what is wrong> (got <value>) [from <origin>]``.

    ``name`` turns a dotted key into what the user typed (a flag, say); ``origin`` says where the
    value came from (a file, an environment variable, a flag), or None to leave that out.
    """
    problems = []
    for error in exc.errors():
        key = dotted_key(error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        shown = _shown(error.get("input"))
        got = "" if error["type"] in ("missing", "extra_forbidden") or shown in message else f" (got {shown})"
        where = origin(key)
        problems.append(f"{prefix}{name(key)}: {message}{got}" + (f" [from {where}]" if where else ""))
    return problems


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:199] + "…"
