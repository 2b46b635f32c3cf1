"""The chart through the real Helm engine: ``helm-python-sdk`` embeds Helm v4's Go library, so
rendering and linting need no ``helm`` binary and no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "mtaq-exporter"
RELEASE = "mtaq"
NAMESPACE = "mail"


def render_files(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Every template rendered with ``values`` (over the chart's defaults): {template path: text}."""
    with helm_python.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The Kubernetes objects the chart renders with ``values``, in template order."""
    objects = []
    for path, text in sorted(render_files(values).items()):
        if not path.endswith("NOTES.txt"):
            objects += [document for document in yaml.safe_load_all(text) if document]
    return objects


def notes(values: dict[str, Any] | None = None) -> str:
    """The NOTES.txt an install with ``values`` prints."""
    return next(text for path, text in render_files(values).items() if path.endswith("NOTES.txt"))


def lint(values: dict[str, Any] | None = None, kube_version: str | None = None) -> list[str]:
    """``helm lint --strict`` findings (every severity) with ``values``: empty when clean."""
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=kube_version)
    return [f"{m['path']}: {m['error']}" for m in report["messages"]] + list(report["errors"])
