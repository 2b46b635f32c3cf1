"""``mtaq-exporter dead-letters``: messages whose retries ran out, with their failure context.

Asks a running agent (``GET /api/v1/dead-letters``): for each expired message, newest first,
when it expired, how long it had been queued, its queue id, sender, the domain of its first
pending recipient, its lane, the provider and reason of its last deferral, how many attempts and
pending recipients it had, and the last reply. Mail addresses are masked unless the agent has
basic auth configured (``--url http://user@host:port --password-file FILE``) or
``web.mask_addresses: false``. For finished log files use
``mtaq-exporter analyze``, which lists dead letters too.

``--json`` prints the API document with at most ``--limit`` entries: ``{"dead_letters": [...],
"addresses_masked": bool, "omitted": n}``.

Exit status 0, or 2 when the agent cannot be asked.
"""

from __future__ import annotations

import json
import sys

from collectors.classify import domain_of
from exporter.commands.agent_client import AgentError, add_agent_flags, get_json
from exporter.commands.flags import command_parser
from exporter.render import age, clip, table, when


def _recipients(d: dict) -> str:
    """The first pending recipient's domain, and how many more are pending."""
    first = domain_of(d["recipients"][0]) if d.get("recipients") else "?"
    more = d["pending_recipients"] - 1
    return f"{first} +{more}" if more > 0 else first


def render(dead_letters: list[dict], limit: int) -> str:
    """A table, newest first, with a note when entries were left out."""
    rows = [[when(d["expired_at"], utc=True), age(d["expired_at"] - d["first_seen"] if d.get("first_seen") else None),
             d["qid"], d["sender"] or "<>", _recipients(d), d["lane"], d["provider"], d["reason"], d["attempts"],
             clip(d["text"], 80)] for d in dead_letters[:limit]]
    lines = table(["expired (UTC)", "queued", "qid", "sender", "to (domain)", "lane", "provider", "reason", "tries",
                   "last reply"], rows, align="lrllllllrl")
    if not dead_letters:
        lines.append("no dead letters since the agent started")
    if len(dead_letters) > limit:
        lines.append(f"... {len(dead_letters) - limit} more (--limit)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the agent's dead letters; exit 0, or 2 when the agent cannot be asked."""
    parser = command_parser("mtaq-exporter dead-letters", __doc__)
    add_agent_flags(parser)
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="entries to show (default 50)")
    parser.add_argument("--json", action="store_true", help="print the API document (at most --limit entries)")
    args = parser.parse_args(argv)
    try:
        document = get_json(args.url, "/api/v1/dead-letters", password_file=args.password_file)
    except AgentError as exc:
        print(f"mtaq-exporter dead-letters: {exc}", file=sys.stderr)
        return 2
    letters = document["dead_letters"]
    if args.json:
        print(json.dumps({**document, "dead_letters": letters[:args.limit],
                          "omitted": max(0, len(letters) - args.limit)}, indent=2))
    else:
        print(render(letters, args.limit))
    return 0
