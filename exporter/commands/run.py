"""``mtaq-exporter [flags]``: run the agent until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from collectors.base import BaseCollector
from collectors.settings import ConfigError
from exporter import __version__
from exporter.agent import Agent
from exporter.commands.flags import (
    WEB_FLAGS,
    add_config_flags,
    add_log_level,
    collector_flags,
    command_parser,
    exit_on_config_error,
    load,
    setup_logging,
)
from exporter.http import ListenError
from exporter.registry import FamilyConflictError

log = logging.getLogger("mtaq")

USAGE = """commands (mtaq-exporter COMMAND --help for each):
  demo          the agent on bundled real Postfix and Exim data
  check-config  validate the configuration and exit (0 valid, 2 invalid)
  qshape        queued recipients by age bucket and lane, provider, domain, sender or reason
  analyze       incident report of mail log files
  dead-letters  a running agent's dead letters with their failure context
  status        a running agent's incident summary (what / shows), --watch, --json
  blocklists    one-shot DNS blocklist check
  actions       alert-driven actions: list, restore, setup-postfix
  healthcheck   exit 0 when the agent answers /healthz (the image's HEALTHCHECK)

Exit status 2 on bad configuration or usage, with one line per problem naming the key."""


def run_agent(config: Any, collectors: Sequence[BaseCollector] | None = None, *,
              ready: threading.Event | None = None, banner: str | None = None) -> int:
    """Run the agent until SIGINT/SIGTERM (or, off the main thread, until the process ends);
    ``banner`` tops its page."""
    try:
        agent = Agent(config, collectors, banner=banner)
    except ConfigError as exc:
        exit_on_config_error(exc)
    except FamilyConflictError as exc:
        print(f"mtaq-exporter: cannot start: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, _ignored)
    try:
        agent.start()
    except ListenError as exc:
        agent.stop()
        print(f"mtaq-exporter: {exc}", file=sys.stderr)
        return 2
    print(f"mtaq-exporter {__version__} serving on port {agent.port} (Ctrl-C to stop)", file=sys.stderr)
    if ready is not None:
        ready.set()
    stop.wait()
    agent.stop()
    return 0


def _ignored(signum: int, _frame: object) -> None:
    # The default action of these signals is to end the process at once, without the final
    # checkpoint; a configuration reload would have to rebuild every collector: not supported.
    log.warning("received %s: ignored (configuration reload is not supported; restart the agent)",
                signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    """Parse the agent's flags and run it."""
    parser = command_parser("mtaq-exporter", "Prometheus exporter and alerting agent for the outgoing mail queues and "
                                             "delivery logs of Postfix.", epilog=USAGE)
    flags = (*WEB_FLAGS, *collector_flags())
    add_config_flags(parser, flags, switches=True)
    add_log_level(parser)
    parser.add_argument("--version", action="version", version=f"mtaq-exporter {__version__}")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return run_agent(load(args, flags))
