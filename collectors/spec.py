"""What a collector module declares so that the agent can use it without naming it.

Each collector module ends with ``SPEC = CollectorSpec(...)``: its id, what it reads, the config
section it is configured by (and that section's model), the condition that turns it on by
default, its factory and its command-line flags. ``collectors/table.py`` lists the modules; the
agent, the configuration, the command line and the README's collector table loop over that list
(node_exporter's ``registerCollector``, as data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collectors.base import BaseCollector
from collectors.classify import Classifier
from collectors.settings import StrictModel


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one configuration key (``[0]`` indexes a list)."""

    flag: str
    key: str
    help: str
    metavar: str | None = None
    repeatable: bool = False
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BuildContext:
    """What a factory gets: the whole validated configuration and the shared classifier."""

    config: Any
    classifier: Classifier

    def section(self, spec: CollectorSpec) -> Any:
        """The configuration section ``spec`` is configured by."""
        return getattr(self.config, spec.section)


@dataclass(frozen=True)
class CollectorSpec:
    """One collector, as the agent, the CLI, the configuration and the README see it."""

    id: str
    reads: str  # what it reads, one phrase (README table, --help)
    section: str  # the config section that configures it
    model: type[StrictModel]  # that section's model
    enabled: Callable[[Any], bool]  # on by default? given its section (``collectors.<id>`` overrides)
    default: str  # the same condition in words
    needs: str  # permissions or services it needs
    factory: Callable[[BuildContext], BaseCollector]
    flags: tuple[Flag, ...] = ()
    # (method, path) of the HTTP routes it adds; while it is off they answer 404 with ``disabled``,
    # a sentence saying how to turn it on (a bare 404 sends operators looking for typos).
    routes: tuple[tuple[str, str], ...] = ()
    disabled: str = ""
