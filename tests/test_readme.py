"""The README against the code: the metric table is one table naming every family of the
catalogue, the operator commands' options are all listed, the screenshot of ``/`` is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collectors.families import CATALOGUE
from tests.test_cli_help import help_text, options

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_metric_table_is_one_table_with_every_family() -> None:
    lines = section("Metrics").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| Metric |"))
    end = next(i for i in range(first, len(lines)) if not lines[i].startswith("|"))
    assert not any(line.startswith("|") for line in lines[end:]), "a second table, or a table cut in two"
    named = {name for line in lines[first + 2:end] for name in re.findall(r"`(mtaq_[a-z_]+)`", line.split("|")[1])}
    assert set(CATALOGUE) - named == set()
    assert named - set(CATALOGUE) == set()


@pytest.mark.parametrize("command", ["demo", "status", "check-config", "qshape", "analyze", "dead-letters"])
def test_every_option_of_the_operator_commands_is_in_the_readme(command: str) -> None:
    commands = section("Running it for real")
    for option in set(options(help_text(command))) - {"--help"}:
        if command == "check-config":  # the agent's flags, listed in the flags table and by kind
            continue
        assert f"`{option}" in commands, f"{command} {option}"
    assert f"`mtaq-exporter {command}" in commands


def test_the_screenshot_of_the_page_is_shown() -> None:
    assert "![" in section("Quick start") and "(docs/screenshot-landing.png)" in section("Quick start")
    assert (ROOT / "docs" / "screenshot-landing.png").stat().st_size > 10_000
    assert "## The first 10 minutes" in README
