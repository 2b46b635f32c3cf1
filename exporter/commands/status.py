"""``mtaq-exporter status``: a running agent's incident summary in the terminal (the page at ``/``).

Asks the agent (``GET /api/v1/status``) and prints what needs attention, the queue by lane
(depth, oldest age, objectives, trend over the last scans), why mail waits (provider x reason
with a sample reply), per-provider retry rate and bounce ratio over the last minutes, recent
dead letters, blocklist listings, data freshness and collector health. Colours on a terminal;
``--watch`` redraws every few seconds until Ctrl-C. When the agent has basic auth, put the
credentials (``--url http://user@host:port --password-file FILE``): mail addresses then show in full.

``--json`` prints the agent's status document as it is. Its keys (times are Unix seconds, ages
seconds; a section is null when no collector provides it):

    version, started
    collectors       {id: {state (ok|waiting|failing), success, last_run, last_success,
                           duration_seconds, errors_total, last_error, last_error_time, sources}}
    summary
      generated_at, banner (null, or the demo's notice), addresses_masked
      window_seconds   span of the rates below (up to 300; less while the agent is young)
      queue            {instances: [{mta, instance, up, last_scan, scan_duration_seconds, source}],
                        lanes: [{mta, instance, lane, messages, recipients, deferred, held, frozen,
                                 oldest_arrival, oldest_age_seconds,
                                 objective: {max_messages, max_oldest_age, critical_oldest_age,
                                             max_first_attempt_wait (null: not set)},
                                 state (ok|warning|critical), trend: [messages per scan],
                                 trend_seconds}]}
                       (messages, recipients and the oldest message count every queue but hold;
                        deferred and held: Postfix's queues of those names, frozen: Exim's frozen
                        messages, counted in messages too; null where the MTA has no such queue)
      deferred         [{provider, reason, recipients (deferred queue), deferrals_in_window,
                         sample (last reply of that kind, or null)}]  (largest first, at most 10)
      providers        [{provider, sent, deferred, bounced (attempts since start), hard_bounces,
                         soft_bounces, window: {sent, deferred, bounced, hard_bounces,
                         soft_bounces, retry_rate, bounce_ratio} or null}]  (provider local left out)
      dead_letters     {total, recent: [{qid, instance, lane, provider, reason, text, first_seen,
                                         expired_at, forced, attempts, pending_recipients,
                                         sender, recipients}]}  (newest first, at most 10)
      blocklists       {last_run, unhealthy_lists, targets: [{target, impact_score, unknown_lists,
                                                             listings: [{list, code, meaning, delist_url}]}]}
      log_sources      [{mta, source, last_line, lines: {parsed, ignored, unparsed}}]
      disabled_collectors [{id, default}]  (how each would be turned on)

Exit status 0, or 2 when the agent cannot be asked.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from exporter.commands.agent_client import AgentError, add_agent_flags, get_json, shown_url
from exporter.commands.flags import command_parser
from exporter.render import age, ago, change, clip, parked, percent, queue_count, sparkline, table, when

_COLOURS = {"ok": "32", "warning": "33", "critical": "31;1", "failing": "31;1", "down": "31;1", "waiting": "33",
            "banner": "30;43;1"}


class Painter:
    """ANSI colours for a terminal, plain text otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, state: str) -> str:
        code = _COLOURS.get(state)
        return f"\033[{code}m{text}\033[0m" if self.enabled and code else text


def _objective(objective: Mapping[str, Any] | None) -> str:
    if not objective:
        return "-"
    return f"{objective['max_messages']}, {age(objective['max_oldest_age'])}/{age(objective['critical_oldest_age'])}"


def _section(title: str, lines: list[str]) -> list[str]:
    return ["", title, *lines]


def render(document: Mapping[str, Any], url: str, paint: Painter) -> str:
    """The human summary of a status document."""
    summary = document["summary"]
    now = summary["generated_at"]
    window = summary["window_seconds"]
    span = f"last {age(window)}" if window else "window"
    out = [f"mtaq-exporter {document['version']} at {url}, as of {when(now, utc=True)} UTC"]
    if summary["banner"]:
        out.append(paint(f" {summary['banner']} ", "banner"))
    queue = summary["queue"]
    attention = []
    for i in (queue or {}).get("instances", []):
        if not i["up"]:
            attention.append(paint(f"  queue of {i['mta']} instance {i['instance']} unreadable", "down"))
    for lane in (queue or {}).get("lanes", []):
        if lane["state"] != "ok":
            attention.append(paint(f"  lane {lane['lane']} on {lane['instance']}: {lane['messages']} queued, oldest "
                                   f"{age(lane['oldest_age_seconds'])} ({lane['state']})", lane["state"]))
    for target in (summary["blocklists"] or {}).get("targets", []):
        if target["listings"]:
            attention.append(paint(f"  {target['target']} listed on "
                                   f"{', '.join(x['list'] for x in target['listings'])}", "critical"))
    if attention:
        out += _section("Needs attention", attention)
    if queue is not None:
        rows = [[lane["instance"], lane["lane"], lane["messages"], queue_count(lane["deferred"]), parked(lane),
                 lane["recipients"],
                 age(lane["oldest_age_seconds"]), _objective(lane["objective"]), lane["state"],
                 f"{sparkline(lane['trend'])} {change(lane['trend'])}".strip()] for lane in queue["lanes"]]
        lines = table(["instance", "lane", "queued", "deferred", "held/frozen", "rcpts", "oldest", "objective", "state",
                       "trend"], rows, align="llrrrrrlll", indent="  ")
        states = [lane["state"] for lane in queue["lanes"]]
        out += _section("Queue by lane (hold excluded; objective: depth, age warn/crit)",
                        [lines[0], *(paint(line, state) for line, state in zip(lines[1:], states, strict=True))])
    if summary["deferred"] is not None:
        rows = [[r["provider"], r["reason"], r["recipients"], r["deferrals_in_window"], clip(r["sample"] or "", 70)]
                for r in summary["deferred"]]
        out += _section(f"Why mail waits: provider x reason (deferred queue recipients; deferrals in the {span})",
                        table(["provider", "reason", "queued", "deferrals", "sample reply"], rows, align="llrrl",
                              indent="  ") if rows else ["  nothing deferred"])
    if summary["providers"] is not None:
        rows = []
        for r in summary["providers"]:
            w = r["window"] or {}
            rows.append([r["provider"], w.get("sent", "-"), w.get("deferred", "-"),
                         w.get("hard_bounces", 0) + w.get("soft_bounces", 0) if w else "-",
                         percent(w.get("retry_rate")), percent(w.get("bounce_ratio")),
                         r["sent"], r["deferred"], r["hard_bounces"], r["soft_bounces"]])
        out += _section(f"Providers ({span}: retry rate = deferred/attempts, bounce ratio = bounces/final outcomes; "
                        "then since start)",
                        table(["provider", "sent", "deferred", "bounces", "retry rate", "bounce ratio", "sent total",
                               "deferred total", "hard", "soft"], rows, indent="  ") if rows else ["  no delivery yet"])
    dead = summary["dead_letters"]
    if dead is not None:
        rows = [[ago(d["expired_at"], now), d["qid"], d["lane"], d["provider"], d["reason"], d["attempts"],
                 d["sender"] or "<>", ", ".join(d["recipients"][:1]) + (" …" if d["pending_recipients"] > 1 else ""),
                 clip(d["text"], 60)] for d in dead["recent"]]
        out += _section(f"Dead letters: {dead['total']} since start",
                        table(["expired", "qid", "lane", "provider", "reason", "tries", "sender", "recipient",
                               "last reply"], rows, align="lllllrlll", indent="  ") if rows else [])
    blocklists = summary["blocklists"]
    if blocklists is not None:
        lines = [f"  last run {ago(blocklists['last_run'], now)}"]
        for target in blocklists["targets"]:
            listed = "; ".join(f"{x['list']} {x['code']} ({x['meaning']}) delist: {x['delist_url']}"
                               for x in target["listings"]) or "not listed"
            lines.append(paint(f"  {target['target']}: impact {target['impact_score']:g}/100, {listed}",
                               "critical" if target["listings"] else "ok"))
        out += _section("Blocklists", lines)
    if "actions" in summary:
        actions = summary["actions"]
        columns = list(dict.fromkeys(k for a in actions for k in a))
        out += _section("Active actions", table(columns, [[a.get(c, "") for c in columns] for a in actions],
                                                align="l" * len(columns), indent="  ") if actions else ["  none"])
    fresh = []
    for i in (queue or {}).get("instances", []):
        fresh.append(paint(f"  queue {i['mta']}/{i['instance']}: {'up' if i['up'] else 'DOWN'}, last scan "
                           f"{ago(i['last_scan'], now)} ({i['source']})", "ok" if i["up"] else "down"))
    for s in summary["log_sources"] or []:
        read = s["lines"]
        fresh.append(f"  log {s['source']}: last line {ago(s['last_line'], now)}; {read.get('parsed', 0)} parsed, "
                     f"{read.get('ignored', 0)} ignored, {read.get('unparsed', 0)} unparsed")
    for cid, c in document["collectors"].items():
        error = f": {c['last_error']}" if c["last_error"] and c["state"] != "ok" else ""
        fresh.append(paint(f"  collector {cid}: {c['state']}{error}", c["state"]))
    for d in summary["disabled_collectors"]:
        fresh.append(f"  collector {d['id']}: not enabled: {d['default'].replace('`', '')}")
    out += _section("Freshness and collectors", fresh)
    if summary["addresses_masked"]:
        out += ["", "Mail addresses are masked (configure basic auth on the agent to see them)."]
    return "\n".join(out)


def _show(url: str, password_file: str | None, as_json: bool, paint: Painter, out: TextIO) -> int:
    try:
        document = get_json(url, "/api/v1/status", password_file=password_file)
    except AgentError as exc:
        print(f"mtaq-exporter status: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2) if as_json else render(document, shown_url(url), paint), file=out)
    return 0


def main(argv: list[str]) -> int:
    """Print the summary once, or every ``--watch`` seconds until interrupted."""
    parser = command_parser("mtaq-exporter status", __doc__)
    add_agent_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the agent's status document")
    parser.add_argument("--watch", type=float, nargs="?", const=5.0, metavar="SECONDS",
                        help="redraw every SECONDS (default 5) until Ctrl-C")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colours: on a terminal (auto, the default), always or never")
    args = parser.parse_args(argv)
    tty = sys.stdout.isatty()
    paint = Painter(args.color == "always" or (args.color == "auto" and tty))
    if args.watch is None:
        return _show(args.url, args.password_file, args.json, paint, sys.stdout)
    try:
        while True:
            if tty:
                sys.stdout.write("\033[H\033[2J")
            _show(args.url, args.password_file, args.json, paint, sys.stdout)
            sys.stdout.flush()
            time.sleep(max(1.0, args.watch))
    except KeyboardInterrupt:
        return 0
