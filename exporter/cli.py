"""The ``mtaq-exporter`` command: the agent by default, operator commands as subcommands.

This module only dispatches; each command lives in ``exporter/commands/``.
"""

from __future__ import annotations

import importlib
import sys

#: command -> its module in ``exporter.commands`` (``main(argv) -> int``), imported when chosen:
#: a command starts without loading what only the others need (the HTTP server, the actions engine).
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "check-config": "check_config",
    "qshape": "qshape",
    "analyze": "analyze",
    "blocklists": "blocklists",
    "dead-letters": "dead_letters",
    "status": "status",
    "actions": "actions",
    "healthcheck": "healthcheck",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, argv = (argv[0], argv[1:]) if argv and argv[0] in COMMANDS else ("", argv)
    module = importlib.import_module(f"exporter.commands.{COMMANDS[command] if command else 'run'}")
    return int(module.main(argv))


if __name__ == "__main__":
    sys.exit(main())
