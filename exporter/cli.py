"""The ``mtaq-exporter`` command: the agent by default, operator commands as subcommands.

This module only dispatches; each command lives in ``exporter/commands/``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from exporter.commands import (
    actions,
    analyze,
    blocklists,
    check_config,
    dead_letters,
    demo,
    healthcheck,
    qshape,
    run,
    status,
)

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "demo": demo.main,
    "check-config": check_config.main,
    "qshape": qshape.main,
    "analyze": analyze.main,
    "blocklists": blocklists.main,
    "dead-letters": dead_letters.main,
    "status": status.main,
    "actions": actions.main,
    "healthcheck": healthcheck.main,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return run.main(argv)


if __name__ == "__main__":
    sys.exit(main())
