"""Configuration: one YAML file, ``MTAQ_…`` environment variables and flags, validated at start.

Precedence: command-line flags over environment variables over the file over defaults. Every
key can come from the environment as ``MTAQ_<SECTION>__<KEY>`` (double underscore between
levels, values parsed as YAML so lists work), e.g. ``MTAQ_WEB__LISTEN_ADDRESS=:9999`` or
``MTAQ_LOG__PATHS='[/var/log/mail.log]'``. All problems are collected and reported together,
each with its dotted key and where the value came from; the CLI then exits with status 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from collectors.classify import ClassificationConfig
from collectors.delivery_accounting import DEFAULT_MAX_MESSAGES
from collectors.dnsbl_catalogue import DnsblSettings
from collectors.durations import Duration

ENV_PREFIX = "MTAQ_"
class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one line per bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _listen_address(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise ValueError(f"expected [host]:port, got {value!r}")
    return value


class WebConfig(_Section):
    """HTTP server: where to listen, the metrics path, optional TLS/basic auth."""

    listen_address: Annotated[str, BeforeValidator(lambda v: _listen_address(str(v)))] = ":10154"
    telemetry_path: str = "/metrics"
    config_file: str | None = None

    @field_validator("telemetry_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/", "/healthz", "/readyz"):
            raise ValueError(f"expected a path like /metrics that no other page uses, got {value!r}")
        return value


class PostfixInstanceConfig(_Section):
    """One Postfix instance; ``showq_path`` defaults to ``<queue_directory>/public/showq``."""

    name: str = "postfix"
    config_dir: str | None = None
    showq_path: str | None = None
    postqueue: str = "postqueue"


class PostfixConfig(_Section):
    """Postfix queue reading. ``enabled: null`` means: on when a local Postfix is found."""

    enabled: bool | None = None
    instances: list[PostfixInstanceConfig] = Field(default_factory=lambda: [PostfixInstanceConfig()])
    queue_scan_interval: Duration = 30.0

    @field_validator("instances")
    @classmethod
    def _unique(cls, instances: list[PostfixInstanceConfig]) -> list[PostfixInstanceConfig]:
        names = [i.name for i in instances]
        if len(set(names)) != len(names):
            raise ValueError(f"instance names must be unique, got {names}")
        if not instances:
            raise ValueError("at least one instance is needed (or set enabled: false)")
        return instances


class LogConfig(_Section):
    """Mail log tailing: files (or ``-`` for stdin), where to begin, the checkpoint file."""

    paths: list[str] = Field(default_factory=list)
    start_from: Literal["start", "end"] = Field(default="end", alias="from")
    checkpoint_file: str | None = None
    poll_interval: Duration = 0.25
    max_tracked_messages: int = Field(default=DEFAULT_MAX_MESSAGES, ge=1000)


class Config(ClassificationConfig):
    """The whole agent configuration (``lanes``, ``providers``, ``reasons`` come from the base)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    web: WebConfig = Field(default_factory=WebConfig)
    postfix: PostfixConfig = Field(default_factory=PostfixConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    dnsbl: DnsblSettings = Field(default_factory=DnsblSettings)


def _set_path(tree: dict[str, Any], path: list[str], value: object) -> None:
    for key in path[:-1]:
        node = tree.get(key)
        if not isinstance(node, dict):
            node = tree[key] = {}
        tree = node
    tree[path[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings from ``MTAQ_…`` variables, and for each dotted key the variable it came from."""
    tree: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == "MTAQ_CONFIG_FILE":
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, path, value)
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


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_config(path: str | None = None, *, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the configuration from file, environment and flag ``overrides``.

    Raises ``ConfigError`` listing every problem (unknown keys included) with its dotted key.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get("MTAQ_CONFIG_FILE")
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
    flag_keys = {".".join(k) for k in _flatten(overrides or {})}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = _dotted(error["loc"])
            if key in flag_keys:
                where = "command-line flag"
            else:
                where = next((var for dotted, var in env_origin.items()
                              if key == dotted or key.startswith(dotted + ".") or key.startswith(dotted + "[")),
                             source)
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            shown = repr(error.get("input"))
            found = "" if error["type"] in ("missing", "extra_forbidden") or shown in message else f" (got {shown})"
            problems.append(f"{key}: {message}{found} [from {where}]")
        raise ConfigError(problems) from None


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            keys += _flatten(value, (*prefix, key))
        else:
            keys.append((*prefix, key))
    return keys
