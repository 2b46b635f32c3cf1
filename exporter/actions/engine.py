"""The actions engine: alerts in, safe and reversible actions out.

Alerts arrive from Alertmanager's webhook or from polling its API (``pull``); both go through
``handle()``, which decides at once and answers with one decision per alert. Execution (``postconf``
and a reload) runs later on one worker thread, so a webhook never waits for the MTA and two
changes never interleave; calls to other systems (``http``) run on a second one, so a slow
endpoint never delays a throttle.

Rules of the game:

- an alert acts only if its labels name this agent (``mta_instance`` among its instances, the
  configured ``agent_labels``), or it names no agent and ``accept_unaddressed`` is on;
- only configured rules act, only on providers of the provider table (never ``other`` or
  ``local``), at most ``max_active`` actions at once;
- one action per (action, provider): another firing alert, or the same one re-sent, extends
  its TTL; the same delivery seen again within ``DUPLICATE_WINDOW`` (a replay, the second of an
  HA pair of Alertmanagers) changes nothing;
- an action ends when its TTL lapses, or ``cooldown`` after its last alert resolved, or when the
  operator restores it; ending undoes exactly what was done;
- a throttle removes its own cause, so its alert resolves and may fire again soon after the
  restore: an action applied again within ``FLAP_WINDOW`` of its restore is a flap, and each flap
  doubles its next cool-down (up to its TTL); an hour without it resets the count (recent restores
  are kept in the state file too);
- active actions are kept in ``state_file`` (atomic writes): after a restart, those still due
  are applied again (idempotent) and those that expired meanwhile are restored;
- every decision is logged as one ``key=value`` line and kept in a bounded history;
- dry-run decides, logs and counts, and changes nothing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from prometheus_client.metrics_core import Metric

from collectors import families as F
from collectors.base import Auth, BaseCollector, Clock, Job, Request, Response, Route, Services
from collectors.classify import LOCAL, OTHER
from collectors.files import atomic_write
from exporter.actions.alerts import Alert, PayloadError, parse_webhook
from exporter.actions.config import ACTIONS, ActionRule, ActionsSection
from exporter.actions.executors import Executor
from exporter.actions.pull import AlertmanagerPuller
from exporter.render import when

log = logging.getLogger("mtaq.actions")

ID = "actions"
RESULTS = ("applied", "extended", "restored", "ignored", "failed", "dry_run")
#: A delivery of an alert seen again within this many seconds is a replay or an HA twin.
DUPLICATE_WINDOW = 60.0
HISTORY = 200
#: An action applied again within this many seconds of its restore is a flap (its cool-down doubles).
FLAP_WINDOW = 3600.0
TICK = 1.0
_LABEL_VALUE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass
class Active:
    """An action in force (or, in dry-run, one that would be)."""

    id: str
    action: str
    provider: str
    alertname: str
    params: dict[str, Any]
    labels: dict[str, str]
    applied_at: float
    expires_at: float
    restore_at: float | None = None
    alerts: dict[str, str] = field(default_factory=dict)  # fingerprint -> startsAt keeping it in force
    changes: dict[str, Any] | None = None  # what the executor changed, once applied
    dry_run: bool = False
    ending: bool = False  # a restore is under way
    flaps: int = 0  # times in a row it was applied again within FLAP_WINDOW of its restore


class ActionEngine(BaseCollector):
    """Decides on alerts, runs executors on worker threads, keeps state, renders its metrics."""

    def __init__(self, section: ActionsSection, executors: Mapping[str, Executor], *, providers: Sequence[str],
                 instances: Sequence[str], clock: Clock = time.time,
                 pull_transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(ID, clock)
        self.section = section
        self.executors = executors
        self.providers = frozenset(p for p in providers if p not in (OTHER, LOCAL))
        self.instances = frozenset(instances)
        self.rules = {rule.alertname: rule for rule in section.rules}
        self._active: dict[str, Active] = {}
        self._seen: dict[tuple[str, str], float] = {}
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._restored: dict[str, tuple[float, int]] = {}  # action id -> (when restored, its flaps)
        self._counts: dict[tuple[str, str, str], int] = {}
        self._lock = threading.RLock()
        # By the executors' ``remote``: the MTA's changes one at a time, calls elsewhere apart.
        self._workers = {remote: ThreadPoolExecutor(1, thread_name_prefix="actions-remote" if remote else "actions")
                         for remote in (False, True)}
        self._token = section.webhook.token() if section.webhook.enabled else None
        self.puller = AlertmanagerPuller(section.pull, self.handle, pull_transport) if section.pull.url else None
        # Failures of the pull job and of state writes, reported by every tick until they clear
        # (the tick's own success must not hide them).
        self._problems: dict[str, str] = {}

    # -- the collector interface --------------------------------------------------------------

    def describe(self) -> tuple[F.Family, ...]:
        """The actions families of the catalogue."""
        return F.ACTIONS

    def sources(self) -> list[str]:
        """Where alerts come from, and the rules."""
        where = [w for w, on in (("the webhook POST /api/v1/alerts", self.section.webhook.enabled),
                                 (f"polling {self.section.pull.url}", self.section.pull.url)) if on]
        rules = ", ".join(f"{r.alertname} -> {r.action}" for r in self.section.rules)
        return [f"{' and '.join(where)}; rules: {rules}{'; DRY RUN' if self.section.dry_run else ''}"]

    def jobs(self) -> list[Job]:
        """The tick that ends actions when due, and polling Alertmanager when configured."""
        jobs = [Job(ID, TICK, self.run_refresh)]
        if self.puller is not None:
            jobs.append(Job(f"{ID}_pull", self.section.pull.interval, self._poll))
        return jobs

    def _poll(self) -> None:
        assert self.puller is not None
        try:
            self.puller.poll()
        except Exception as exc:  # Alertmanager away: actions in force keep their TTL
            self._problems["pull"] = f"polling {self.section.pull.url}: {exc}"
            self.health.failed(self._problems["pull"])
        else:
            self._problems.pop("pull", None)

    def routes(self, services: Services) -> list[Route]:
        """The webhook, the list of actions, and restoring one by hand."""
        routes = [Route("GET", "/api/v1/actions", self._list, title="Actions (JSON)"),
                  Route("POST", "/api/v1/actions/restore", self._restore_request, writes=True)]
        if self.section.webhook.enabled:
            routes.append(Route("POST", "/api/v1/alerts", self._webhook, Auth.BEARER, writes=True))
        return routes

    @property
    def bearer_token(self) -> str | None:
        """The webhook's token, for the HTTP server."""
        return self._token

    def start(self) -> None:
        """Load the state file and reconcile it with the clock: re-apply what is still due,
        restore what expired while the agent was down."""
        for active in self._load_state():
            active.ending = False
            if self._due(active, self.clock()):
                log.info("action %s expired while the agent was down: restoring", active.id)
                self._active[active.id] = active
                self._submit_restore(active, "expired while the agent was down")
            else:
                log.info("action %s still in force after a restart: applying again", active.id)
                self._active[active.id] = active
                self._submit_apply(active, reapply=True)

    def stop(self) -> None:
        """Finish what the workers are doing; actions stay in force (the state file keeps them)."""
        for worker in self._workers.values():
            worker.shutdown(wait=True, cancel_futures=False)

    def refresh(self) -> None:
        """The tick: end what is due, run coalesced reloads."""
        now = self.clock()
        with self._lock:
            due = [a for a in self._active.values() if self._due(a, now) and not a.ending]
            for active in due:
                active.ending = True
        for active in due:
            reason = "cool-down after the alert resolved" if active.restore_at is not None else "TTL lapsed"
            self._submit_restore(active, reason)
        for executor in self.executors.values():
            reloader = getattr(executor, "reloader", None)
            if reloader is not None:
                reloader.due()
        if self._problems:
            raise RuntimeError("; ".join(list(self._problems.values())))

    @staticmethod
    def _due(active: Active, now: float) -> bool:
        return now >= active.expires_at or (active.restore_at is not None and now >= active.restore_at)

    # -- deciding ------------------------------------------------------------------------------

    def handle(self, alerts: Iterable[Alert], source: str) -> list[dict[str, Any]]:
        """Decide on each alert (fast, no Postfix call); returns one decision per alert."""
        with self._lock:
            return [self._decide(alert, source) for alert in alerts]

    def _decide(self, alert: Alert, source: str) -> dict[str, Any]:
        now = self.clock()
        rule = self.rules.get(alert.name)
        provider = alert.labels.get("provider", "")
        decision = {"alertname": alert.name, "fingerprint": alert.fingerprint, "status":
                    "firing" if alert.firing else "resolved", "provider": provider,
                    "action": rule.action if rule else None, "source": source}

        def done(result: str, why: str, counted_as: str | None = None) -> dict[str, Any]:
            decision.update(decision=result, why=why)
            self._record(decision, now, counted_as or result)
            return decision

        refusal = self._refusal(alert, rule, provider)
        if refusal:
            return done("ignored", refusal)
        assert rule is not None
        key = (alert.fingerprint, alert.starts_at)
        seen = self._seen.get(key)
        self._seen[key] = now
        # Polling sees an active alert again on purpose: that extends; a second webhook delivery
        # of it within the window is a replay or the HA twin: that changes nothing.
        if source == "webhook" and seen is not None and now - seen < DUPLICATE_WINDOW and alert.firing:
            return done("ignored", f"the same delivery {now - seen:.0f} s ago (replay or HA twin)")
        action_id = f"{rule.action}:{provider}"
        active = self._active.get(action_id)
        if not alert.firing:
            if active is None or alert.fingerprint not in active.alerts:
                return done("ignored", "resolved, and no action of it is in force")
            del active.alerts[alert.fingerprint]
            if active.alerts:
                return done("ignored", f"resolved; {len(active.alerts)} other alert(s) keep the action")
            cooldown = min(rule.cooldown * 2 ** active.flaps, rule.ttl)
            active.restore_at = now + cooldown
            self._save()
            backoff = f" ({active.flaps} flap(s): doubled)" if active.flaps and cooldown > rule.cooldown else ""
            return done("restore_scheduled", f"resolved: restoring after the cool-down of {cooldown:g} s{backoff}",
                        counted_as="ignored")
        if active is not None:
            active.alerts[alert.fingerprint] = alert.starts_at
            active.expires_at = max(active.expires_at, now + rule.ttl)
            active.restore_at = None
            self._save()
            return done("extended", f"in force until {time.strftime('%H:%M:%S', time.localtime(active.expires_at))}")
        if len(self._active) >= self.section.max_active:
            return done("ignored", f"{len(self._active)} actions in force already (max_active)")
        restored = self._restored.pop(action_id, None)
        flaps = restored[1] + 1 if restored is not None and now - restored[0] < FLAP_WINDOW else 0
        active = Active(action_id, rule.action, provider, alert.name, dict(rule.params), dict(alert.labels), now,
                        now + rule.ttl, alerts={alert.fingerprint: alert.starts_at}, dry_run=self.section.dry_run,
                        flaps=flaps)
        self._active[action_id] = active
        flapped = f"; flap {flaps}: {now - restored[0]:.0f} s after its restore" if flaps and restored else ""
        if active.dry_run:
            return done("dry_run", f"would apply {rule.action} to {provider} for {rule.ttl:g} s{flapped}")
        self._submit_apply(active)
        return done("applied", f"{rule.action} for {provider}, {rule.ttl:g} s{flapped}")

    def _refusal(self, alert: Alert, rule: ActionRule | None, provider: str) -> str | None:
        """Why ``alert`` must not act here, or None."""
        labels = alert.labels
        instance = labels.get("mta_instance")
        if instance is not None and instance not in self.instances:
            return f"for another agent (mta_instance={instance})"
        named = [k for k in self.section.agent_labels if k in labels]
        if any(labels[k] != self.section.agent_labels[k] for k in named):
            return "for another agent (" + ", ".join(f"{k}={labels[k]}" for k in named) + ")"
        if instance is None and not named and not self.section.accept_unaddressed:
            return "names no agent (set actions.agent_labels, or accept_unaddressed for a single agent)"
        if rule is None:
            return f"no rule for {alert.name or 'an alert without alertname'}"
        if any(labels.get(k) != v for k, v in rule.match.items()):
            return "does not match the rule's labels"
        if not _LABEL_VALUE.match(provider) or provider not in self.providers:
            return f"provider {provider!r} is not one this agent acts on (never other or local)"
        return None

    def _record(self, entry: Mapping[str, Any], now: float, result: str | None) -> None:
        """Log ``entry`` as one ``key=value`` line, keep it in the history, count it as ``result``
        (None: history only)."""
        line = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and ' ' in v else v}" for k, v in entry.items())
        log.info("action %s", line)
        self._history.append({"at": now, **entry})
        if result is not None and entry.get("action") in ACTIONS and entry.get("provider") in self.providers:
            key = (str(entry["action"]), str(entry["provider"]), result)
            self._counts[key] = self._counts.get(key, 0) + 1
        self._prune_seen(now)

    def _prune_seen(self, now: float) -> None:
        if len(self._seen) > 10000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < DUPLICATE_WINDOW}

    # -- executing ------------------------------------------------------------------------------

    def _submit_apply(self, active: Active, reapply: bool = False) -> None:
        self._workers[self.executors[active.action].remote].submit(self._apply, active, reapply)

    def _submit_restore(self, active: Active, why: str) -> None:
        self._workers[self.executors[active.action].remote].submit(self._restore, active, why)

    def _apply(self, active: Active, reapply: bool) -> None:
        executor = self.executors[active.action]
        try:
            changes = executor.apply(active.provider, active.params, active.labels, active.changes)
        except Exception as exc:
            with self._lock:
                self._active.pop(active.id, None)
                self._record({"action": active.action, "provider": active.provider, "decision": "failed",
                              "why": f"apply: {exc}"}, self.clock(), "failed")
                self._save()
            return
        with self._lock:
            active.changes = changes
            self._record({"action": active.action, "provider": active.provider, "decision": "in_force",
                          "why": "applied again after a restart" if reapply else "applied"}, self.clock(), None)
            self._save()

    def _restore(self, active: Active, why: str) -> None:
        if not active.dry_run and active.changes is not None:
            try:
                self.executors[active.action].restore(active.provider, active.params, active.labels, active.changes)
            except Exception as exc:
                with self._lock:
                    active.ending = False  # tried again at the next tick
                    self._record({"action": active.action, "provider": active.provider, "decision": "failed",
                                  "why": f"restore: {exc}"}, self.clock(), "failed")
                return
        with self._lock:
            now = self.clock()
            self._active.pop(active.id, None)
            self._restored = {k: v for k, v in self._restored.items() if now - v[0] < FLAP_WINDOW}
            self._restored[active.id] = (now, active.flaps)
            self._record({"action": active.action, "provider": active.provider, "decision": "restored",
                          "why": why}, now, "dry_run" if active.dry_run else "restored")
            self._save()

    def restore(self, action_id: str) -> bool:
        """End an action now (the operator's ``actions restore ID``); False if none has that id."""
        with self._lock:
            active = self._active.get(action_id)
            if active is None or active.ending:
                return False
            active.ending = True
        self._submit_restore(active, "restored by the operator")
        return True

    # -- state ------------------------------------------------------------------------------------

    def _save(self) -> None:
        path = self.section.state_file
        if path is None:
            return
        state = {"version": 1, "active": [asdict(a) for a in self._active.values() if not a.dry_run],
                 "restored": {action_id: list(entry) for action_id, entry in self._restored.items()}}
        try:
            atomic_write(path, json.dumps(state, indent=1).encode())
        except OSError as exc:
            self._problems["state"] = f"cannot write the actions state {path}: {exc}"
            self.health.failed(self._problems["state"])
        else:
            self._problems.pop("state", None)

    def _load_state(self) -> list[Active]:
        path = self.section.state_file
        if path is None:
            return []
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read(1 << 20))
            actives = [Active(**entry) for entry in data["active"]]
            # Recent restores, so that a flap across a restart still doubles the cool-down (older files have none).
            self._restored = {str(action_id): (float(at), int(flaps))
                              for action_id, (at, flaps) in data.get("restored", {}).items()}
            return actives
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            # Refusing to start would leave whatever the file describes in force with nobody to
            # undo it: say so loudly, start empty.
            log.error("actions state %s is unusable (%s): actions it recorded must be restored by hand", path, exc)
            return []

    # -- HTTP -------------------------------------------------------------------------------------

    def _webhook(self, request: Request) -> Response:
        try:
            alerts = parse_webhook(request.body)
        except PayloadError as exc:
            return Response(400, f"not an Alertmanager webhook payload (version 4): {exc}\n".encode())
        return Response.json({"decisions": self.handle(alerts, "webhook")}, 202)

    def _list(self, _request: Request) -> Response:
        return Response.json(self.document())

    def _restore_request(self, request: Request) -> Response:
        try:
            action_id = json.loads(request.body)["id"]
        except (ValueError, KeyError, TypeError):
            return Response(400, b'expected {"id": "<action>:<provider>"}\n')
        if not isinstance(action_id, str) or not self.restore(action_id):
            return Response(404, f"no action {action_id!r} in force\n".encode())
        return Response.json({"restoring": action_id}, 202)

    def document(self) -> dict[str, Any]:
        """Active actions and recent decisions (``GET /api/v1/actions``)."""
        with self._lock:
            active = [{k: v for k, v in asdict(a).items() if k != "labels"} for a in self._active.values()]
            return {"dry_run": self.section.dry_run, "active": active, "history": list(self._history)[::-1]}

    def overview(self) -> list[dict[str, str]]:
        """The actions in force as the page at ``/`` and ``mtaq-exporter status`` list them."""
        with self._lock:
            active = list(self._active.values())
        rows = []
        for a in active:
            state = ("dry run" if a.dry_run else "restoring" if a.ending else "in force" if a.changes is not None
                     else "applying")
            ends = a.expires_at if a.restore_at is None else min(a.restore_at, a.expires_at)
            held_by = "cool-down after the alert resolved" if a.restore_at is not None else (
                f"{len(a.alerts)} firing alert(s), TTL")
            rows.append({"id": a.id, "state": state, "alert": a.alertname, "since": when(a.applied_at),
                         "ends": when(ends), "held by": held_by})
        return rows

    # -- metrics ---------------------------------------------------------------------------------

    def families(self) -> Iterator[Metric]:
        """``mtaq_actions_total``, ``mtaq_action_active`` and ``mtaq_action_expiry_timestamp_seconds``,
        zero-filled for every configured action and provider."""
        total, active, expiry = F.ACTIONS_TOTAL.new(), F.ACTION_ACTIVE.new(), F.ACTION_EXPIRY.new()
        configured = sorted({rule.action for rule in self.section.rules})
        with self._lock:
            counts = dict(self._counts)
            in_force = {(a.action, a.provider): a for a in self._active.values() if not a.dry_run}
        for action in configured:
            for provider in sorted(self.providers):
                for result in RESULTS:
                    total.add_metric([action, provider, result], counts.get((action, provider, result), 0))
                current = in_force.get((action, provider))
                active.add_metric([action, provider], 1 if current else 0)
                if current:
                    ends = current.expires_at if current.restore_at is None else min(current.restore_at,
                                                                                      current.expires_at)
                    expiry.add_metric([action, provider], ends)
        yield from (total, active, expiry)
