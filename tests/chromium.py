"""A real headless Chromium (Debian's ``chromium``) for the page tests: the DOM it renders and
screenshots, through its own command line (no driver, no new Python dependency), plus a small
reader of the rendered tables."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

#: Headless, offline and without anything that phones home (the machine has no internet).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def binary() -> str:
    """The chromium binary, or skip the test."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (Debian package chromium; make test installs it as root)")
    return path


def _run(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    with tempfile.TemporaryDirectory(prefix="mtaq-chromium-") as profile:
        start = time.monotonic()
        done = subprocess.run([binary(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=120)
        return done, time.monotonic() - start


def dump_dom(url: str) -> tuple[str, float]:
    """The DOM Chromium rendered for ``url``, and the seconds the browser took (start to exit)."""
    done, seconds = _run("--dump-dom", url)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout, seconds


def screenshot(url: str, path: Path, width: int = 1280, height: int = 2000) -> None:
    """A PNG of ``url`` rendered in a ``width`` x ``height`` window."""
    done, _ = _run(f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars", url)
    assert done.returncode == 0 and path.stat().st_size > 10_000, done.stderr[-2000:]


@dataclass
class Cell:
    """A table cell: its text, attributes and links (text, href)."""

    text: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    links: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Row:
    """A table row: its attributes and cells (header rows have ``header`` set)."""

    attrs: dict[str, str]
    cells: list[Cell] = field(default_factory=list)
    header: bool = False

    def by_class(self, css: str) -> Cell:
        """The cell whose class list contains ``css``."""
        return next(c for c in self.cells if css in c.attrs.get("class", "").split())


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[Row]] = {}
        self.texts: dict[str, str] = {}  # element id -> its text, for ids outside tables
        self.attrs_by_id: dict[str, dict[str, str]] = {}
        self._table: list[Row] | None = None
        self._cell: Cell | None = None
        self._link: list[str] | None = None  # [text, href] of a link being read in a cell
        self._open_ids: list[tuple[str, str]] = []  # (tag, id) of elements with an id being read

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.attrs_by_id[a["id"]] = a
            self.texts[a["id"]] = ""
            self._open_ids.append((tag, a["id"]))
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append(Row(a))
        elif tag == "a" and self._cell is not None:
            self._link = ["", a.get("href", "")]
        elif tag in ("td", "th") and self._table is not None:
            self._cell = Cell("", a)
            self._table[-1].cells.append(self._cell)
            self._table[-1].header = tag == "th"

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._cell is not None and self._link is not None:
            self._cell.links.append((self._link[0].strip(), self._link[1]))
            self._link = None
        elif tag in ("td", "th") and self._cell is not None:
            self._cell.text = " ".join(self._cell.text.split())
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.text += data
        if self._link is not None:
            self._link[0] += data
        for _, element in self._open_ids:
            self.texts[element] += data


@dataclass
class Page:
    """What a test reads from a rendered page."""

    tables: dict[str, list[Row]]
    texts: dict[str, str]
    attrs: dict[str, dict[str, str]]

    def rows(self, table: str) -> list[Row]:
        """The data rows of ``table`` (header left out)."""
        return [r for r in self.tables[table] if not r.header]


def parse(dom: str) -> Page:
    """Tables (by id), texts and attributes of elements with an id."""
    reader = _Tables()
    reader.feed(dom)
    return Page(reader.tables, {k: " ".join(v.split()) for k, v in reader.texts.items()}, reader.attrs_by_id)
