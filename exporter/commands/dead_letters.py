"""``mtaq-exporter dead-letters``: messages whose retries ran out, with their failure context.

Asks a running agent (``GET /api/v1/dead-letters``): for each expired message, when it expired,
how long it had been queued, its lane, the provider and reason of its last deferral, the last
reply, how many attempts and pending recipients it had. For finished log files use
``mtaq-exporter analyze``, which lists dead letters too.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from exporter.render import age, clip, table, when


def render(dead_letters: list[dict], limit: int) -> str:
    """A table, newest first: expiry time, queued for, lane, provider, reason, counts, reply."""
    rows = [[when(d["expired_at"], utc=True), age(d["expired_at"] - d["first_seen"] if d.get("first_seen") else None),
             d["qid"], d["lane"], d["provider"], d["reason"], d["attempts"], d["pending_recipients"],
             clip(d["text"])] for d in dead_letters[:limit]]
    lines = table(["expired (UTC)", "queued", "qid", "lane", "provider", "reason", "tries", "rcpts", "last reply"],
                  rows, align="lrllllrrl")
    if len(dead_letters) > limit:
        lines.append(f"... {len(dead_letters) - limit} more (--limit)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the agent's dead letters; exit 0, or 2 when the agent cannot be asked."""
    parser = argparse.ArgumentParser(prog="mtaq-exporter dead-letters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:10154", help="the agent (default %(default)s)")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the API document")
    args = parser.parse_args(argv)
    try:
        with urllib.request.urlopen(f"{args.url.rstrip('/')}/api/v1/dead-letters", timeout=10) as response:
            document = json.loads(response.read())
    except (OSError, ValueError) as exc:
        reason = "the agent does not tail a mail log" if isinstance(exc, urllib.error.HTTPError) and \
            exc.code == 404 else exc
        print(f"mtaq-exporter dead-letters: cannot ask {args.url}: {reason}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(render(document["dead_letters"], args.limit))
    return 0
