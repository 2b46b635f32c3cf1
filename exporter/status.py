"""What the agent says about itself: readiness, the status document and the incident summary page.

The page at ``/`` is rendered on the server from the status document (``GET /api/v1/status``:
collector health plus ``exporter/summary.py``'s summary), with no script and no external asset,
so it works air-gapped, in a terminal browser and on a phone; it reloads itself every
``REFRESH_SECONDS``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from collectors.base import BaseCollector
from exporter import __version__
from exporter.render import age, ago, change, clip, parked, percent, queue_count, sparkline, when

#: The page reloads itself this often (seconds).
REFRESH_SECONDS = 15


def not_ready(collectors: Sequence[BaseCollector]) -> list[str]:
    """Why ``collectors`` are not ready, one phrase each: a first run still pending, or the last
    run failed."""
    problems = []
    for c in collectors:
        health = c.health.view()
        if c.jobs() and health.last_run is None:
            problems.append(f"{c.id}: waiting for its first run")
        elif health.last_run is not None and not health.success:
            problems.append(f"{c.id}: failing ({health.last_error})")
    return problems


def collector_state(success: bool, last_run: float | None, last_error: str | None) -> str:
    """``ok``, ``waiting`` (no run yet) or ``failing``."""
    if success:
        return "ok"
    return "waiting" if last_run is None and not last_error else "failing"


def status_document(collectors: Sequence[BaseCollector], started: float) -> dict[str, Any]:
    """Each collector's state, sources and last error (``GET /api/v1/status``)."""
    document: dict[str, Any] = {"version": __version__, "started": started, "collectors": {}}
    for c in collectors:
        h = c.health.view()
        document["collectors"][c.id] = {
            "state": collector_state(h.success, h.last_run, h.last_error),
            "success": h.success,
            "last_run": h.last_run,
            "last_success": h.last_success,
            "duration_seconds": round(h.duration_seconds, 6),
            "errors_total": h.errors_total,
            "last_error": h.last_error,
            "last_error_time": h.last_error_time,
            "sources": c.sources(),
        }
    return document


# -- the page --------------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:.5em 1em 2em;max-width:80em;color:#1a1a1a}
h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}
nav a{margin-right:1em;white-space:nowrap}.meta{color:#555;font-size:.9em}
.scroll{overflow-x:auto}table{border-collapse:collapse;min-width:100%}
th,td{padding:.25em .6em;text-align:left;vertical-align:top;border-bottom:1px solid #eee}
th{background:#f4f4f4;font-weight:600;white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17702c}.warning{color:#8a5a00;font-weight:600}.critical,.failing,.down{color:#b00020;font-weight:700}
.waiting{color:#8a5a00}.trend{font-family:monospace;white-space:nowrap}.reply{font-size:.85em;color:#444;min-width:22em}
.banner{background:#ffd83d;color:#000;font-weight:700;padding:.6em 1em;margin:0 -1em .5em;text-align:center}
.alerts li{margin:.2em 0}.none{color:#777}.sub{display:block;font-size:.8em;color:#555;font-weight:400}
@media (max-width:40em){body{padding:.3em .5em 1em}th,td{padding:.2em .35em}.reply{min-width:14em}}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _table(table_id: str, headers: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<div class='scroll'><table id='{table_id}'><tr>{head}</tr>{''.join(rows)}</table></div>"


def _age_cell(epoch: float | None, now: float, css: str = "age") -> str:
    """A cell with the age of ``epoch`` and the epoch itself (for tools and tests) in ``data-epoch``."""
    if epoch is None:
        return f"<td class='{css} n'>-</td>"
    return (f"<td class='{css} n' data-epoch='{epoch!r}' title='{_e(when(epoch, utc=True))} UTC'>"
            f"{_e(age(now - epoch))}</td>")


def _n(value: object, css: str) -> str:
    return f"<td class='{css} n'>{_e(value)}</td>"


def _lanes(queue: Mapping[str, Any], now: float) -> str:
    rows = []
    for lane in queue["lanes"]:
        objective = lane["objective"] or {}
        limit = (f"{objective.get('max_messages')} msgs, {age(objective.get('max_oldest_age'))}"
                 f" / {age(objective.get('critical_oldest_age'))}") if objective else "-"
        trend = lane["trend"]
        # What matters at 3 a.m. comes first, so that a phone shows it without scrolling sideways.
        rows.append(
            f"<tr data-instance='{_e(lane['instance'])}' data-lane='{_e(lane['lane'])}'>"
            f"<td><b>{_e(lane['lane'])}</b><span class='sub'>{_e(lane['instance'])}</span></td>"
            f"{_n(lane['messages'], 'messages')}{_age_cell(lane['oldest_arrival'], now, 'oldest')}"
            f"<td class='state {lane['state']}'>{_e(lane['state'])}</td>"
            f"<td class='trend' title='{_e(', '.join(map(str, trend)))}'>{_e(sparkline(trend))} "
            f"{_e(change(trend))}</td>{_n(queue_count(lane['deferred']), 'deferred')}{_n(parked(lane), 'held')}"
            f"{_n(lane['recipients'], 'recipients')}<td class='objective'>{_e(limit)}</td></tr>")
    return ("<h2 id='lanes-title'>Queue by lane</h2>"
            + _table("lanes", ["lane (instance)", "queued", "oldest", "state", "trend (last scans)", "deferred",
                               "held / frozen", "recipients", "objective (depth, age warn / crit)"], rows)
            + "<p class='meta'>Queued counts every queue but Postfix's hold; oldest is the age of the oldest "
              "message outside hold. Deferred is Postfix's deferred queue (- for Exim, which has none); held / "
              "frozen is Postfix's hold queue, or Exim's frozen messages (counted as queued too: they need a "
              "person). The alerts fire after the objective is exceeded for 15 min (depth) or 5 min (age).</p>")


def _deferred(rows_in: Sequence[Mapping[str, Any]], window: float | None) -> str:
    rows = [f"<tr><td class='provider'>{_e(r['provider'])}</td><td class='reason'>{_e(r['reason'])}</td>"
            f"{_n(r['recipients'], 'recipients')}{_n(r['deferrals_in_window'], 'window')}"
            f"<td class='reply'>{_e(clip(r['sample'] or '', 160))}</td></tr>" for r in rows_in]
    span = f"last {age(window)}" if window else "window"
    body = _table("deferred", ["provider", "reason", "queued rcpts", f"deferrals ({span})", "sample reply"], rows) \
        if rows else "<p class='none'>Nothing deferred.</p>"
    return ("<h2>Why mail waits: provider &times; reason</h2>" + body
            + "<p class='meta'>Queued rcpts: recipients in the deferred queue (Exim: of messages not frozen) by "
              "the class of their last defer reason; deferrals: deferred attempts in the mail log; the reply is the "
              "latest of its kind.</p>")


def _providers(rows_in: Sequence[Mapping[str, Any]], window: float | None) -> str:
    rows = []
    for r in rows_in:
        w = r["window"] or {}
        rows.append(
            f"<tr data-provider='{_e(r['provider'])}'><td>{_e(r['provider'])}</td>"
            f"{_n(w.get('sent', '-'), 'w-sent')}{_n(w.get('deferred', '-'), 'w-deferred')}"
            f"{_n(w.get('hard_bounces', 0) + w.get('soft_bounces', 0) if w else '-', 'w-bounced')}"
            f"{_n(percent(w.get('retry_rate')), 'retry-rate')}{_n(percent(w.get('bounce_ratio')), 'bounce-ratio')}"
            f"{_n(r['sent'], 'sent')}{_n(r['deferred'], 'deferred')}"
            f"{_n(r['hard_bounces'], 'hard')}{_n(r['soft_bounces'], 'soft')}</tr>")
    span = f"last {age(window)}" if window else "window"
    note = ("<p class='meta'>Retry rate = deferred attempts / all attempts; bounce ratio = hard and soft bounces / "
            f"final outcomes (sent + bounces), over the {span}, as the recording rules compute them. Hops that stay "
            "on this host (provider local) are left out.</p>")
    body = _table("providers", ["provider", f"sent ({span})", "deferred", "bounces", "retry rate", "bounce ratio",
                                "sent (since start)", "deferred", "hard bounces", "soft bounces"], rows) \
        if rows else "<p class='none'>No delivery yet.</p>"
    return "<h2>Providers</h2>" + body + note


def _dead_letters(dead: Mapping[str, Any], now: float) -> str:
    rows = [f"<tr><td class='expired n' data-epoch='{d['expired_at']!r}'>{_e(ago(d['expired_at'], now))}</td>"
            f"<td class='qid'>{_e(d['qid'])}<span class='sub'>{_e(d['instance'])}</span></td><td>{_e(d['lane'])}</td>"
            f"<td>{_e(d['provider'])}</td><td>{_e(d['reason'])}</td>{_n(d['attempts'], 'attempts')}"
            f"<td class='sender'>{_e(d['sender'])}</td>"
            f"<td class='recipient'>{_e(', '.join(r or '' for r in d['recipients'][:3]))}"
            f"{'…' if d['pending_recipients'] > 3 else ''}</td><td class='reply'>{_e(clip(d['text'], 120))}</td></tr>"
            for d in dead["recent"]]
    body = _table("dead-letters", ["expired", "queue id (instance)", "lane", "provider", "reason", "attempts",
                                   "sender", "pending recipients", "last reply"], rows) if rows else \
        "<p class='none'>No message has expired since the agent started.</p>"
    return (f"<h2>Dead letters: <span id='dead-letters-total'>{dead['total']}</span> since start</h2>" + body)


def _blocklists(blocklists: Mapping[str, Any], now: float) -> str:
    rows = []
    for target in blocklists["targets"]:
        listings = "; ".join(f"<a href='{_e(x['delist_url'])}' rel='noreferrer'>{_e(x['list'])}</a> "
                             f"{_e(x['code'])} {_e(x['meaning'])}" for x in target["listings"])
        state = "critical" if target["listings"] else "ok"
        impact = f"{target['impact_score']:g}"
        rows.append(f"<tr data-target='{_e(target['target'])}'><td>{_e(target['target'])}</td>"
                    f"{_n(impact, 'impact')}<td class='{state}'>"
                    f"{listings or 'not listed'}</td>{_n(target['unknown_lists'], 'unknown')}</tr>")
    unhealthy = ", ".join(blocklists["unhealthy_lists"])
    return ("<h2>Blocklists</h2>"
            + _table("blocklists", ["target", "impact (0-100)", "listings (delisting page)", "lists unknown"], rows)
            + f"<p class='meta'>Last run {_e(ago(blocklists['last_run'], now))}."
            + (f" Unreliable lists this run: {_e(unhealthy)}." if unhealthy else "") + "</p>")


def _actions(actions: Sequence[Mapping[str, object]]) -> str:
    columns = list(dict.fromkeys(k for action in actions for k in action))
    rows = ["<tr>" + "".join(f"<td>{_e(a.get(c))}</td>" for c in columns) + "</tr>" for a in actions]
    return "<h2>Active actions</h2>" + (_table("actions", columns, rows) if rows else
                                        "<p class='none'>No action is active.</p>")


def _freshness(document: Mapping[str, Any], now: float) -> str:
    summary = document["summary"]
    rows = []
    for i in (summary["queue"] or {}).get("instances", []):
        state = "ok" if i["up"] else "down"
        duration = "" if i["scan_duration_seconds"] is None else f", scan took {i['scan_duration_seconds']:.3f} s"
        rows.append(f"<tr><td>queue {_e(i['mta'])}/{_e(i['instance'])}</td><td class='{state}'>{state}</td>"
                    f"{_age_cell(i['last_scan'], now, 'last-scan')}<td>{_e(i['source'])}{_e(duration)}</td></tr>")
    for s in summary["log_sources"] or []:
        lines = s["lines"]
        rows.append(f"<tr><td>log {_e(s['source'])}</td><td>{_e(lines.get('parsed', 0))} parsed, "
                    f"{_e(lines.get('ignored', 0))} ignored, {_e(lines.get('unparsed', 0))} unparsed</td>"
                    f"{_age_cell(s['last_line'], now, 'last-line')}<td></td></tr>")
    collectors = []
    for cid, c in document["collectors"].items():
        collectors.append(
            f"<tr data-collector='{_e(cid)}'><td>{_e(cid)}</td><td class='{c['state']}'>{_e(_shown(c['state']))}</td>"
            f"<td>{_e('; '.join(c['sources']))}</td>{_n(c['errors_total'], 'errors')}"
            f"<td>{_e(when(c['last_error_time'], utc=True) if c['last_error_time'] else '')}</td>"
            f"<td class='last-error'>{_e(c['last_error'] or '')}</td></tr>")
    disabled = "".join(f"<li><b>{_e(d['id'])}</b>: {_e(d['default'].replace('`', ''))}</li>"
                       for d in summary["disabled_collectors"])
    return ("<h2>Data freshness</h2>"
            + (_table("freshness", ["source", "state", "last scan / line", "detail"], rows) if rows else
               "<p class='none'>No queue or log source.</p>")
            + "<h2>Collectors</h2>"
            + _table("collectors", ["collector", "state", "reads", "errors", "last error at (UTC)", "last error"],
                     collectors)
            + (f"<p class='meta'>Not enabled:</p><ul class='meta'>{disabled}</ul>" if disabled else ""))


def _shown(state: str) -> str:
    """A state as the page shows it: a failure in capitals, to be seen at a glance."""
    return state.upper() if state == "failing" else state


def _attention(summary: Mapping[str, Any]) -> str:
    """One line per thing that needs a look, first on the page."""
    items = []
    queue = summary["queue"] or {}
    for i in queue.get("instances", []):
        if not i["up"]:
            items.append(f"<li class='down'>queue of {_e(i['mta'])} instance {_e(i['instance'])} unreadable</li>")
    for lane in queue.get("lanes", []):
        if lane["state"] != "ok":
            items.append(f"<li class='{lane['state']}'>lane {_e(lane['lane'])} on {_e(lane['instance'])}: "
                         f"{lane['messages']} queued, oldest {_e(age(lane['oldest_age_seconds']))} "
                         f"({_e(lane['state'])})</li>")
    for target in (summary["blocklists"] or {}).get("targets", []):
        if target["listings"]:
            items.append(f"<li class='critical'>{_e(target['target'])} listed on "
                         f"{_e(', '.join(x['list'] for x in target['listings']))}</li>")
    if items:
        return f"<ul class='alerts' id='attention'>{''.join(items)}</ul>"
    return "<p class='ok' id='attention'>Every lane is within its objectives.</p>" if queue else ""


def landing_page(document: Mapping[str, Any], links: Sequence[tuple[str, str]], title: str = "mtaq-exporter") -> bytes:
    """The incident summary page for ``document`` (the status document with its ``summary``)."""
    summary = document["summary"]
    now = summary["generated_at"]
    window = summary["window_seconds"]
    nav = " ".join(f"<a href='{_e(path)}'>{_e(name)}</a>" for path, name in links)
    sections = [_attention(summary)]
    if summary["queue"] is not None:
        sections.append(_lanes(summary["queue"], now))
    if summary["deferred"] is not None:
        sections.append(_deferred(summary["deferred"], window))
    if summary["providers"] is not None:
        sections.append(_providers(summary["providers"], window))
    if summary["dead_letters"] is not None:
        sections.append(_dead_letters(summary["dead_letters"], now))
    if summary["blocklists"] is not None:
        sections.append(_blocklists(summary["blocklists"], now))
    if "actions" in summary:
        sections.append(_actions(summary["actions"]))
    sections.append(_freshness(document, now))
    banner = f"<div class='banner' id='banner'>{_e(summary['banner'])}</div>" if summary["banner"] else ""
    masked = " Mail addresses are masked (configure basic auth to see them)." if summary["addresses_masked"] else ""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>{_e(title)}</title><style>{_STYLE}</style></head>
<body>{banner}<h1>{_e(title)}</h1><nav>{nav}</nav>
<p class='meta' id='generated' data-epoch='{now!r}'>Version {_e(__version__)}; as of {_e(when(now, utc=True))} UTC,
reloads every {REFRESH_SECONDS} s.{masked}</p>
{"".join(sections)}</body></html>"""
    return page.encode()
