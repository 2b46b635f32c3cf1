#!/usr/bin/env python3
"""Copy the Prometheus rules and Grafana dashboards into the Helm chart.

Helm's ``.Files`` can only read files inside the chart, so the chart carries copies of
``rules/mtaq.rules.yml`` and ``dashboards/*.json`` (the single source of truth) under
``helm/mtaq-exporter/files/``. Run this after changing either; ``--check`` only reports drift
(exit status 1), which ``tests/test_packaging.py`` also catches.

    python helm/sync_files.py          # copy
    python helm/sync_files.py --check  # compare, change nothing
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART_FILES = ROOT / "helm" / "mtaq-exporter" / "files"


def pairs(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(source, chart copy) for every file the chart must carry."""
    files = root / "helm" / "mtaq-exporter" / "files"
    result = [(root / "rules" / "mtaq.rules.yml", files / "mtaq.rules.yml")]
    for source in sorted((root / "dashboards").glob("*.json")):
        result.append((source, files / "dashboards" / source.name))
    return result


def stale(root: Path = ROOT) -> list[Path]:
    """Chart dashboard copies whose source no longer exists."""
    wanted = {copy for _, copy in pairs(root)}
    directory = root / "helm" / "mtaq-exporter" / "files" / "dashboards"
    return sorted(p for p in directory.glob("*.json") if p not in wanted)


def drift(root: Path = ROOT) -> list[str]:
    """One line per chart copy that is missing, different or stale (empty: in sync)."""
    problems = []
    for source, copy in pairs(root):
        if not source.is_file():
            problems.append(f"source missing: {source.relative_to(root)}")
        elif not copy.is_file():
            problems.append(f"missing copy: {copy.relative_to(root)}")
        elif not filecmp.cmp(source, copy, shallow=False):
            problems.append(f"differs from {source.relative_to(root)}: {copy.relative_to(root)}")
    problems += [f"stale copy (no source): {p.relative_to(root)}" for p in stale(root)]
    return problems


def sync(root: Path = ROOT) -> list[str]:
    """Copy every source into the chart and delete stale copies; returns what changed."""
    changed = []
    for source, copy in pairs(root):
        if copy.is_file() and filecmp.cmp(source, copy, shallow=False):
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        changed.append(f"copied {source.relative_to(root)} -> {copy.relative_to(root)}")
    for path in stale(root):
        path.unlink()
        changed.append(f"removed {path.relative_to(root)}")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing (exit 1 on drift)")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift()
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run: python helm/sync_files.py", file=sys.stderr)
        return 1 if problems else 0
    for line in sync():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
