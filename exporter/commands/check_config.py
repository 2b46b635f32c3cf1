"""``mtaq-exporter check-config``: validate the configuration as the agent does (the web-config
file too), build the collectors it turns on without starting them, check that what they would
read exists and can be read (the agent itself waits for that), say what each would read and
each lane's objectives, and exit: 0 valid, 2 with one line per problem.

It takes the agent's configuration flags, so that the same command line checks exactly what the
agent would run with."""

from __future__ import annotations

from collectors.classify import Classifier
from collectors.settings import ConfigError
from exporter.agent import build_collectors
from exporter.commands.flags import (
    WEB_FLAGS,
    add_config_flags,
    collector_flags,
    command_parser,
    exit_on_config_error,
    load,
)
from exporter.render import age
from exporter.web_config import load_web_config


def main(argv: list[str]) -> int:
    """Exit 0 when the configuration (file, environment, flags) is valid, 2 with every problem when not."""
    parser = command_parser("mtaq-exporter check-config", __doc__)
    flags = (*WEB_FLAGS, *collector_flags())
    add_config_flags(parser, flags, switches=True)
    config = load(parser.parse_args(argv), flags)
    try:
        if config.web.config_file:
            load_web_config(config.web.config_file)
        collectors = build_collectors(config, Classifier(config))
    except ConfigError as exc:
        exit_on_config_error(exc)
    problems = [problem for c in collectors for problem in c.preflight()]
    if problems:
        exit_on_config_error(ConfigError(problems))
    print(f"configuration OK: lanes {', '.join(config.lanes.names)}; "
          f"collectors: {', '.join(c.id for c in collectors) or 'none'}")
    for collector in collectors:
        for source in collector.sources():
            print(f"  {collector.id}: {source}")
    for lane, objective in config.lanes.resolved_objectives().items():
        wait = objective.max_first_attempt_wait
        print(f"  lane {lane}: at most {objective.max_messages} messages queued, oldest message warning after "
              f"{age(objective.max_oldest_age)}, critical after {age(objective.critical_oldest_age)}"
              + (f", first attempt within {age(wait)} while less urgent lanes deliver" if wait is not None else ""))
    return 0
