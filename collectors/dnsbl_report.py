"""What a blocklist run means over time: definitive answers kept across runs, impact scores and
the JSON report (``GET /api/v1/blocklists``, ``blocklists check --json``).

An unknown answer never clears (or raises) a listing: the last definitive answer per (target,
list) stands until another definitive answer replaces it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from collectors.dnsbl_check import CheckResult, RunResult, Status


@dataclass(frozen=True)
class Definitive:
    """The last definitive (listed / not listed) answer for a (target, list) and when it came."""

    result: CheckResult
    at: float



def impact_score(weights: Iterable[int]) -> float:
    """Combine list weights (0-100) into a 0-100 score: ``100 * (1 - prod(1 - w / 100))``.

    A weight reads as the chance that a receiver refuses mail because of that listing, and the
    score as the chance that at least one listing does, lists taken as independent. So the score
    is never below the heaviest listing (an SBL listing alone gives 100, PSBL alone 25), rises
    with every further listing (PSBL 25 + s5h 15 gives 36.2, not the 40 a sum would) and never
    passes 100. Rounded to one decimal.
    """
    return round(100 * (1 - math.prod(1 - weight / 100 for weight in weights)), 1)



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
        entry["impact_score"] = target_impact(target, definitive)
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


def target_impact(target: str, definitive: Mapping[tuple[str, str], Definitive]) -> float:
    """The impact score of ``target`` from its current listings."""
    return impact_score(
        d.result.weight
        for (t, _), d in definitive.items()
        if t == target and d.result.status is Status.LISTED
    )


def listing_codes(result: CheckResult) -> tuple[str, ...]:
    """The codes of a listed answer."""
    return tuple(listing.code for listing in result.listings)
