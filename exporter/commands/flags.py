"""Command-line flags shared by the commands: the parser every command starts from, the
configuration file, flags that set configuration keys (declared by the collectors and here for
the web server), collector switches (``--collector.<id>`` / ``--no-collector.<id>``,
node_exporter's convention) and the log level."""

from __future__ import annotations

import argparse
import copy
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from collectors.settings import ConfigError
from collectors.spec import Flag
from collectors.table import COLLECTORS
from exporter.config import load_config, set_dotted

WEB_FLAGS = (
    Flag("--web.listen-address", "web.listen_address", "address to listen on (default :10154)",
         metavar="[HOST]:PORT"),
    Flag("--web.telemetry-path", "web.telemetry_path", "path of the metrics page (default /metrics)", metavar="PATH"),
    Flag("--web.config.file", "web.config_file", "exporter-toolkit web-config.yml: TLS and basic auth",
         metavar="FILE"),
)
LOG_LEVELS = ("debug", "info", "warning", "error")


def plain(doc: str) -> str:
    """A docstring as ``--help`` text: reST literals (````x````) and literal-block markers (``::``) removed."""
    return re.sub(r"``([^`]*)``", r"\1", doc).replace("::\n", ":\n").strip()


def command_parser(prog: str, doc: str | None, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of a command: its module docstring as description, line breaks kept."""
    return argparse.ArgumentParser(prog=prog, description=plain(doc or ""), epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def collector_flags(*collector_ids: str) -> tuple[Flag, ...]:
    """The flags of the named collectors (all of them when none is named)."""
    return tuple(flag for spec in COLLECTORS if not collector_ids or spec.id in collector_ids for flag in spec.flags)


def add_config_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag], *, switches: bool = False) -> None:
    """``--config.file`` and ``flags``; with ``switches``, ``--[no-]collector.<id>`` for every collector."""
    parser.add_argument("--config.file", dest="config_file", metavar="FILE",
                        help="YAML configuration file (also MTAQ_CONFIG_FILE)")
    add_setting_flags(parser, flags)
    if switches:
        group = parser.add_argument_group("collectors", "turn a collector on or off whatever its condition")
        for spec in COLLECTORS:
            group.add_argument(f"--collector.{spec.id}", dest=f"collector:{spec.id}",
                               action=argparse.BooleanOptionalAction,
                               help=f"{spec.reads} (default: {spec.default})".replace("`", ""))


def add_setting_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """``flags``, each setting one configuration key, in a group of their own."""
    if not flags:
        return
    group = parser.add_argument_group("settings", "each sets a configuration key (flags override MTAQ_... "
                                                  "variables, which override the file)")
    for flag in flags:
        group.add_argument(flag.flag, dest=f"flag:{flag.flag}", metavar=flag.metavar, choices=flag.choices,
                           action="append" if flag.repeatable else "store", help=flag.help)


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """``--log.level`` for the agent's own log."""
    parser.add_argument("--log.level", dest="log_level", default="info", choices=LOG_LEVELS,
                        help="the agent's own log level (default info)")


def setup_logging(level: str) -> None:
    """Log to standard error at ``level``."""
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def exit_on_config_error(exc: ConfigError) -> NoReturn:
    """Print every problem, one line each, and exit 2."""
    for problem in exc.problems:
        print(f"mtaq-exporter: configuration error: {problem}", file=sys.stderr)
    raise SystemExit(2)


def load(args: argparse.Namespace, flags: Sequence[Flag], fixed: Mapping[str, Any] | None = None) -> Any:
    """The configuration for parsed ``args``: file, environment, then ``fixed`` (settings the
    command imposes, such as the demo's lanes), then the flags given; exits 2 with every problem
    listed."""
    tree: dict[str, Any] = copy.deepcopy(dict(fixed or {}))
    flag_keys: dict[str, str] = {}
    for flag in flags:
        value = getattr(args, f"flag:{flag.flag}", None)
        if value is not None:
            set_dotted(tree, flag.key, value)
            flag_keys[flag.key] = flag.flag
    for spec in COLLECTORS:
        value = getattr(args, f"collector:{spec.id}", None)
        if value is not None:
            set_dotted(tree, f"collectors.{spec.id}", value)
            flag_keys[f"collectors.{spec.id}"] = f"--{'' if value else 'no-'}collector.{spec.id}"
    try:
        return load_config(getattr(args, "config_file", None), overrides=tree, flag_keys=flag_keys)
    except ConfigError as exc:
        exit_on_config_error(exc)
