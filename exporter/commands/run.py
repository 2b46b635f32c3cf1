"""``mtaq-exporter [flags]``: run the agent until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import socket
import sys
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


def run_agent(config: Any, collectors: Sequence[BaseCollector] | None = None, *, banner: str | None = None) -> int:
    """Run the agent until SIGINT or SIGTERM (call from the main thread); ``banner`` tops its page."""
    try:
        agent = Agent(config, collectors, banner=banner)
    except ConfigError as exc:
        exit_on_config_error(exc)
    except FamilyConflictError as exc:
        print(f"mtaq-exporter: cannot start: {exc}", file=sys.stderr)
        return 2
    with _Signals() as signals:
        try:
            agent.start()
        except ListenError as exc:
            agent.stop()
            print(f"mtaq-exporter: {exc}", file=sys.stderr)
            return 2
        print(f"mtaq-exporter {__version__} serving on port {agent.port} (Ctrl-C to stop)", file=sys.stderr)
        signals.wait_for_stop()
        agent.stop()  # still inside: a second SIGTERM must not cut the final checkpoint short
    return 0


class _Signals:
    """SIGINT and SIGTERM end the agent; SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored.

    The handlers do nothing themselves: the interpreter writes each signal's number to a socket
    the main thread reads. A handler that set a ``threading.Event`` deadlocked when the signal
    landed while the main thread was entering that Event's ``wait`` (its lock is not re-entrant):
    CI saw it, a SIGTERM right after start-up, and the agent never ended.
    """

    STOP = (signal.SIGINT, signal.SIGTERM)
    # Their default action ends the process at once, without the final checkpoint; a configuration
    # reload would have to rebuild every collector: not supported.
    IGNORED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)

    def __enter__(self) -> _Signals:
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _noop) for sig in (*self.STOP, *self.IGNORED)}
        return self

    def wait_for_stop(self) -> None:
        """Block until SIGINT or SIGTERM has arrived (also one that arrived before the call)."""
        while True:
            for number in self._read.recv(64):
                if number in self.STOP:
                    return
                log.warning("received %s: ignored (configuration reload is not supported; restart the agent)",
                            signal.Signals(number).name)

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._read.close()
        self._write.close()


def _noop(_signum: int, _frame: object) -> None:
    """A Python-level handler, so that the signal reaches the wakeup socket instead of its default action."""


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
