"""``mtaq-exporter blocklists check``: one blocklist run from the shell, as a table or as JSON.

    mtaq-exporter blocklists check --ip 192.0.2.10 --domain example.com
    mtaq-exporter blocklists check --json --nameserver 127.0.0.1:5353 --list zen.spamhaus.org --ip …

Exit status: 0 every answer clean, 1 something is listed, 2 no listing but some check was unknown
(timeout, SERVFAIL, REFUSED, refusal code, unhealthy list) or bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from collectors.dnsbl_catalogue import DnsblSettings, load_catalogue
from collectors.dnsbl_check import RunResult, Status, check
from collectors.dnsbl_report import definitive_answers, results_dict
from collectors.settings import describe_errors
from exporter.render import table

PROG = "mtaq-exporter blocklists"
EXIT_CLEAN, EXIT_LISTED, EXIT_UNKNOWN = 0, 1, 2

# Settings paths -> the option that feeds them, to name the culprit in validation errors.
OPTIONS = {
    "targets.ips": "--ip",
    "targets.domains": "--domain",
    "nameservers": "--nameserver",
    "timeout": "--timeout",
    "lists.enable_only": "--list",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``blocklists`` argument parser (its ``check`` subcommand)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Check IPs and domains on DNS blocklists.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="check")
    run = commands.add_parser(
        "check",
        help="check targets once and report",
        description="Query the default blocklist catalogue (or the --list zones) once for each target. "
        "Exit 0 clean, 1 listed, 2 unknown results or bad usage.",
    )
    run.add_argument("--ip", action="append", default=[], metavar="IP",
                     help="IPv4 or IPv6 address (repeatable)")
    run.add_argument("--domain", action="append", default=[], metavar="DOMAIN",
                     help="domain name (repeatable)")
    run.add_argument("--list", dest="lists", action="append", default=[], metavar="ZONE",
                     help="only this list, by public zone, e.g. zen.spamhaus.org (repeatable)")
    run.add_argument("--nameserver", action="append", default=[], metavar="HOST[:PORT]",
                     help="recursive resolver to ask (repeatable; default: /etc/resolv.conf)")
    run.add_argument("--timeout", type=float, default=2.0, metavar="S", help="seconds per query (default 2)")
    run.add_argument("--json", action="store_true", help="print the full result as JSON")
    return parser


def main(argv: list[str]) -> int:
    """Run ``blocklists`` with ``argv`` (the words after ``blocklists``); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 after --help
        return EXIT_UNKNOWN if exc.code else EXIT_CLEAN
    if not args.ip and not args.domain:
        print(f"{PROG} check: nothing to check: give at least one --ip or --domain", file=sys.stderr)
        return EXIT_UNKNOWN
    try:
        settings = DnsblSettings(
            enabled=True,
            targets={"ips": args.ip, "domains": args.domain},
            nameservers=args.nameserver,
            timeout=args.timeout,
            lists={"enable_only": args.lists or None},
        )
    except ValidationError as exc:
        for problem in describe_errors(exc, name=_option):
            print(f"{PROG} check: {problem}", file=sys.stderr)
        return EXIT_UNKNOWN
    targets = settings.target_names()
    run = asyncio.run(check(targets, load_catalogue(settings), settings))
    if not run.results:
        print(f"{PROG} check: no selected list applies to these targets", file=sys.stderr)
        return EXIT_UNKNOWN
    if args.json:
        print(json.dumps(results_dict(run, definitive_answers(run)), indent=2))
    else:
        print(render(run))
    return exit_status(run)


def _option(key: str) -> str:
    """The option that supplied a settings key (``targets.ips[1]`` -> ``--ip``)."""
    return OPTIONS.get(key.split("[", 1)[0], key)


def exit_status(run: RunResult) -> int:
    """1 if any target is listed, else 2 if any answer was unknown or a list unhealthy, else 0."""
    if any(r.status is Status.LISTED for r in run.results):
        return EXIT_LISTED
    if any(r.status is Status.UNKNOWN for r in run.results) or not all(h.healthy for h in run.health):
        return EXIT_UNKNOWN
    return EXIT_CLEAN


def render(run: RunResult) -> str:
    """The human report: one row per answer (one per code when listed), then list health."""
    delist = {bl.zone: bl for bl in run.lists}
    rows: list[Sequence[str]] = []
    reasons = []
    for r in run.results:
        if r.status is Status.LISTED:
            url = delist[r.list].delist_url_for(r.target)
            rows.extend([r.target, r.list, str(r.status), x.code, x.meaning, url] for x in r.listings)
            reasons.extend(f"  {r.target} on {r.list}: {text}" for text in r.txt)
        else:
            rows.append([r.target, r.list, str(r.status), r.answer or "", r.error or "", ""])
    lines = table(["TARGET", "LIST", "STATUS", "CODE", "MEANING / ERROR", "DELIST"], rows, align="llllll")
    if reasons:
        lines += ["", "Reasons given by the lists (TXT):", *reasons]
    lines += ["", "Lists (RFC 5782 test points):"]
    lines += table(["LIST", "HEALTH", "PROBLEM"],
                   [[h.list, "healthy" if h.healthy else "UNHEALTHY", h.error or ""] for h in run.health], align="lll")
    counts = {status: sum(r.status is status for r in run.results) for status in Status}
    lines += ["", f"{counts[Status.LISTED]} listed, {counts[Status.NOT_LISTED]} not listed, "
                  f"{counts[Status.UNKNOWN]} unknown; lists: {len(run.health)}, DNS queries: {run.queries}, "
                  f"time: {run.duration_seconds:.1f} s"]
    return "\n".join(lines)
