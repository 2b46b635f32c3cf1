"""The incident summary behind ``/``, ``/api/v1/status`` and ``mtaq-exporter status``.

Everything comes from what the collectors already hold in memory: the numbers from their metric
families (so the page and ``/metrics`` cannot disagree), the context (last replies, dead letters)
from the accounting snapshots of the log collectors. Nothing here reads the queue or the log:
a request costs the same with ten queued messages or a million.

The agent keeps only current values and cumulative counters, so a scheduled job of this module
(``summary``, every ``SAMPLE_INTERVAL`` seconds) keeps two short histories: each lane's depth at
its last ``TREND_POINTS`` queue scans (the trend), and the delivery counters every sample for
``WINDOW`` seconds (retry rate and bounce ratio per provider over the last minutes).

It finds its sources by what collectors emit and offer, never by collector id: queue families
(``mtaq_queue_*``, ``mtaq_up``), delivery-log families and ``snapshots()`` (accounting snapshots
with dead letters and reply samples), blocklist families.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from collectors import families as F
from collectors.base import BaseCollector, Clock, Job
from collectors.classify import LOCAL
from collectors.delivery_accounting import DEFERRED, AccountingSnapshot
from collectors.lane_objectives import LaneObjective
from collectors.log_collector import mask_address

#: Seconds between samples of the collectors' state.
SAMPLE_INTERVAL = 10.0
#: Seconds over which rates and ratios are computed.
WINDOW = 300.0
#: Queue scans kept per (instance, lane) for the depth trend.
TREND_POINTS = 20
#: Rows of the provider x reason table and of the dead-letter list.
TOP_ROWS = 10
#: Queues that do not count towards a lane's depth and age: held mail is parked on purpose.
PARKED_QUEUES = frozenset({"hold"})
#: Per lane, the queues shown on their own (None for an MTA without that queue): Postfix's deferred
#: and hold queues, Exim's frozen messages (which count in the depth too: they need a person).
SHOWN_QUEUES = {"deferred": DEFERRED, "held": "hold", "frozen": "frozen"}

Labels = Mapping[str, str]
Samples = dict[str, list[tuple[Labels, float]]]
#: Active actions, when the actions subsystem provides them: one mapping of columns per action.
ActionsSource = Callable[[], Sequence[Mapping[str, object]]]


@runtime_checkable
class AccountingSource(Protocol):
    """A collector that keeps delivery accounting (dead letters, reply samples) per MTA instance."""

    def snapshots(self) -> Mapping[str, AccountingSnapshot]:
        """The accounting state now, by ``mta_instance``."""
        ...


@dataclass(frozen=True)
class _CounterSample:
    """Cumulative delivery counters at one moment (provider ``local`` left out, as in the rules)."""

    at: float
    attempts: dict[tuple[str, str], float]  # (provider, status)
    bounces: dict[tuple[str, str], float]  # (provider, type)
    deferrals: dict[tuple[str, str], float]  # (provider, reason)


def collect_samples(collectors: Iterable[BaseCollector]) -> Samples:
    """Every sample the collectors' families hold now, by sample name (what ``/metrics`` shows)."""
    samples: Samples = defaultdict(list)
    for collector in collectors:
        try:
            families = list(collector.families())
        except Exception:  # a scrape records the failure in the health; the summary shows the rest
            continue
        for family in families:
            for sample in family.samples:
                samples[sample.name].append((sample.labels, sample.value))
    return samples


def _counters(samples: Samples, at: float) -> _CounterSample:
    attempts: dict[tuple[str, str], float] = defaultdict(float)
    bounces: dict[tuple[str, str], float] = defaultdict(float)
    deferrals: dict[tuple[str, str], float] = defaultdict(float)
    for labels, value in samples.get(F.ATTEMPTS.name, ()):
        if labels["provider"] != LOCAL:
            attempts[(labels["provider"], labels["status"])] += value
    for labels, value in samples.get(F.BOUNCES.name, ()):
        if labels["provider"] != LOCAL:
            bounces[(labels["provider"], labels["type"])] += value
    for labels, value in samples.get(F.DEFERRALS.name, ()):
        deferrals[(labels["provider"], labels["reason"])] += value
    return _CounterSample(at, dict(attempts), dict(bounces), dict(deferrals))


def _lane_depths(samples: Samples) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(mta, instance, lane) -> messages, recipients, oldest (arrival time or None), and the
    ``SHOWN_QUEUES`` counts (None where the MTA has no such queue)."""
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}

    def cell(labels: Labels) -> dict[str, Any]:
        key = (labels["mta"], labels["mta_instance"], labels["lane"])
        return cells.setdefault(key, {"messages": 0, "recipients": 0, "oldest": None,
                                      **dict.fromkeys(SHOWN_QUEUES)})

    shown = {queue: name for name, queue in SHOWN_QUEUES.items()}
    for labels, value in samples.get(F.QUEUE_MESSAGES.name, ()):
        totals = cell(labels)
        queue = labels["queue"]
        if queue in shown:  # the queue's series are zero-filled: present means the MTA has it
            totals[shown[queue]] = (totals[shown[queue]] or 0) + int(value)
        if queue not in PARKED_QUEUES:
            totals["messages"] += int(value)
    for labels, value in samples.get(F.QUEUE_RECIPIENTS.name, ()):
        if labels["queue"] not in PARKED_QUEUES:
            cell(labels)["recipients"] += int(value)
    for labels, value in samples.get(F.QUEUE_OLDEST.name, ()):
        if labels["queue"] not in PARKED_QUEUES and value:
            totals = cell(labels)
            totals["oldest"] = value if totals["oldest"] is None else min(totals["oldest"], value)
    return cells


def _outcomes(provider: str, counters: _CounterSample, base: _CounterSample | None = None) -> dict[str, int]:
    """A provider's attempts by status and bounces by type: totals, or the increase since ``base``."""

    def value(table: str, key: tuple[str, str]) -> int:
        since = getattr(base, table).get(key, 0.0) if base is not None else 0.0
        return int(getattr(counters, table).get(key, 0.0) - since)

    return {"sent": value("attempts", (provider, "sent")), "deferred": value("attempts", (provider, "deferred")),
            "bounced": value("attempts", (provider, "bounced")), "hard_bounces": value("bounces", (provider, "hard")),
            "soft_bounces": value("bounces", (provider, "soft"))}


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


class Summary:
    """Samples the collectors on a schedule and builds the summary document on request."""

    def __init__(self, collectors: Sequence[BaseCollector], objectives: Mapping[str, LaneObjective], *,
                 disabled: Sequence[tuple[str, str]] = (), banner: str | None = None,
                 actions: ActionsSource | None = None, clock: Clock = time.time) -> None:
        self.collectors = list(collectors)
        self.objectives = dict(objectives)
        self.disabled = list(disabled)
        self.banner = banner
        self.actions = actions
        self.clock = clock
        described = {f.name for c in self.collectors for f in c.describe()}
        self.has_queue = F.QUEUE_MESSAGES.name in described
        self.has_log = F.ATTEMPTS.name in described
        self.has_blocklists = F.DNSBL_LISTED.name in described
        self._lock = threading.Lock()
        self._trend: dict[tuple[str, str, str], deque[tuple[float, int]]] = {}
        self._counters: deque[_CounterSample] = deque()

    def job(self) -> Job:
        """The sampling job for the agent's scheduler."""
        return Job("summary", SAMPLE_INTERVAL, self.sample)

    def sample(self) -> None:
        """Record the lanes' depths of new queue scans and the delivery counters now."""
        samples = collect_samples(self.collectors)
        now = self.clock()
        scans = {(labels["mta"], labels["mta_instance"]): value
                 for labels, value in samples.get(F.QUEUE_LAST_SCAN.name, ())}
        with self._lock:
            for (mta, instance, lane), totals in _lane_depths(samples).items():
                scanned = scans.get((mta, instance))
                if scanned is None:
                    continue
                history = self._trend.setdefault((mta, instance, lane), deque(maxlen=TREND_POINTS))
                if not history or history[-1][0] != scanned:
                    history.append((scanned, totals["messages"]))
            if self.has_log:
                self._counters.append(_counters(samples, now))
                # Keep one sample older than the window: the base of a rate over the whole window.
                while len(self._counters) > 1 and self._counters[1].at <= now - WINDOW:
                    self._counters.popleft()

    # -- the document ----------------------------------------------------------------------------

    def document(self, *, trusted: bool) -> dict[str, Any]:
        """The summary (``GET /api/v1/status`` under ``summary``; keys in ``exporter/commands/status.py``).

        Mail addresses are masked unless ``trusted``.
        """
        now = self.clock()
        samples = collect_samples(self.collectors)
        snapshots = [s for c in self.collectors if isinstance(c, AccountingSource) for s in c.snapshots().values()]
        replies: dict[tuple[str, str, str], str] = {}
        for snapshot in snapshots:
            replies.update(snapshot.reason_samples)
        window = self._window(samples, now)
        document: dict[str, Any] = {
            "generated_at": now,
            "banner": self.banner,
            "addresses_masked": not trusted,
            "window_seconds": round(window[0], 3) if window else None,
            "queue": self._queue(samples, now) if self.has_queue else None,
            "deferred": self._deferred(samples, window, replies) if self.has_queue or self.has_log else None,
            "providers": self._providers(samples, window) if self.has_log else None,
            "dead_letters": self._dead_letters(samples, snapshots, trusted) if self.has_log else None,
            "blocklists": self._blocklists(samples) if self.has_blocklists else None,
            "log_sources": self._log_sources(samples) if self.has_log else None,
            "disabled_collectors": [{"id": cid, "default": default} for cid, default in self.disabled],
        }
        if self.actions is not None:
            document["actions"] = [dict(action) for action in self.actions()]
        return document

    def _window(self, samples: Samples, now: float) -> tuple[float, _CounterSample, _CounterSample] | None:
        """(seconds, base sample, current counters) of the rate window; None before the first sample.

        The base is the newest sample at least ``WINDOW`` old, else the oldest one (the agent has
        been up for less than the window)."""
        with self._lock:
            counters = list(self._counters)
        if not counters:
            return None
        older = [s for s in counters if s.at <= now - WINDOW]
        base = older[-1] if older else counters[0]
        return now - base.at, base, _counters(samples, now)

    def _queue(self, samples: Samples, now: float) -> dict[str, Any]:
        instances = []
        scans = {(lb["mta"], lb["mta_instance"]): v for lb, v in samples.get(F.QUEUE_LAST_SCAN.name, ())}
        durations = {(lb["mta"], lb["mta_instance"]): v for lb, v in samples.get(F.QUEUE_SCAN_DURATION.name, ())}
        sources = {(lb["mta"], lb["mta_instance"]): f"{lb['source']} {lb['path']}"
                   for lb, _ in samples.get(F.QUEUE_SOURCE.name, ())}
        for labels, value in samples.get(F.UP.name, ()):
            key = (labels["mta"], labels["mta_instance"])
            instances.append({"mta": key[0], "instance": key[1], "up": bool(value), "last_scan": scans.get(key),
                              "scan_duration_seconds": durations.get(key), "source": sources.get(key)})
        lanes = []
        with self._lock:
            trends = {key: list(history) for key, history in self._trend.items()}
        for (mta, instance, lane), totals in sorted(_lane_depths(samples).items()):
            oldest = totals["oldest"]
            age = max(0.0, now - oldest) if oldest is not None else None
            objective = self.objectives.get(lane)
            history = trends.get((mta, instance, lane), [])
            scanned = scans.get((mta, instance))
            if scanned is not None and (not history or history[-1][0] != scanned):
                history.append((scanned, totals["messages"]))
            trend = [depth for _, depth in history]
            lanes.append({
                "mta": mta, "instance": instance, "lane": lane, "messages": totals["messages"],
                "recipients": totals["recipients"], **{name: totals[name] for name in SHOWN_QUEUES},
                "oldest_arrival": oldest, "oldest_age_seconds": round(age, 3) if age is not None else None,
                "objective": objective.model_dump() if objective else None,
                "state": _state(totals["messages"], age, objective),
                "trend": trend,
                "trend_seconds": round(history[-1][0] - history[0][0], 3) if len(history) > 1 else None,
            })
        return {"instances": instances, "lanes": lanes}

    def _deferred(self, samples: Samples, window: tuple[float, _CounterSample, _CounterSample] | None,
                  replies: Mapping[tuple[str, str, str], str]) -> list[dict[str, Any]]:
        rows: dict[tuple[str, str], dict[str, Any]] = {}

        def row(provider: str, reason: str) -> dict[str, Any]:
            return rows.setdefault((provider, reason), {"provider": provider, "reason": reason, "recipients": 0,
                                                        "deferrals_in_window": 0})

        for labels, value in samples.get(F.QUEUE_DEFERRED.name, ()):
            row(labels["provider"], labels["reason"])["recipients"] += int(value)
        if window is not None:
            _, base, current = window
            for key, value in current.deferrals.items():
                delta = value - base.deferrals.get(key, 0.0)
                if delta > 0:
                    row(*key)["deferrals_in_window"] += int(delta)
        ranked = sorted((r for r in rows.values() if r["recipients"] or r["deferrals_in_window"]),
                        key=lambda r: (-r["recipients"], -r["deferrals_in_window"], r["provider"], r["reason"]))
        for r in ranked:
            r["sample"] = replies.get((DEFERRED, r["provider"], r["reason"]))
        return ranked[:TOP_ROWS]

    def _providers(self, samples: Samples, window: tuple[float, _CounterSample, _CounterSample] | None
                   ) -> list[dict[str, Any]]:
        total = _counters(samples, 0.0)
        rows = []
        for provider in sorted({p for p, _ in total.attempts} | {p for p, _ in total.bounces}):
            entry: dict[str, Any] = {"provider": provider, **_outcomes(provider, total), "window": None}
            if window is not None:
                _, base, current = window
                outcomes = _outcomes(provider, current, base)
                entry["window"] = {
                    **outcomes,
                    # The recording rules' definitions: retries / all attempts; bounces / final outcomes.
                    "retry_rate": _ratio(outcomes["deferred"],
                                         outcomes["sent"] + outcomes["deferred"] + outcomes["bounced"]),
                    "bounce_ratio": _ratio(outcomes["hard_bounces"] + outcomes["soft_bounces"],
                                           outcomes["sent"] + outcomes["hard_bounces"] + outcomes["soft_bounces"]),
                }
            rows.append(entry)
        rows.sort(key=lambda r: (-(r["sent"] + r["deferred"] + r["bounced"]), r["provider"]))
        return rows

    @staticmethod
    def _dead_letters(samples: Samples, snapshots: Sequence[AccountingSnapshot], trusted: bool) -> dict[str, Any]:
        letters = sorted((d for s in snapshots for d in s.dead_letter_log), key=lambda d: -d.expired_at)[:TOP_ROWS]

        def shown(address: str | None) -> str | None:
            return address if trusted else mask_address(address)

        return {
            "total": int(sum(value for _, value in samples.get(F.DEAD_LETTERS.name, ()))),
            "recent": [{
                "qid": d.qid, "instance": d.instance, "lane": d.lane, "provider": d.provider, "reason": d.reason,
                "text": d.text, "first_seen": d.first_seen, "expired_at": d.expired_at, "forced": d.forced,
                "attempts": d.attempts, "pending_recipients": d.pending_recipients, "sender": shown(d.sender),
                "recipients": [shown(r) for r in d.recipients],
            } for d in letters],
        }

    @staticmethod
    def _blocklists(samples: Samples) -> dict[str, Any]:
        targets: dict[str, dict[str, Any]] = {}
        for labels, value in samples.get(F.DNSBL_IMPACT.name, ()):
            targets[labels["target"]] = {"target": labels["target"], "impact_score": value, "listings": [],
                                         "unknown_lists": 0}
        for labels, _ in samples.get(F.DNSBL_LISTING_INFO.name, ()):
            entry = targets.setdefault(labels["target"], {"target": labels["target"], "impact_score": 0.0,
                                                          "listings": [], "unknown_lists": 0})
            entry["listings"].append({k: labels[k] for k in ("list", "code", "meaning", "delist_url")})
        for labels, value in samples.get(F.DNSBL_CHECK_SUCCESS.name, ()):
            if not value and labels["target"] in targets:
                targets[labels["target"]]["unknown_lists"] += 1
        last_run = [value for _, value in samples.get(F.DNSBL_LAST_RUN.name, ())]
        return {
            "last_run": last_run[0] if last_run else None,
            "unhealthy_lists": sorted(lb["list"] for lb, v in samples.get(F.DNSBL_LIST_HEALTHY.name, ()) if not v),
            "targets": sorted(targets.values(), key=lambda t: (-t["impact_score"], t["target"])),
        }

    @staticmethod
    def _log_sources(samples: Samples) -> list[dict[str, Any]]:
        sources: dict[tuple[str, str], dict[str, Any]] = {}
        for labels, value in samples.get(F.LOG_LINES.name, ()):
            entry = sources.setdefault((labels["mta"], labels["source"]),
                                       {"mta": labels["mta"], "source": labels["source"], "last_line": None,
                                        "lines": {}})
            entry["lines"][labels["result"]] = int(value)
        for labels, value in samples.get(F.LOG_LAST_LINE.name, ()):
            key = (labels["mta"], labels["source"])
            if key in sources:
                sources[key]["last_line"] = value
        return [sources[key] for key in sorted(sources)]


def _state(messages: int, age: float | None, objective: LaneObjective | None) -> str:
    """``critical``, ``warning`` or ``ok`` against the lane's objectives (the alerts add a duration)."""
    if objective is None:
        return "ok"
    if age is not None and objective.critical_oldest_age is not None and age > objective.critical_oldest_age:
        return "critical"
    if (age is not None and objective.max_oldest_age is not None and age > objective.max_oldest_age) or \
            (objective.max_messages is not None and messages > objective.max_messages):
        return "warning"
    return "ok"
