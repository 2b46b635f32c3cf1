"""Alert-driven actions: Alertmanager alerts in, safe and reversible throttles out.

- ``config``: the ``actions:`` section (rules mapping alerts to actions, TTLs, the webhook token,
  pull mode);
- ``alerts``: webhook (version 4) and API v2 payloads, validated;
- ``engine``: decisions, the worker that applies and restores, state, history, metrics, routes;
- ``executors``: ``postfix_throttle``, ``postfix_pause`` (through ``collectors/postfix/control.py``),
  ``exim_throttle``, ``exim_pause`` (through ``collectors/exim/control.py``) and ``http``;
- ``pull``: polling Alertmanager's API v2;
- ``setup``: the one-time Postfix provisioning (``mtaq-exporter actions setup-postfix``).
"""

from __future__ import annotations

from typing import Any

from collectors.classify import Classifier
from collectors.exim.control import EximThrottleFiles
from collectors.postfix.control import PostfixControl
from collectors.settings import ConfigError
from exporter.actions.engine import ActionEngine
from exporter.actions.executors import EximPause, EximThrottle, HttpAction, PostfixPause, PostfixThrottle, Reloader

#: The routes the engine adds, and what they answer while actions are off.
ROUTES = (("GET", "/api/v1/actions"), ("POST", "/api/v1/actions/restore"), ("POST", "/api/v1/alerts"))
DISABLED = 'actions are not enabled: set actions.enabled: true (README "Actions")'


def build_actions(config: Any, classifier: Classifier) -> ActionEngine | None:
    """The actions engine ``config`` asks for (None when actions are off)."""
    section = config.actions
    if not section.enabled:
        return None
    controls = [PostfixControl(instance) for instance in config.postfix.instances]
    reloader = Reloader()
    exim_files = [EximThrottleFiles(i) for i in config.exim.instances if i.throttle_dir]
    unready = [f"actions.rules[{i}].action: {rule.action} needs exim.instances[].throttle_dir (README \"Exim\")"
               for i, rule in enumerate(section.rules) if rule.action.startswith("exim_") and not exim_files]
    if unready:
        raise ConfigError(unready)
    domains = classifier.provider_domains()
    executors = {"postfix_throttle": PostfixThrottle(controls, reloader),
                 "postfix_pause": PostfixPause(controls, reloader), "exim_throttle": EximThrottle(exim_files, domains),
                 "exim_pause": EximPause(exim_files, domains), "http": HttpAction()}
    try:
        return ActionEngine(section, executors, providers=classifier.provider_names,
                            instances=[i.name for i in (*config.postfix.instances, *config.exim.instances)])
    except OSError as exc:
        raise ConfigError([f"actions: cannot read a token file: {exc}"]) from None
