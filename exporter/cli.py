"""The ``mtaq-exporter`` command: the agent by default, operator commands as subcommands.

    mtaq-exporter [--config.file FILE] [--web.listen-address :10154] …   run the agent
    mtaq-exporter demo                      the agent on bundled real Postfix data
    mtaq-exporter check-config [--config.file FILE]
    mtaq-exporter qshape [--json] [--by provider|domain]
    mtaq-exporter analyze [--json] LOG…
    mtaq-exporter blocklists check [--json] …
    mtaq-exporter dead-letters [--url URL] [--json]

Exit status 2 on bad configuration or usage, with one line per problem naming the key.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from exporter import __version__
from exporter.config import Config, ConfigError, load_config

log = logging.getLogger("mtaq")

# flag -> dotted config key; flags override environment variables and the file.
FLAGS: dict[str, tuple[str, str]] = {
    "--web.listen-address": ("web.listen_address", "address to listen on, [host]:port (default :10154)"),
    "--web.telemetry-path": ("web.telemetry_path", "path of the metrics page (default /metrics)"),
    "--web.config.file": ("web.config_file", "exporter-toolkit web-config.yml: TLS and basic auth"),
    "--postfix.showq-path": ("postfix.instances[0].showq_path", "Postfix showq socket"),
    "--postfix.config-dir": ("postfix.instances[0].config_dir", "Postfix configuration directory"),
    "--log.from": ("log.from", "where to begin a log without checkpoint: start or end"),
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config_file", metavar="FILE", help="YAML configuration file")
    for flag, (_, help_text) in FLAGS.items():
        parser.add_argument(flag, dest=flag, default=None, help=help_text)
    parser.add_argument("--log.path", dest="log_paths", action="append", metavar="PATH",
                        help="mail log to tail (repeatable; - for standard input)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for flag, (key, _) in FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if key.startswith("postfix.instances[0]."):
            tree.setdefault("postfix", {}).setdefault("instances", [{}])[0][key.rsplit(".", 1)[1]] = value
        else:
            section, name = key.split(".", 1)
            tree.setdefault(section, {})[name] = value
    if getattr(args, "log_paths", None):
        tree.setdefault("log", {})["paths"] = args.log_paths
    return tree


def exit_on_config_error(exc: ConfigError) -> NoReturn:
    """Print every problem, one line each, and exit 2."""
    for problem in exc.problems:
        print(f"mtaq-exporter: configuration error: {problem}", file=sys.stderr)
    raise SystemExit(2)


def config_from_args(args: argparse.Namespace) -> Config:
    """Load configuration for parsed ``args``; exits 2 with every problem listed."""
    try:
        return load_config(args.config_file, overrides=_overrides(args))
    except ConfigError as exc:
        exit_on_config_error(exc)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_agent(config: Config, collectors: Sequence[Any] | None = None, *, ready: threading.Event | None = None) -> int:
    """Run the agent until SIGINT/SIGTERM."""
    from exporter.agent import Agent

    try:
        agent = Agent(config, collectors)
    except ConfigError as exc:
        exit_on_config_error(exc)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    agent.start()
    print(f"mtaq-exporter {__version__} serving on port {agent.port} (Ctrl-C to stop)", file=sys.stderr)
    if ready is not None:
        ready.set()
    stop.wait()
    agent.stop()
    return 0


def cmd_run(argv: list[str]) -> int:
    """Run the agent."""
    parser = argparse.ArgumentParser(prog="mtaq-exporter", description="Postfix/Exim queue and log exporter.")
    _add_config_flags(parser)
    parser.add_argument("--log.level", dest="log_level", default="info", help="debug, info, warning, error")
    parser.add_argument("--version", action="version", version=f"mtaq-exporter {__version__}")
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    return run_agent(config_from_args(args))


def cmd_check_config(argv: list[str]) -> int:
    """Validate the configuration and exit (0 valid, 2 invalid)."""
    parser = argparse.ArgumentParser(prog="mtaq-exporter check-config")
    _add_config_flags(parser)
    config = config_from_args(parser.parse_args(argv))
    print(f"configuration OK: lanes {', '.join(config.lanes.names)}; "
          f"{len(config.postfix.instances)} Postfix instance(s); {len(config.log.paths)} log path(s)")
    return 0


def cmd_demo(argv: list[str]) -> int:
    """Serve metrics from bundled real Postfix data."""
    from exporter.demo import main

    return main(argv)


def cmd_qshape(argv: list[str]) -> int:
    """Queue age buckets by provider or domain."""
    from exporter.qshape import main

    return main(argv)


def cmd_analyze(argv: list[str]) -> int:
    """Offline report of mail log files."""
    from collectors.classify import Classifier
    from exporter.analyze import main

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config.file", dest="config_file")
    known, rest = parser.parse_known_args(argv)
    config = config_from_args(argparse.Namespace(config_file=known.config_file))
    return main(rest, classifier=Classifier(config))


def cmd_dead_letters(argv: list[str]) -> int:
    """Dead letters from a running agent."""
    from exporter.dead_letters import main

    return main(argv)


def cmd_blocklists(argv: list[str]) -> int:
    """One-shot blocklist check."""
    from exporter.blocklists_cli import main

    return main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "demo": cmd_demo,
    "check-config": cmd_check_config,
    "qshape": cmd_qshape,
    "analyze": cmd_analyze,
    "blocklists": cmd_blocklists,
    "dead-letters": cmd_dead_letters,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
    return cmd_run(argv)


if __name__ == "__main__":
    sys.exit(main())
