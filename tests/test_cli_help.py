"""``--help`` of the agent and the operator commands: plain text, every option described, only
the options that matter to the command; the agent's flags validated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.table import COLLECTORS
from exporter.commands.flags import WEB_FLAGS, collector_flags

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("", "demo", "check-config", "qshape", "analyze", "dead-letters", "status", "healthcheck")


def help_text(command: str) -> str:
    args = [command] if command else []
    done = subprocess.run([sys.executable, "-m", "exporter.cli", *args, "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def options(text: str) -> dict[str, str]:
    """Each option of a help text and its description (argparse's layout: the description on the
    same line after two spaces, or indented on the next)."""
    described: dict[str, str] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^  (-\S.*?)(?:  +(\S.*))?$", line)
        if not match:
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        name = re.search(r"--[\w.-]+", match.group(1))
        if name:
            described[name.group(0)] = match.group(2) or (
                following.strip() if following.startswith(" " * 10) else "")
    return described


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c or "agent")
def test_help_is_plain_text_with_every_option_described(command: str) -> None:
    text = help_text(command)
    assert "``" not in text and "::" not in text, "reStructuredText markup leaked into --help"
    assert not re.search(r"--[\w.-]+ --[A-Z]", text), "an option's placeholder repeats its name"
    described = options(text)
    assert "--help" in described
    missing = [option for option, description in described.items() if not description]
    assert missing == [], f"{command or 'agent'}: options without a description: {missing}"


def test_each_command_lists_only_options_that_matter_to_it() -> None:
    web = {flag.flag for flag in WEB_FLAGS}
    queue_flags = {flag.flag for flag in collector_flags("postfix_queue")}
    qshape = set(options(help_text("qshape")))
    assert qshape >= queue_flags | {"--config.file", "--by", "--from-json", "--limit", "--json"}
    assert not qshape & (web | {"--log.level", "--log.path", "--log.from"})
    analyze = set(options(help_text("analyze")))
    assert not analyze & (web | queue_flags | {"--log.level"})
    for client in ("status", "dead-letters"):
        assert set(options(help_text(client))) - {"--help"} <= {"--url", "--password-file", "--json", "--limit",
                                                                "--watch", "--color"}
    demo = set(options(help_text("demo")))
    assert demo == web | {"--help", "--lines-per-second", "--log.level"}
    # check-config takes the agent's configuration flags (it checks what the agent would run with),
    # not the agent's own log level.
    check = set(options(help_text("check-config")))
    agent = set(options(help_text("")))
    assert check == agent - {"--log.level", "--version"}
    assert {f"--collector.{spec.id}" for spec in COLLECTORS} <= check


def test_help_lists_every_command() -> None:
    text = help_text("")
    for command in COMMANDS[1:]:
        assert re.search(rf"^  {command} +\S", text, re.MULTILINE), command


@pytest.mark.parametrize("args", [["--log.level", "verbose"], ["demo", "--log.level", "verbose"]])
def test_a_bad_log_level_is_refused(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 2
    assert "argument --log.level: invalid choice: 'verbose' (choose from 'debug', 'info', 'warning', 'error')" in \
        done.stderr
