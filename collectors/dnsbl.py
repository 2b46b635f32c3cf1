"""DNS blocklist checker and the ``dnsbl`` collector.

A run asks every configured list about every target it applies to (IPv4 / IPv6 lists for IPs,
domain lists for domains) through dnspython's async resolver, with a per-query timeout, an overall
deadline and a bounded number of queries in flight. Each (target, list) answer is exactly one of:

* ``listed``: A records that are all codes the list documents (bitmask lists decoded);
* ``not_listed``: NXDOMAIN, or NOERROR without an A record (NODATA);
* ``unknown``: timeout, SERVFAIL, REFUSED, a refusal/error code (Spamhaus 127.255.255.x, URIBL and
  SURBL 127.0.0.1), an answer outside 127.0.0.0/8 (rewriting resolver), an undocumented code on a
  list that documents all of its codes, a list that failed its RFC 5782 test points this run, or
  the run deadline. Unknown is never read as listed nor as clean.

Before its targets, each list's test points are queried (the listed canary must be listed, the
not-listed canary NXDOMAIN); a list that fails them is unhealthy and its targets are not queried:
their results are unknown for that run. TXT records are fetched only for A-record answers.

The collector keeps the last definitive answer per (target, list) across runs, so an unknown
answer never clears (or raises) a listing. Sample output::

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
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from collectors.base import BaseCollector, Clock
from collectors.dnsbl_catalogue import BlockList, Code, DnsblSettings, load_catalogue

log = logging.getLogger("mtaq.dnsbl")

_LOOPBACK = IPv4Network("127.0.0.0/8")
_BITMASK_NET = IPv4Network("127.0.0.0/24")
# RFC 5782 §5: 127.0.0.1 is never listed; URIBL and SURBL use it to say "query refused".
_NEVER_LISTED = IPv4Address("127.0.0.1")
# Slack over the per-query timeout: dnspython may sleep a backoff before giving up.
_HARD_TIMEOUT_SLACK = 0.5


class Status(StrEnum):
    """What one (target, list) answer means."""

    LISTED = "listed"
    NOT_LISTED = "not_listed"
    UNKNOWN = "unknown"


class Failure(StrEnum):
    """Why an answer is unknown (a bounded set, usable as a label)."""

    TIMEOUT = "timeout"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    DNS_ERROR = "dns_error"
    LIST_REFUSED = "list_refused"
    RESOLVER_REWRITE = "resolver_rewrite"
    UNDOCUMENTED = "undocumented_code"
    LIST_UNHEALTHY = "list_unhealthy"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class Listing:
    """One returned A record that is a listing: the code, its documented meaning and weight."""

    code: str
    meaning: str
    weight: int


@dataclass(frozen=True)
class Verdict:
    """Classification of one A-record answer."""

    status: Status
    listings: tuple[Listing, ...] = ()
    failure: Failure | None = None
    error: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """The answer for one target on one list in one run.

    ``answer`` is the raw reply (``NXDOMAIN``, ``NODATA`` or the A records) when one came back.
    """

    target: str
    list: str
    status: Status
    listings: tuple[Listing, ...] = ()
    txt: tuple[str, ...] = ()
    answer: str | None = None
    query_ms: float | None = None
    failure: Failure | None = None
    error: str | None = None

    @property
    def weight(self) -> int:
        """Weight of this listing: its heaviest code (the codes of one list describe one listing)."""
        return max((listing.weight for listing in self.listings), default=0)


@dataclass(frozen=True)
class ListHealth:
    """Whether a list's test points answered correctly in a run, and what was wrong if not."""

    list: str
    healthy: bool
    error: str | None = None


@dataclass(frozen=True)
class RunResult:
    """Everything one run found. ``started``/``finished`` are wall-clock Unix times."""

    started: float
    finished: float
    duration_seconds: float
    peak_concurrency: int
    queries: int
    lists: tuple[BlockList, ...]
    health: tuple[ListHealth, ...]
    results: tuple[CheckResult, ...]


@dataclass(frozen=True)
class Definitive:
    """The last definitive (listed / not listed) answer for a (target, list) and when it came."""

    result: CheckResult
    at: float


def target_kind(target: str) -> str:
    """``ip4``, ``ip6`` or ``domain``: which lists apply to ``target``."""
    try:
        return f"ip{ipaddress.ip_address(target).version}"
    except ValueError:
        return "domain"


def query_name(target: str, zone: str) -> str:
    """The absolute name to query for ``target`` in ``zone`` (RFC 5782 §2.1, §2.4, §3).

    IPv4 is reversed octets, IPv6 reversed nibbles of the full address (also for IPv4-mapped
    addresses, where ``dns.reversename`` would switch to the IPv4 form), a domain is prepended.
    """
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        return f"{target}.{zone}."
    if isinstance(address, ipaddress.IPv4Address):
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join((*labels, zone)) + "."


def classify(blocklist: BlockList, addresses: Iterable[str]) -> Verdict:
    """Classify the A records a list returned. Any refusal or doubtful record makes it unknown."""
    listings = []
    for text in sorted(addresses, key=IPv4Address):
        address = IPv4Address(text)
        if address not in _LOOPBACK:
            return _unknown(
                Failure.RESOLVER_REWRITE,
                f"answer {text} is outside 127.0.0.0/8: a resolver or middlebox rewrote the reply",
            )
        reason = blocklist.refusal(address)
        if reason is not None:
            return _unknown(Failure.LIST_REFUSED, f"{reason} ({text})")
        if address == _NEVER_LISTED:
            return _unknown(Failure.LIST_REFUSED, f"{text} is never a listing (RFC 5782): query refused")
        code = blocklist.codes.get(address) or _decode_bits(blocklist, address)
        if code is None:
            if not blocklist.undocumented_listed:
                return _unknown(Failure.UNDOCUMENTED, f"{text} is not a code {blocklist.zone} documents")
            code = Code("unclassified", blocklist.weight)
        listings.append(Listing(text, code.meaning, code.weight))
    return Verdict(Status.LISTED, tuple(listings))


def _unknown(failure: Failure, error: str) -> Verdict:
    return Verdict(Status.UNKNOWN, failure=failure, error=error)


def _decode_bits(blocklist: BlockList, address: IPv4Address) -> Code | None:
    if not blocklist.bitmask or address not in _BITMASK_NET:
        return None
    octet = int(address) & 0xFF
    hits = [code for bit, code in blocklist.bitmask.items() if octet & bit]
    unknown_bits = octet & ~sum(blocklist.bitmask)
    if unknown_bits and hits:
        log.debug("dnsbl: %s answered %s with undocumented bits %#x", blocklist.zone, address, unknown_bits)
    if not hits:
        return None
    return Code(" + ".join(code.meaning for code in hits), max(code.weight for code in hits))


def impact_score(weights: Iterable[int]) -> float:
    """Combine list weights (0-100) into a 0-100 score: ``100 * (1 - prod(1 - w / 100))``.

    A weight reads as the chance that a receiver refuses mail because of that listing, and the
    score as the chance that at least one listing does, lists taken as independent. So the score
    is never below the heaviest listing (an SBL listing alone gives 100, PSBL alone 25), rises
    with every further listing (PSBL 25 + s5h 15 gives 36.2, not the 40 a sum would) and never
    passes 100. Rounded to one decimal.
    """
    return round(100 * (1 - math.prod(1 - weight / 100 for weight in weights)), 1)


@dataclass(frozen=True)
class _Reply:
    """One DNS lookup: records on NOERROR, ``negative`` on NXDOMAIN/NODATA, else a failure."""

    records: tuple[str, ...] = ()
    negative: str | None = None
    failure: Failure | None = None
    error: str | None = None
    ms: float = 0.0

    def describe(self) -> str:
        return self.negative or ", ".join(self.records) or self.error or ""


def make_resolver(settings: DnsblSettings) -> dns.asyncresolver.Resolver:
    """An uncached async resolver on the configured nameservers (``/etc/resolv.conf`` if none)."""
    endpoints = settings.endpoints()
    resolver = dns.asyncresolver.Resolver(configure=not endpoints)
    if endpoints:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in endpoints]
    # A cache would hide a delisting for a TTL; each nameserver gets a try within one timeout.
    resolver.cache = None
    resolver.lifetime = settings.timeout
    resolver.timeout = settings.timeout / max(1, len(resolver.nameservers))
    resolver.use_edns(0, 0, 1232)
    return resolver


class _Run:
    """State of one run: the bounded query pool, results and health as they arrive."""

    def __init__(self, settings: DnsblSettings) -> None:
        self.timeout = settings.timeout
        self.resolver = make_resolver(settings)
        self.semaphore = asyncio.Semaphore(settings.concurrency)
        self.in_flight = 0
        self.peak = 0
        self.queries = 0
        self.results: dict[tuple[str, str], CheckResult] = {}
        self.health: dict[str, ListHealth] = {}

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with self.semaphore:
            self.in_flight += 1
            self.queries += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1

    async def lookup(self, qname: str, rdtype: str) -> _Reply:
        """Resolve ``qname``; errors become a ``_Reply`` (never raised, never showing the name,
        which may carry an access key)."""
        async with self._slot():
            start = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout + _HARD_TIMEOUT_SLACK):
                    answer = await self.resolver.resolve(qname, rdtype, search=False)
            except dns.resolver.NXDOMAIN:
                return _Reply(negative="NXDOMAIN", ms=_ms_since(start))
            except dns.resolver.NoAnswer:
                return _Reply(negative="NODATA", ms=_ms_since(start))
            except dns.resolver.NoNameservers as exc:
                return _nameserver_failure(exc, _ms_since(start))
            except (dns.exception.Timeout, TimeoutError):
                error = f"no answer within {self.timeout:g} s"
                return _Reply(failure=Failure.TIMEOUT, error=error, ms=_ms_since(start))
            except (dns.exception.DNSException, OSError) as exc:
                return _Reply(failure=Failure.DNS_ERROR, error=type(exc).__name__, ms=_ms_since(start))
        if rdtype == "TXT":
            records = tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer)
        else:
            records = tuple(r.address for r in answer)
        return _Reply(records=records, ms=_ms_since(start))

    async def check_list(self, blocklist: BlockList, targets: Sequence[str]) -> None:
        """Test the list's canaries, then (if healthy) check every target on it."""
        health = await self._test_points(blocklist)
        self.health[blocklist.zone] = health
        if not health.healthy:
            error = f"list failed its test points: {health.error}"
            for target in targets:
                self.results[target, blocklist.zone] = CheckResult(
                    target, blocklist.zone, Status.UNKNOWN, failure=Failure.LIST_UNHEALTHY, error=error
                )
            return
        await asyncio.gather(*(self._check(blocklist, target) for target in targets))

    async def _test_points(self, blocklist: BlockList) -> ListHealth:
        problems = await asyncio.gather(
            *(self._test_point(blocklist, point, True) for point in blocklist.listed_test_points),
            *(self._test_point(blocklist, point, False) for point in blocklist.not_listed_test_points),
        )
        wrong = [problem for problem in problems if problem]
        return ListHealth(blocklist.zone, not wrong, "; ".join(wrong) or None)

    async def _test_point(self, blocklist: BlockList, point: str, listed: bool) -> str | None:
        reply = await self.lookup(query_name(point, blocklist.query_zone), "A")
        if listed:
            if reply.records:
                verdict = classify(blocklist, reply.records)
                if verdict.status is Status.LISTED:
                    return None
                return f"test point {point} must be listed, got {verdict.error}"
            return f"test point {point} must be listed, got {reply.describe()}"
        if reply.negative == "NXDOMAIN":
            return None
        return f"test point {point} must be NXDOMAIN, got {reply.describe()}"

    async def _check(self, blocklist: BlockList, target: str) -> None:
        zone = blocklist.zone
        qname = query_name(target, blocklist.query_zone)
        reply = await self.lookup(qname, "A")
        if reply.negative:
            result = CheckResult(target, zone, Status.NOT_LISTED, answer=reply.negative, query_ms=reply.ms)
        elif reply.failure:
            result = CheckResult(
                target, zone, Status.UNKNOWN, query_ms=reply.ms, failure=reply.failure, error=reply.error
            )
        else:
            verdict = classify(blocklist, reply.records)
            # TXT says why (a listing's reason, or a refusal's explanation); never parsed.
            txt = await self.lookup(qname, "TXT")
            result = CheckResult(
                target, zone, verdict.status, verdict.listings, txt.records, reply.describe(), reply.ms,
                verdict.failure, verdict.error,
            )
        self.results[target, zone] = result


def _ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def _nameserver_failure(exc: dns.resolver.NoNameservers, ms: float) -> _Reply:
    # errors: (nameserver, tcp, port, error or rcode text, response) per failed attempt.
    errors = exc.kwargs.get("errors") or []
    outcomes = {str(error[3]) for error in errors}
    failure = {"SERVFAIL": Failure.SERVFAIL, "REFUSED": Failure.REFUSED}.get(
        outcomes.pop() if len(outcomes) == 1 else "", Failure.DNS_ERROR
    )
    text = "; ".join(f"{error[0]} answered {error[3]}" for error in errors) or "no nameserver answered"
    return _Reply(failure=failure, error=text, ms=ms)


async def check(
    targets: Sequence[str],
    lists: Sequence[BlockList],
    settings: DnsblSettings,
    *,
    clock: Clock = time.time,
) -> RunResult:
    """Check each target on each list that applies to it, once, within ``settings.deadline``.

    ``targets`` are IP addresses or domain names (validated, e.g. by ``DnsblSettings``); the
    resolver, timeout and concurrency come from ``settings``. Pairs still unanswered at the
    deadline are unknown, and lists whose test points had not answered are unhealthy.
    """
    started, start = clock(), time.monotonic()
    run = _Run(settings)
    plan = {bl.zone: [t for t in targets if target_kind(t) in bl.kinds] for bl in lists}
    # A list no target applies to is not asked at all, not even its test points.
    lists = [bl for bl in lists if plan[bl.zone]]
    tasks = [asyncio.create_task(run.check_list(bl, plan[bl.zone])) for bl in lists]
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=settings.deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # a bug in the checker must surface, not pass for a deadline
    late = f"run deadline ({settings.deadline:g} s) reached first"
    health = tuple(
        run.health.get(bl.zone) or ListHealth(bl.zone, False, f"test points not answered: {late}")
        for bl in lists
    )
    results = tuple(
        run.results.get((target, bl.zone))
        or CheckResult(target, bl.zone, Status.UNKNOWN, failure=Failure.DEADLINE, error=late)
        for target in targets
        for bl in lists
        if target in plan[bl.zone]
    )
    return RunResult(
        started, clock(), time.monotonic() - start, run.peak, run.queries, tuple(lists), health, results
    )


def definitive_answers(run: RunResult) -> dict[tuple[str, str], Definitive]:
    """The definitive (listed / not listed) answers of one run, by (target, list)."""
    return {
        (r.target, r.list): Definitive(r, run.finished) for r in run.results if r.status is not Status.UNKNOWN
    }


def results_dict(run: RunResult, definitive: Mapping[tuple[str, str], Definitive]) -> dict[str, Any]:
    """A JSON-serialisable report of ``run``; listings and impact come from ``definitive``."""
    lists = {bl.zone: bl for bl in run.lists}
    health = {h.list: h for h in run.health}
    targets: dict[str, Any] = {}
    for r in run.results:
        last = definitive.get((r.target, r.list))
        entry = targets.setdefault(r.target, {"impact_score": 0.0, "lists": {}})
        entry["lists"][r.list] = {
            "status": str(r.status),
            "codes": [listing.code for listing in r.listings],
            "meanings": [listing.meaning for listing in r.listings],
            "weight": r.weight,
            "txt": list(r.txt),
            "answer": r.answer,
            "query_ms": r.query_ms,
            "error_kind": r.failure and str(r.failure),
            "error": r.error,
            "delist_url": lists[r.list].delist_url_for(r.target),
            "last_definitive": last and {
                "status": str(last.result.status),
                "codes": [listing.code for listing in last.result.listings],
                "at": last.at,
            },
        }
    for target, entry in targets.items():
        entry["impact_score"] = _impact(target, definitive)
    return {
        "run": {
            "started": run.started,
            "finished": run.finished,
            "duration_seconds": round(run.duration_seconds, 3),
            "peak_concurrency": run.peak_concurrency,
            "queries": run.queries,
        },
        "lists": {
            bl.zone: {
                "name": bl.name,
                "weight": bl.weight,
                "healthy": health[bl.zone].healthy,
                "error": health[bl.zone].error,
            }
            for bl in run.lists
        },
        "targets": targets,
    }


def _impact(target: str, definitive: Mapping[tuple[str, str], Definitive]) -> float:
    return impact_score(
        d.result.weight
        for (t, _), d in definitive.items()
        if t == target and d.result.status is Status.LISTED
    )


def _codes(result: CheckResult) -> tuple[str, ...]:
    return tuple(listing.code for listing in result.listings)


class DnsblRunError(RuntimeError):
    """A run in which no list gave a single definitive answer."""


@dataclass(frozen=True)
class _Snapshot:
    run: RunResult
    definitive: Mapping[tuple[str, str], Definitive]


class DnsblCollector(BaseCollector):
    """Checks the configured targets on DNS blocklists every ``interval`` seconds (``refresh``)
    and renders the latest snapshot (``families``); scrapes never send DNS queries."""

    id = "dnsbl"

    def __init__(self, settings: DnsblSettings, clock: Clock = time.time) -> None:
        super().__init__(clock)
        self.settings = settings
        self.interval = settings.interval
        self.jitter = settings.jitter
        self.lists = tuple(load_catalogue(settings))
        self.targets = settings.target_names()
        self._lists = {bl.zone: bl for bl in self.lists}
        self._snapshot: _Snapshot | None = None

    def refresh(self) -> None:
        """Run one check (blocking; call from a thread without a running event loop).

        Raises ``DnsblRunError`` after publishing the snapshot when nothing was definitive.
        """
        run = asyncio.run(check(self.targets, self.lists, self.settings, clock=self.clock))
        previous = self._snapshot.definitive if self._snapshot else {}
        definitive = {**previous, **definitive_answers(run)}
        self._log_changes(previous, definitive)
        for h in run.health:
            if not h.healthy:
                log.warning("dnsbl: %s unhealthy this run, its answers are unknown: %s", h.list, h.error)
        self._snapshot = _Snapshot(run, MappingProxyType(definitive))
        unknown = [r for r in run.results if r.status is Status.UNKNOWN]
        if unknown and len(unknown) == len(run.results):
            raise DnsblRunError(f"no definitive answer in {len(unknown)} checks; e.g. {unknown[0].error}")

    def _log_changes(
        self, before: Mapping[tuple[str, str], Definitive], after: Mapping[tuple[str, str], Definitive]
    ) -> None:
        for (target, zone), now in after.items():
            was = before.get((target, zone))
            listed = now.result.status is Status.LISTED
            if listed and (was is None or _codes(was.result) != _codes(now.result)):
                codes = ", ".join(f"{x.code} {x.meaning}" for x in now.result.listings)
                log.warning("dnsbl: %s listed on %s: %s; TXT: %s", target, zone, codes,
                            " | ".join(now.result.txt) or "-")
            elif not listed and was is not None and was.result.status is Status.LISTED:
                log.info("dnsbl: %s no longer listed on %s", target, zone)

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
        listed = GaugeMetricFamily(
            "mtaq_dnsbl_listed",
            "Last definitive blocklist answer: 1 = A record with a listing code, 0 = NXDOMAIN or "
            "NODATA. Unknown answers keep the previous value; absent until a definitive answer.",
            labels=["target", "list"],
        )
        success = GaugeMetricFamily(
            "mtaq_dnsbl_check_success",
            "1 if the last run got a definitive answer for the target on the list; 0 if unknown "
            "(timeout, SERVFAIL, REFUSED, refusal code, list failed its test points, run deadline).",
            labels=["target", "list"],
        )
        info = GaugeMetricFamily(
            "mtaq_dnsbl_listing_info",
            "Current listings (last definitive answer), one series per returned A record; meaning "
            "and delist_url from the list catalogue. Always 1.",
            labels=["target", "list", "code", "meaning", "delist_url"],
        )
        impact = GaugeMetricFamily(
            "mtaq_dnsbl_impact_score",
            "0-100 from the catalogue weights of the lists the target is currently listed on: "
            "100*(1-prod(1-w/100)), w = the heaviest returned code's weight per list.",
            labels=["target"],
        )
        healthy = GaugeMetricFamily(
            "mtaq_dnsbl_list_healthy",
            "1 if the list's RFC 5782 test points answered correctly in the last run (listed "
            "canary listed, not-listed canary NXDOMAIN); 0 makes its results unknown for the run.",
            labels=["list"],
        )
        last_run = GaugeMetricFamily(
            "mtaq_dnsbl_last_run_timestamp_seconds", "Unix time the last blocklist run finished."
        )
        duration = GaugeMetricFamily(
            "mtaq_dnsbl_run_duration_seconds",
            "Wall time of the last blocklist run over all targets and lists (bounded by the deadline).",
        )
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
                impact.add_metric([target], _impact(target, snapshot.definitive))
            for h in run.health:
                healthy.add_metric([h.list], float(h.healthy))
            last_run.add_metric([], run.finished)
            duration.add_metric([], run.duration_seconds)
        yield from (listed, success, info, impact, healthy, last_run, duration)
