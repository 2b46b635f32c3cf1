"""Configuration: one YAML file, ``MTAQ_…`` environment variables and flags, validated at start.

This module only composes: each section's model lives beside the code that consumes it. The
top level holds ``web`` (``exporter/http.py``), ``lanes``/``providers``/``reasons``
(``collectors/classify.py``), ``collectors`` (on/off per collector id, unset = the collector's
own condition), ``actions`` (``exporter/actions/config.py``) and the section of each collector in
the collector table, declared by its module.

Precedence: command-line flags over environment variables over the file over defaults. Every
key can come from the environment as ``MTAQ_<SECTION>__<KEY>`` (double underscore between
levels), e.g. ``MTAQ_WEB__LISTEN_ADDRESS=:9999`` or ``MTAQ_LOG__PATHS='[/var/log/mail.log]'``:
a text setting takes the value as it is, any other is parsed as YAML (lists, numbers, booleans).
All problems are collected and reported together, each with its dotted key and where the value
came from; the CLI then exits with status 2.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model

from collectors.classify import ClassificationConfig
from collectors.settings import ConfigError, StrictModel, describe_errors
from collectors.spec import CollectorSpec
from collectors.table import COLLECTORS
from exporter.actions.config import ActionsSection
from exporter.http import WebSection

ENV_PREFIX = "MTAQ_"
CONFIG_FILE_VARIABLE = "MTAQ_CONFIG_FILE"

#: ``collectors.<id>: true|false`` forces a collector on or off (``--collector.<id>`` flags).
CollectorsSection = create_model(
    "CollectorsSection", __base__=StrictModel, __doc__="On/off per collector id; null: the collector's condition.",
    **{spec.id: (bool | None, None) for spec in COLLECTORS})  # type: ignore[call-overload]


def _sections() -> dict[str, Any]:
    fields: dict[str, Any] = {"web": (WebSection, Field(default_factory=WebSection)),
                              "collectors": (CollectorsSection, Field(default_factory=CollectorsSection)),
                              "actions": (ActionsSection, Field(default_factory=ActionsSection))}
    for spec in COLLECTORS:
        known = fields.get(spec.section)
        if known is not None and known[0] is not spec.model:
            raise TypeError(f"collector {spec.id} declares section {spec.section!r} with another model")
        fields[spec.section] = (spec.model, Field(default_factory=spec.model))
    return fields


#: The whole agent configuration.
Config = create_model("Config", __base__=ClassificationConfig, __doc__="The whole agent configuration.",
                      **_sections())  # type: ignore[call-overload]


def collector_enabled(config: Any, spec: CollectorSpec) -> bool:
    """Whether ``spec``'s collector runs: ``collectors.<id>`` when set, else its own condition."""
    forced = getattr(config.collectors, spec.id)
    return forced if forced is not None else spec.enabled(getattr(config, spec.section))


def set_dotted(tree: dict[str, Any], key: str, value: object) -> None:
    """Set ``key`` (``a.b``, ``a.list[0].c``) in a nested dict, creating what is missing."""
    node: Any = tree
    parts = key.split(".")
    for i, part in enumerate(parts):
        name, _, index = part.partition("[")
        last = i == len(parts) - 1
        if index:
            items = node.setdefault(name, [])
            position = int(index.rstrip("]"))
            while len(items) <= position:
                items.append({})
            if last:
                items[position] = value
            else:
                node = items[position]
        elif last:
            node[name] = value
        else:
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child


def _is_text(annotation: Any) -> bool:
    """Whether a field annotation takes only text (``str``, optional ``str``, string literals)."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_text(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return bool(args) and all(_is_text(arg) for arg in args)
    return False


def _text_key(path: list[str]) -> bool:
    """Whether the configuration key ``path`` is a text setting (unknown keys are not)."""
    model: Any = Config
    for i, part in enumerate(path):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return False
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return False
        if i == len(path) - 1:
            return _is_text(field.annotation)
        model = field.annotation
    return False


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from ``MTAQ_…`` variables, and for each dotted key the variable it came from.

    A text setting takes the value verbatim (``/metrics #x`` stays that); any other is parsed as
    YAML, so that lists, numbers and booleans can be written.
    """
    tree: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_VARIABLE:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        value: object = raw
        if not _text_key(path):
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw
        set_dotted(tree, ".".join(path), value)
        origin[".".join(path)] = name
    return tree, origin


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | None = None, *, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None, flag_keys: Mapping[str, str] | None = None) -> Any:
    """Build the configuration from file, environment and flag ``overrides``.

    ``flag_keys`` maps the dotted keys the flags set to the flags' names, so that errors name
    the flag. Raises ``ConfigError`` listing every problem (unknown keys included) with its
    dotted key and where the value came from.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_FILE_VARIABLE)
    data: dict[str, Any] = {}
    source = "defaults"
    if path:
        source = path
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError([f"config file {path}: cannot read: {exc.strerror or exc}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"config file {path}: not valid YAML: {exc}"]) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"config file {path}: expected a mapping at the top, got {type(loaded).__name__}"])
        data = loaded or {}
    env_tree, env_origin = env_overrides(environ)
    data = _merge(_merge(data, env_tree), overrides or {})
    flags = flag_keys or {}

    def origin(key: str) -> str:
        for dotted, flag in flags.items():
            if key == dotted or key.startswith((dotted + ".", dotted + "[")):
                return f"command-line flag {flag}"
        return next((var for dotted, var in env_origin.items()
                     if key == dotted or key.startswith((dotted + ".", dotted + "["))), source)

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, origin=origin)) from None
    known = [spec.id for spec in COLLECTORS]
    unknown = [name for name in config.web.readiness_collectors or () if name not in known]
    if unknown:
        raise ConfigError([f"web.readiness_collectors: unknown collector {', '.join(unknown)}; known: "
                           f"{', '.join(known)} [from {origin('web.readiness_collectors')}]"])
    return config
