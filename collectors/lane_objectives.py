"""Per-lane objectives: how deep a lane's queue may get, how old its oldest message may be, and how
long its mail may wait for a first delivery attempt while less urgent lanes deliver.

Configured under ``lanes.objectives`` (``LaneObjective`` per lane name) and exported as gauges, so
the shipped alert rules compare each lane with its own objective (``on (job, instance, lane)``)
instead of naming lanes. ``high``, ``normal`` and ``low`` have built-in objectives (the limits the
rules used to hard-code); any other lane without one takes the default lane's. Lanes rank by
``max_oldest_age``: one that allows older mail is less urgent, which is how the priority-inversion
alert tells which lanes must not starve which, whatever their names. Sample output::

    mtaq_lane_objective_messages{lane="high",objective="max_messages"} 500.0
    mtaq_lane_objective_seconds{lane="high",objective="max_oldest_age"} 900.0
    mtaq_lane_objective_seconds{lane="high",objective="critical_oldest_age"} 3600.0
    mtaq_lane_objective_seconds{lane="high",objective="max_first_attempt_wait"} 300.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.metrics_core import Metric
from pydantic import Field

from collectors import families as F
from collectors.settings import Duration, StrictModel

#: Objective names: the ``objective`` label value of each exported number.
MAX_MESSAGES, MAX_OLDEST_AGE, CRITICAL_OLDEST_AGE = "max_messages", "max_oldest_age", "critical_oldest_age"
MAX_FIRST_ATTEMPT_WAIT = "max_first_attempt_wait"


class LaneObjective(StrictModel):
    """One lane's objectives; a key left out takes the value of the lane's fallback."""

    max_messages: int | None = Field(default=None, ge=1,
                                     description="queued messages (hold excluded) above which a backlog alert fires")
    max_oldest_age: Duration | None = Field(default=None, description="oldest message age above which a warning fires")
    critical_oldest_age: Duration | None = Field(default=None,
                                                 description="oldest message age above which a critical alert fires")
    max_first_attempt_wait: Duration | None = Field(
        default=None, description="how long a message may wait for its first delivery attempt while a lane with a "
                                  "longer max_oldest_age keeps delivering (priority inversion); unset: not checked")


#: Built-in objectives of the default lanes (the thresholds of rules/mtaq.rules.yml before objectives).
BUILTIN: dict[str, LaneObjective] = {
    "high": LaneObjective(max_messages=500, max_oldest_age=900, critical_oldest_age=3600, max_first_attempt_wait=300),
    "normal": LaneObjective(max_messages=5000, max_oldest_age=3600, critical_oldest_age=21600),
    "low": LaneObjective(max_messages=20000, max_oldest_age=21600, critical_oldest_age=86400),
}
#: What a lane without built-in or configured objectives falls back to when the default lane has none.
FALLBACK = BUILTIN["normal"]


def _merged(lane: str, objective: LaneObjective | None, base: LaneObjective) -> LaneObjective:
    """``objective`` with each unset key taken from ``base``; ValueError naming ``lane`` when the
    result has a critical age below its warning age."""
    if objective is None:
        return base
    merged = base.model_copy(update=objective.model_dump(exclude_none=True))
    if merged.critical_oldest_age < merged.max_oldest_age:  # type: ignore[operator]
        raise ValueError(f"objectives.{lane}: critical_oldest_age ({merged.critical_oldest_age:g} s) must not be "
                         f"below max_oldest_age ({merged.max_oldest_age:g} s)")
    return merged


def resolve(names: Sequence[str], default: str, configured: Mapping[str, LaneObjective]) -> dict[str, LaneObjective]:
    """Every lane's complete objectives: configured keys, else the built-in ones of its name, else
    those of the default lane (itself completed the same way). Raises ValueError for a lane whose
    completed critical age is below its warning age."""
    default_objective = _merged(default, configured.get(default), BUILTIN.get(default, FALLBACK))
    return {name: default_objective if name == default
            else _merged(name, configured.get(name), BUILTIN.get(name, default_objective)) for name in names}


def objective_families(objectives: Mapping[str, LaneObjective]) -> Iterator[Metric]:
    """The two objective families, one series per lane and objective that is set."""
    messages, seconds = F.LANE_OBJECTIVE_MESSAGES.new(), F.LANE_OBJECTIVE_SECONDS.new()
    for lane, objective in objectives.items():
        messages.add_metric([lane, MAX_MESSAGES], objective.max_messages)
        seconds.add_metric([lane, MAX_OLDEST_AGE], objective.max_oldest_age)
        seconds.add_metric([lane, CRITICAL_OLDEST_AGE], objective.critical_oldest_age)
        if objective.max_first_attempt_wait is not None:
            seconds.add_metric([lane, MAX_FIRST_ATTEMPT_WAIT], objective.max_first_attempt_wait)
    yield messages
    yield seconds


class LaneObjectivesCollector:
    """A prometheus_client collector for the objective gauges (configuration: fixed for the run)."""

    def __init__(self, objectives: Mapping[str, LaneObjective]) -> None:
        self.objectives = dict(objectives)

    def describe(self) -> list[Metric]:
        """The families, without samples."""
        return [F.LANE_OBJECTIVE_MESSAGES.new(), F.LANE_OBJECTIVE_SECONDS.new()]

    def collect(self) -> Iterator[Metric]:
        """The objective gauges."""
        return objective_families(self.objectives)
