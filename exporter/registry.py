"""The agent's metric registry: every collector's families plus the agent's own metrics.

Like node_exporter's ``execute``, one wrapper turns any exception from a collector into
``mtaq_collector_success{collector} 0`` and a stored error; nothing escapes a scrape. Families
that several collectors emit (the queue families of Postfix and of Exim) are merged into one,
so the exposition carries one HELP and TYPE line per name; at start-up, two collectors that
define one name differently are refused (:func:`check_families`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from collectors import families as F
from collectors.base import BaseCollector
from exporter import __version__


class FamilyConflictError(Exception):
    """Two collectors define one metric family differently."""


def check_families(collectors: Sequence[BaseCollector]) -> None:
    """Refuse collectors whose declared families clash (same name, other type, help or labels)."""
    seen: dict[str, tuple[str, F.Family]] = {f.name: ("the agent", f) for f in F.AGENT}
    for collector in collectors:
        for family in collector.describe():
            first = seen.setdefault(family.name, (collector.id, family))
            if first[1] != family:
                raise FamilyConflictError(
                    f"collectors {first[0]} and {collector.id} both emit {family.name}, but differently: "
                    f"{first[1].kind} {list(first[1].labels)} {first[1].help!r} vs "
                    f"{family.kind} {list(family.labels)} {family.help!r}")


class AgentCollector(Collector):
    """Renders all collectors; scrapes only read state that background work prepared."""

    def __init__(self, collectors: Sequence[BaseCollector]) -> None:
        self.collectors = collectors

    def describe(self) -> list[Metric]:
        """Every family the agent may emit, so the registry can check names without a scrape."""
        described = {f.name: f for f in F.AGENT}
        for collector in self.collectors:
            described.update((f.name, f) for f in collector.describe())
        return [f.new() for f in described.values()]

    def collect(self) -> Iterator[Metric]:
        """Yield build info, each collector's families (merged by name) and their success/duration."""
        info = F.BUILD_INFO.new()
        info.add_metric([__version__], 1)
        merged: dict[str, Metric] = {info.name: info}
        success, duration = F.COLLECTOR_SUCCESS.new(), F.COLLECTOR_DURATION.new()
        for collector in self.collectors:
            try:
                families = list(collector.families())
            except Exception as exc:
                collector.health.failed(exc)
                families = []
            for family in families:
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
            health = collector.health.view()
            success.add_metric([collector.id], 1 if health.success else 0)
            duration.add_metric([collector.id], health.duration_seconds)
        yield from merged.values()
        yield success
        yield duration


def build_registry(collectors: Sequence[BaseCollector]) -> CollectorRegistry:
    """A fresh registry with the agent collector and the process's own CPU/memory/fd metrics."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(AgentCollector(collectors))
    ProcessCollector(registry=registry)
    return registry
