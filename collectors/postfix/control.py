"""Changing a Postfix instance's configuration, for the actions that throttle a provider.

Every change goes through Postfix's own tools with argv lists (never a shell): ``postconf -e``
and ``-X`` for ``main.cf`` parameters, ``postconf -M`` for ``master.cf`` services, ``postfix
reload`` to make changes effective, ``postqueue -f`` to retry deferred mail, ``postmap -q`` to
ask a lookup table. Nothing here deletes, bounces, holds or requeues mail.

Names and values reach the command line only after ``_safe`` checked them against what Postfix
parameter names and values look like; a caller that validated less still cannot inject options
or shell syntax.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from collectors.command import CommandError, run
from collectors.postfix.instance import PostfixInstance

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VALUE = re.compile(r"^[A-Za-z0-9$\[][A-Za-z0-9 _.,:/=\[\]${}@-]{0,499}$|^$")
_FIELD = re.compile(r"^[\x21-\x7e]{1,200}$")  # one master.cf field: printable, no blank
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/(unix|inet|fifo|pass|unix-dgram)$")


def _safe(pattern: re.Pattern[str], text: str, what: str) -> str:
    if not pattern.match(text):
        raise ValueError(f"refusing {what} {text!r}: not a Postfix {what}")
    return text


class PostfixControl:
    """One instance's configuration, read and changed through ``postconf`` and friends."""

    def __init__(self, instance: PostfixInstance) -> None:
        self.instance = instance
        self._c = ["-c", instance.config_dir] if instance.config_dir else []

    def _run(self, *argv: str, timeout: float = 30.0) -> str:
        return run([argv[0], *self._c, *argv[1:]], timeout=timeout)

    # -- reading --------------------------------------------------------------------------------

    def explicit(self, names: Sequence[str]) -> dict[str, str | None]:
        """The values ``main.cf`` sets for ``names`` (None where it does not set one)."""
        found: dict[str, str | None] = dict.fromkeys(names)
        if names:
            for line in self._run("postconf", "-n", *(_safe(_NAME, n, "parameter name") for n in names)).splitlines():
                name, sep, value = line.partition(" = ")
                if sep and name in found:
                    found[name] = value
        return found

    def values(self, names: Sequence[str]) -> list[str]:
        """The effective values of ``names``, defaults and ``$name`` expanded."""
        return self._run("postconf", "-h", "-x", *(_safe(_NAME, n, "parameter name") for n in names)).splitlines()

    def settings(self) -> str:
        """``postconf -n``: every parameter ``main.cf`` sets (what an action must leave as it found)."""
        return self._run("postconf", "-n")

    def service(self, name: str) -> str | None:
        """The ``master.cf`` line of ``name`` (``smtp/unix``), or None when there is none."""
        try:
            line = self._run("postconf", "-M", _safe(_SERVICE, name, "service")).strip()
        except CommandError:
            return None
        return line or None

    def lookup(self, table: str, key: str) -> str | None:
        """``postmap -q key table``: the value, or None when the table has no entry."""
        try:
            return self._run("postmap", "-q", key, table).strip() or None
        except CommandError:
            return None

    # -- changing ----------------------------------------------------------------------------------

    def set(self, parameters: Mapping[str, str]) -> None:
        """``postconf -e name=value …``."""
        if parameters:
            self._run("postconf", "-e", *(f"{_safe(_NAME, k, 'parameter name')}={_safe(_VALUE, v, 'value')}"
                                          for k, v in parameters.items()))

    def remove(self, names: Sequence[str]) -> None:
        """``postconf -X name …``: back to the defaults."""
        if names:
            self._run("postconf", "-X", *(_safe(_NAME, n, "parameter name") for n in names))

    def add_service(self, name: str, line: str) -> None:
        """``postconf -M name/type="line"``: add or replace a ``master.cf`` service."""
        fields = line.split()
        if len(fields) < 8 or not all(_safe(_FIELD, f, "master.cf field") for f in fields):
            raise ValueError(f"refusing master.cf line {line!r}")
        self._run("postconf", "-M", f"{_safe(_SERVICE, name, 'service')}={' '.join(fields)}")

    def check(self) -> None:
        """``postfix check``: raises ``CommandError`` with Postfix's complaint."""
        self._run("postfix", "check", timeout=60)

    def running(self) -> bool:
        """Whether the instance's master process runs (``postfix status``)."""
        try:
            self._run("postfix", "status")
        except CommandError:
            return False
        return True

    def reload(self) -> None:
        """``postfix reload``: the daemons pick up ``main.cf`` and ``master.cf`` changes."""
        self._run("postfix", "reload")

    def flush(self) -> None:
        """``postqueue -f``: retry deferred mail now (after a pause ends)."""
        self._run(self.instance.postqueue, "-f")
