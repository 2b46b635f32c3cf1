"""The agent's metric registry: every collector's families plus the agent's own metrics.

Like node_exporter's ``execute``, one wrapper turns any exception from a collector into
``mtaq_collector_success{collector} 0`` and a stored error; nothing escapes a scrape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collectors.base import BaseCollector
from exporter import __version__


class AgentCollector(Collector):
    """Renders all collectors; scrapes only read state that background work prepared."""

    def __init__(self, collectors: Sequence[BaseCollector]) -> None:
        self.collectors = collectors

    def describe(self) -> list[Metric]:
        # Without describe() the registry would call collect() at registration time.
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield build info, each collector's families and its success/duration gauges."""
        info = GaugeMetricFamily("mtaq_build_info", "mtaq-exporter build information.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        success = GaugeMetricFamily(
            "mtaq_collector_success", "1 if the collector's last run succeeded.", labels=["collector"])
        duration = GaugeMetricFamily(
            "mtaq_collector_duration_seconds", "Duration of the collector's last run in seconds.",
            labels=["collector"])
        for collector in self.collectors:
            try:
                families = list(collector.families())
            except Exception as exc:
                collector.record_failure(exc)
                families = []
            yield from families
            success.add_metric([collector.id], 1 if collector.health.success else 0)
            duration.add_metric([collector.id], collector.health.duration_seconds)
        yield success
        yield duration


def build_registry(collectors: Sequence[BaseCollector]) -> CollectorRegistry:
    """A fresh registry with the agent collector and the process's own CPU/memory/fd metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(collectors))
    ProcessCollector(registry=registry)
    return registry
