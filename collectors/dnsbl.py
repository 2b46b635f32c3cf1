"""Collector ``dnsbl``: the sending IPs and domains on DNS blocklists, every few hours.

Runs the checker (``dnsbl_check``) every ``dnsbl.interval`` in the background, keeps the last
definitive answer per (target, list) across runs (``dnsbl_report``), and renders the latest
snapshot; scrapes never send DNS queries. ``GET /api/v1/blocklists`` returns the last full
results and ``POST /api/v1/blocklists/check`` asks for a run now. Sample output::

    mtaq_dnsbl_listed{list="zen.spamhaus.org",target="192.0.2.10"} 1.0
    mtaq_dnsbl_check_success{list="zen.spamhaus.org",target="192.0.2.10"} 1.0
    mtaq_dnsbl_listing_info{code="127.0.0.2",delist_url="https://check.spamhaus.org/",list="zen.spamhaus.org",meaning="SBL: spam source or spam operation",target="192.0.2.10"} 1.0
    mtaq_dnsbl_impact_score{target="192.0.2.10"} 100.0
    mtaq_dnsbl_list_healthy{list="zen.spamhaus.org"} 1.0
    mtaq_dnsbl_last_run_timestamp_seconds 1.7e+09
    mtaq_dnsbl_run_duration_seconds 0.42
"""  # noqa: E501 - sample exposition lines are kept whole

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from prometheus_client.metrics_core import Metric

from collectors import families as F
from collectors.base import BaseCollector, Clock, Request, Response, Route, Services
from collectors.deadline import SLICE, ReadCancelled
from collectors.dnsbl_catalogue import DnsblSettings, load_catalogue
from collectors.dnsbl_check import RunResult, Status, check
from collectors.dnsbl_report import Definitive, definitive_answers, listing_codes, results_dict, target_impact
from collectors.settings import ConfigError
from collectors.spec import BuildContext, CollectorSpec

ID = "dnsbl"


class DnsblRunError(RuntimeError):
    """A run in which no list gave a single definitive answer."""


@dataclass(frozen=True)
class _Snapshot:
    run: RunResult
    definitive: Mapping[tuple[str, str], Definitive]


class DnsblCollector(BaseCollector):
    """Checks the configured targets on DNS blocklists every ``interval`` seconds (``refresh``)
    and renders the latest snapshot (``families``)."""

    def __init__(self, settings: DnsblSettings, clock: Clock = time.time) -> None:
        super().__init__(ID, clock)
        self.settings = settings
        self.interval = settings.interval
        self.jitter = settings.jitter
        self.lists = tuple(load_catalogue(settings))
        self.targets = settings.target_names()
        self._lists = {bl.zone: bl for bl in self.lists}
        self._snapshot: _Snapshot | None = None
        self._last_recheck = 0.0
        self._stop = threading.Event()

    def describe(self) -> tuple[F.Family, ...]:
        """The blocklist families of the catalogue."""
        return F.DNSBL

    def sources(self) -> list[str]:
        """Targets, lists and resolvers."""
        resolvers = ", ".join(self.settings.nameservers) or "the resolvers of /etc/resolv.conf"
        return [f"{len(self.targets)} target(s) on {len(self.lists)} list(s) every {self.interval:g} s "
                f"through {resolvers}"]

    def routes(self, services: Services) -> list[Route]:
        """The last results, and a run on demand."""

        def recheck(_request: Request) -> Response:
            # Blocklist operators rate-limit resolvers that ask too often: on-demand runs are rare.
            now = time.monotonic()
            wait = self._last_recheck + self.settings.min_recheck_interval - now
            if self._last_recheck and wait > 0:
                return Response(429, f"a blocklist run was requested {now - self._last_recheck:.0f} s ago; next one "
                                     f"in {wait:.0f} s (dnsbl.min_recheck_interval)\n".encode(),
                                headers={"Retry-After": str(int(wait) + 1)})
            self._last_recheck = now
            services.run_now(self.id)
            return Response.json({"scheduled": True}, 202)

        return [
            Route("GET", "/api/v1/blocklists", lambda _r: Response.json(self.last_results()),
                  title="Blocklist results (JSON)"),
            Route("POST", "/api/v1/blocklists/check", recheck, writes=True),
        ]

    def refresh(self) -> None:
        """Run one check (blocking; call from a thread without a running event loop).

        Raises ``DnsblRunError`` after publishing the snapshot when nothing was definitive.
        """
        run = asyncio.run(self._check_unless_stopped())
        previous = self._snapshot.definitive if self._snapshot else {}
        definitive = {**previous, **definitive_answers(run)}
        self._log_changes(previous, definitive)
        for h in run.health:
            if not h.healthy:
                self.log.warning("dnsbl: %s unhealthy this run, its answers are unknown: %s", h.list, h.error)
        self._snapshot = _Snapshot(run, MappingProxyType(definitive))
        unknown = [r for r in run.results if r.status is Status.UNKNOWN]
        if unknown and len(unknown) == len(run.results):
            raise DnsblRunError(f"no definitive answer in {len(unknown)} checks; e.g. {unknown[0].error}")

    async def _check_unless_stopped(self) -> RunResult:
        # A run may take up to dnsbl.deadline; shutdown must not wait for it.
        task = asyncio.create_task(check(self.targets, self.lists, self.settings, clock=self.clock))
        while not task.done():
            if self._stop.is_set():
                task.cancel()
                raise ReadCancelled("the agent is stopping")
            await asyncio.wait({task}, timeout=SLICE)
        return task.result()

    def stop(self) -> None:
        """Abandon a run in progress."""
        self._stop.set()

    def _log_changes(
        self, before: Mapping[tuple[str, str], Definitive], after: Mapping[tuple[str, str], Definitive]
    ) -> None:
        for (target, zone), now in after.items():
            was = before.get((target, zone))
            listed = now.result.status is Status.LISTED
            if listed and (was is None or listing_codes(was.result) != listing_codes(now.result)):
                codes = ", ".join(f"{x.code} {x.meaning}" for x in now.result.listings)
                self.log.warning("dnsbl: %s listed on %s: %s; TXT: %s", target, zone, codes,
                                 " | ".join(now.result.txt) or "-")
            elif not listed and was is not None and was.result.status is Status.LISTED:
                self.log.info("dnsbl: %s no longer listed on %s", target, zone)

    def last_results(self) -> dict[str, Any]:
        """The last run in full (JSON-serialisable), with listings kept from earlier runs where
        this run's answer was unknown; ``{"run": None, ...}`` before the first run."""
        snapshot = self._snapshot
        if snapshot is None:
            return {"run": None, "lists": {}, "targets": {}}
        return results_dict(snapshot.run, snapshot.definitive)

    def families(self) -> Iterator[Metric]:
        """The SPEC §5 ``mtaq_dnsbl_*`` families from the latest snapshot."""
        snapshot = self._snapshot
        listed, success, info, impact = (F.DNSBL_LISTED.new(), F.DNSBL_CHECK_SUCCESS.new(),
                                         F.DNSBL_LISTING_INFO.new(), F.DNSBL_IMPACT.new())
        healthy, last_run, duration = F.DNSBL_LIST_HEALTHY.new(), F.DNSBL_LAST_RUN.new(), F.DNSBL_RUN_DURATION.new()
        if snapshot is not None:
            run = snapshot.run
            for (target, zone), last in snapshot.definitive.items():
                is_listed = last.result.status is Status.LISTED
                listed.add_metric([target, zone], float(is_listed))
                if is_listed:
                    url = self._lists[zone].delist_url_for(target)
                    for listing in last.result.listings:
                        info.add_metric([target, zone, listing.code, listing.meaning, url], 1.0)
            for r in run.results:
                success.add_metric([r.target, r.list], float(r.status is not Status.UNKNOWN))
            for target in self.targets:
                impact.add_metric([target], target_impact(target, snapshot.definitive))
            for h in run.health:
                healthy.add_metric([h.list], float(h.healthy))
            last_run.add_metric([], run.finished)
            duration.add_metric([], run.duration_seconds)
        yield from (listed, success, info, impact, healthy, last_run, duration)


def _build(ctx: BuildContext) -> DnsblCollector:
    settings: DnsblSettings = ctx.config.dnsbl
    if not settings.target_names():
        raise ConfigError(["dnsbl.targets: the dnsbl collector is on but has no ips or domains to check"])
    return DnsblCollector(settings)


SPEC = CollectorSpec(
    id=ID,
    reads="DNS blocklists for the configured IPs and domains, every 3 h",
    section="dnsbl",
    model=DnsblSettings,
    enabled=lambda section: section.enabled,
    default="off (`dnsbl.enabled`)",
    needs="a recursive resolver of your own",
    factory=_build,
    routes=(("GET", "/api/v1/blocklists"), ("POST", "/api/v1/blocklists/check")),
    disabled="blocklist checks are not enabled: set dnsbl.enabled: true and dnsbl.targets (or --collector.dnsbl)",
)
