"""The DNS blocklist checker: one run asks every list about every target it applies to.

Queries go through dnspython's async resolver (IPv4 / IPv6 lists for IPs, domain lists for
domains), with a per-query timeout, an overall deadline and a bounded number of queries in
flight. Each (target, list) answer is exactly one of:

* ``listed``: A records that are all codes the list documents (bitmask lists decoded);
* ``not_listed``: NXDOMAIN, or NOERROR without an A record (NODATA);
* ``unknown``: timeout, SERVFAIL, REFUSED, a refusal/error code (Spamhaus 127.255.255.x, URIBL and
  SURBL 127.0.0.1), an answer outside 127.0.0.0/8 (rewriting resolver), an undocumented code on a
  list that documents all of its codes, a list that failed its RFC 5782 test points this run, or
  the run deadline. Unknown is never read as listed nor as clean.

Before its targets, each list's test points are queried (the listed canary must be listed, the
not-listed canary NXDOMAIN); a list that fails them is unhealthy and its targets are not queried:
their results are unknown for that run. TXT records are fetched only for A-record answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

from collectors.base import Clock
from collectors.dnsbl_catalogue import BlockList, Code, DnsblSettings

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
    MALFORMED = "malformed_answer"


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

    async def lookup(self, qname: str, rdtype: str, zone: str) -> _Reply:
        """Resolve ``qname`` in the list's ``zone``; errors become a ``_Reply`` (never raised,
        never showing the name, which may carry an access key).

        Only records of the asked type for exactly ``qname`` count, reached at most through
        CNAMEs inside ``zone``. A reply whose answer section holds anything else (records for
        another name, another type, a CNAME leading nowhere) is malformed: unknown, never a
        clean NODATA.
        """
        async with self._slot():
            start = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout + _HARD_TIMEOUT_SLACK):
                    answer = await self.resolver.resolve(qname, rdtype, search=False)
            except dns.resolver.NXDOMAIN:
                return _Reply(negative="NXDOMAIN", ms=_ms_since(start))
            except dns.resolver.NoAnswer as exc:
                records = exc.response().answer
                if records:
                    error = f"the answer does not match the question: {_describe_rrsets(records)}"
                    return _Reply(failure=Failure.MALFORMED, error=error, ms=_ms_since(start))
                return _Reply(negative="NODATA", ms=_ms_since(start))
            except dns.resolver.NoNameservers as exc:
                return _nameserver_failure(exc, _ms_since(start))
            except (dns.exception.Timeout, TimeoutError):
                error = f"no answer within {self.timeout:g} s"
                return _Reply(failure=Failure.TIMEOUT, error=error, ms=_ms_since(start))
            except (dns.exception.DNSException, OSError) as exc:
                return _Reply(failure=Failure.DNS_ERROR, error=type(exc).__name__, ms=_ms_since(start))
        if not answer.canonical_name.is_subdomain(dns.name.from_text(zone)):
            error = f"the answer leaves the list's zone through a CNAME to {answer.canonical_name}"
            return _Reply(failure=Failure.MALFORMED, error=error, ms=_ms_since(start))
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
        reply = await self.lookup(query_name(point, blocklist.query_zone), "A", blocklist.query_zone)
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
        reply = await self.lookup(qname, "A", blocklist.query_zone)
        if reply.negative:
            result = CheckResult(target, zone, Status.NOT_LISTED, answer=reply.negative, query_ms=reply.ms)
        elif reply.failure:
            result = CheckResult(
                target, zone, Status.UNKNOWN, query_ms=reply.ms, failure=reply.failure, error=reply.error
            )
        else:
            verdict = classify(blocklist, reply.records)
            # TXT says why (a listing's reason, or a refusal's explanation); never parsed.
            txt = await self.lookup(qname, "TXT", blocklist.query_zone)
            result = CheckResult(
                target, zone, verdict.status, verdict.listings, txt.records, reply.describe(), reply.ms,
                verdict.failure, verdict.error,
            )
        self.results[target, zone] = result


def _describe_rrsets(rrsets: Sequence[dns.rrset.RRset]) -> str:
    """What an unexpected answer section held, without the owner names (they may carry a key)."""
    return ", ".join(f"{dns.rdatatype.to_text(r.rdtype)} x{len(r)}" for r in rrsets)


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
