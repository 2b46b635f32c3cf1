"""What the agent says about itself: readiness, the status document and the landing page."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from collectors.base import BaseCollector
from exporter import __version__


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


def status_document(collectors: Sequence[BaseCollector], started: float) -> dict[str, object]:
    """Each collector's state, sources and last error (``GET /api/v1/status``)."""
    document: dict[str, object] = {"version": __version__, "started": started, "collectors": {}}
    for c in collectors:
        h = c.health.view()
        document["collectors"][c.id] = {  # type: ignore[index]
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


def landing_page(collectors: Sequence[BaseCollector], links: Sequence[tuple[str, str]],
                 title: str = "mtaq-exporter") -> bytes:
    """A small HTML page: links, each collector's state, what it reads and its last error."""
    rows = []
    for c in collectors:
        h = c.health.view()
        state = "ok" if h.success else ("waiting" if h.last_run is None and not h.last_error else "FAILING")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(h.last_error_time)) if h.last_error_time else ""
        rows.append(f"<tr><td>{c.id}</td><td class='{state.lower()}'>{state}</td>"
                    f"<td>{html.escape('; '.join(c.sources()))}</td><td>{h.errors_total}</td><td>{when}</td>"
                    f"<td>{html.escape(h.last_error or '')}</td></tr>")
    items = "".join(f"<li><a href='{html.escape(path)}'>{html.escape(name)}</a></li>" for path, name in links)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
.ok{{color:green}}.failing{{color:#b00;font-weight:bold}}.waiting{{color:#a60}}</style></head>
<body><h1>{title}</h1><p>Version {__version__}</p><ul>{items}</ul>
<h2>Collectors</h2><table><tr><th>collector</th><th>state</th><th>reads</th><th>errors</th>
<th>last error at (UTC)</th><th>last error</th></tr>{"".join(rows)}</table></body></html>"""
    return page.encode()
