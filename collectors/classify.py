"""Bounded classification shared by every collector: lane, provider and failure reason.

Everything that becomes a label passes through here, so the label sets stay bounded by
configuration whatever the traffic: lanes come from the configured lane names, providers from
the built-in table plus config additions (else ``other``; ``local`` for hops that stay on the
host), reasons from the reason table. The tables are data (``data/providers.yaml``,
``data/reasons.yaml``); this module only compiles and applies them.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated

import yaml
from pydantic import Field, field_validator, model_validator

from collectors.lane_objectives import LaneObjective, resolve
from collectors.settings import StrictModel

OTHER = "other"
#: The provider of deliveries that stay on the host: never a provider delivery, retry or throttle target.
LOCAL = "local"
REASONS = (
    "rate_limited", "reputation", "blocklisted", "auth", "mailbox_full", "user_unknown",
    "domain_unknown", "content", "policy", "connection", "dns", "tls", "greylisted", "self", OTHER,
)
#: Delivery agents that never leave the host: local(8) and virtual(8) mailboxes, pipe(8) commands,
#: discard(8).
LOCAL_AGENTS = frozenset({"local", "virtual", "pipe", "discard"})
LABEL_VALUE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_CACHE_LIMIT = 65536
_EXACT_REPLY_LIMIT = 4096
# bytes.translate is a C table lookup; str.translate with a mapping is ten times slower.
_BLANK_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")

Patterns = Annotated[list[str], Field(default_factory=list)]


def _compile_pattern(pattern: str) -> Callable[[str], object]:
    """A ``re:`` prefix means a regular expression (searched); anything else is a whole-value glob."""
    if pattern.startswith("re:"):
        return re.compile(pattern[3:], re.IGNORECASE).search
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE).match


class LaneMatch(StrictModel):
    """Conditions of one lane rule; all given conditions must hold (each: any pattern matches)."""

    sender: Patterns
    sender_domain: Patterns
    recipient_domain: Patterns
    instance: Patterns
    service: Patterns

    @field_validator("*", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("*")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                _compile_pattern(pattern)
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
        return patterns


class LaneRule(StrictModel):
    """``lane`` applies to mail that satisfies ``match``."""

    lane: str
    match: LaneMatch


class LanesConfig(StrictModel):
    """Priority lanes: ordered rules, first match wins, else ``default``."""

    names: list[str] = Field(default_factory=lambda: ["high", "normal", "low"])
    default: str = "normal"
    rules: list[LaneRule] = Field(default_factory=list)
    objectives: dict[str, LaneObjective] = Field(
        default_factory=dict,
        description="per lane: max_messages, max_oldest_age, critical_oldest_age, max_first_attempt_wait")

    @field_validator("names")
    @classmethod
    def _valid_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not LABEL_VALUE.match(name):
                raise ValueError(f"lane name {name!r} must match {LABEL_VALUE.pattern}")
        if len(set(names)) != len(names):
            raise ValueError("lane names must be unique")
        return names

    @model_validator(mode="after")
    def _known_lanes(self) -> LanesConfig:
        if self.default not in self.names:
            raise ValueError(f"default lane {self.default!r} is not one of names {self.names}")
        for i, rule in enumerate(self.rules):
            if rule.lane not in self.names:
                raise ValueError(f"rules[{i}].lane {rule.lane!r} is not one of names {self.names}")
        for lane in self.objectives:
            if lane not in self.names:
                raise ValueError(f"objectives.{lane}: {lane!r} is not one of names {self.names}")
        self.resolved_objectives()  # a completed objective must be consistent too
        return self

    def resolved_objectives(self) -> dict[str, LaneObjective]:
        """Every lane's complete objectives (``collectors/lane_objectives.py``: built-in and fallbacks)."""
        return resolve(self.names, self.default, self.objectives)


class ProviderEntry(StrictModel):
    """A provider added or extended in config."""

    domains: list[str] = Field(default_factory=list)
    mx_suffixes: list[str] = Field(default_factory=list)


class ReasonRule(StrictModel):
    """A reason pattern added in config; user rules are tried before the built-in table."""

    reason: str
    patterns: list[str]

    @field_validator("reason")
    @classmethod
    def _known_reason(cls, reason: str) -> str:
        if reason not in REASONS:
            raise ValueError(f"reason {reason!r} is not one of {', '.join(REASONS)}")
        return reason

    @field_validator("patterns")
    @classmethod
    def _valid_regex(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from exc
        return patterns


class LocalDelivery(StrictModel):
    """Which hops stay on the host (provider ``local``) besides local agents and unix sockets."""

    loopback: bool = Field(default=True, description="hops to 127.0.0.0/8, ::1 or localhost are local")
    content_filters: list[str] = Field(
        default_factory=list,
        description="next hops of content filters (host, ip, host:port, [ip]:port); deliveries to them are local")

    @field_validator("content_filters")
    @classmethod
    def _nexthops(cls, nexthops: list[str]) -> list[str]:
        for nexthop in nexthops:
            if not nexthop or any(c.isspace() for c in nexthop):
                raise ValueError(f"content filter next hop {nexthop!r} must be host, ip, host:port or [ip]:port")
        return nexthops


class ClassificationConfig(StrictModel):
    """The ``lanes``/``providers``/``reasons``/``local_delivery`` part of the agent's configuration."""

    lanes: LanesConfig = Field(default_factory=LanesConfig)
    providers: dict[str, ProviderEntry] = Field(default_factory=dict)
    reasons: list[ReasonRule] = Field(default_factory=list)
    local_delivery: LocalDelivery = Field(default_factory=LocalDelivery)

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, providers: dict[str, ProviderEntry]) -> dict[str, ProviderEntry]:
        for name in providers:
            if not LABEL_VALUE.match(name) or name in (OTHER, LOCAL):
                raise ValueError(f"provider name {name!r} must match {LABEL_VALUE.pattern} and not be 'other' "
                                 "or 'local'")
        return providers


@cache
def _builtin(name: str) -> object:
    return yaml.safe_load(resources.files("collectors").joinpath(f"data/{name}").read_text())


@dataclass(frozen=True, slots=True)
class _CompiledLaneRule:
    lane: str
    conditions: tuple[tuple[str, tuple[Callable[[str], object], ...]], ...]

    def matches(self, fields: dict[str, str | None]) -> bool:
        for name, matchers in self.conditions:
            value = fields[name]
            if value is None or not any(m(value) for m in matchers):
                return False
        return True


_HOST_IN_TEXT = re.compile(r"(?:host|connect to) ([A-Za-z0-9.-]+)\[")


def relay_host(relay: str | None, text: str = "") -> str | None:
    """The remote host name of a delivery: from ``relay=host[ip]:port`` or the reply text."""
    if relay and relay != "none":
        host = relay.split("[", 1)[0]
        if host and host != "none":
            return host
    if text:
        found = _HOST_IN_TEXT.search(text)
        if found:
            return found.group(1)
    return None


def _relay_parts(relay: str) -> tuple[str, str, str]:
    """``host[address]:port`` -> (host, address, port); address and port may be empty."""
    host, _, rest = relay.partition("[")
    address, _, port = rest.partition("]")
    return host.lower(), address.lower(), port.lstrip(":")


def _on_host(address: str, host: str, loopback: bool) -> bool:
    """A unix-domain socket path (``private/dovecot-lmtp``), or (with ``loopback``) a loopback
    address or ``localhost``."""
    if "/" in address:
        return True
    if not loopback:
        return False
    try:
        return host == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def domain_of(address: str) -> str:
    """The lower-cased domain part of an address (empty for a local or null address)."""
    at = address.rfind("@")
    return address[at + 1:].lower().rstrip(".>") if at >= 0 else ""


class Classifier:
    """Applies the lane rules, provider table and reason table. Thread-safe for reads."""

    def __init__(self, config: ClassificationConfig | None = None) -> None:
        config = config or ClassificationConfig()
        self.lane_names: tuple[str, ...] = tuple(config.lanes.names)
        self.default_lane = config.lanes.default
        self._lane_rules = tuple(
            _CompiledLaneRule(
                rule.lane,
                tuple((name, tuple(_compile_pattern(p) for p in patterns))
                      for name, patterns in rule.match.model_dump().items() if patterns),
            )
            for rule in config.lanes.rules
        )
        self._domains: dict[str, str] = {}
        self._suffixes: dict[str, str] = {}
        builtin: dict[str, dict[str, list[str]]] = _builtin("providers.yaml")  # type: ignore[assignment]
        table = {name: dict(entry) for name, entry in builtin.items()}
        for name, entry in config.providers.items():
            merged = table.setdefault(name, {"domains": [], "mx_suffixes": []})
            merged["domains"] = [*merged.get("domains", []), *entry.domains]
            merged["mx_suffixes"] = [*merged.get("mx_suffixes", []), *entry.mx_suffixes]
        for name, entry in table.items():
            for domain in entry.get("domains", []):
                self._domains[domain.lower()] = name
            for suffix in entry.get("mx_suffixes", []):
                self._suffixes[suffix.lower().lstrip(".")] = name
        self.provider_names: tuple[str, ...] = (*sorted(table), LOCAL, OTHER)
        self._loopback_local = config.local_delivery.loopback
        self._content_filters = frozenset(hop.lower().removeprefix("[").replace("]:", ":").removesuffix("]")
                                          for hop in config.local_delivery.content_filters)
        self._local_cache: dict[tuple[str | None, str | None], bool] = {}
        # Built-in patterns are lower case and searched in lower-cased text; user patterns keep
        # IGNORECASE so they may be written either way.
        user = [(r.reason, re.compile("|".join(f"(?:{p})" for p in r.patterns), re.IGNORECASE))
                for r in config.reasons]
        builtin_rules: list[dict] = _builtin("reasons.yaml")  # type: ignore[assignment]
        self._reasons = (*user, *((r["reason"], re.compile("|".join(f"(?:{p})" for p in r["patterns"])))
                                  for r in builtin_rules))
        self._lane_cache: dict[tuple[str | None, ...], str] = {}
        self._provider_cache: dict[tuple[str, str | None], str] = {}
        self._reason_cache: dict[tuple[str | None, bytes], str] = {}
        self._reason_texts: dict[tuple[str | None, str], str] = {}

    def provider_domains(self) -> dict[str, list[str]]:
        """The recipient domains of each provider in the table (hosted domains, known only by
        their MX, are not among them)."""
        domains: dict[str, list[str]] = {}
        for domain, name in sorted(self._domains.items()):
            domains.setdefault(name, []).append(domain)
        return domains

    def lane(self, sender: str | None, recipient_domain: str | None = None,
             instance: str | None = None, service: str | None = None) -> str:
        """The lane of mail from ``sender``; conditions on unknown facts (``None``) never match."""
        key = (sender, recipient_domain, instance, service)
        lane = self._lane_cache.get(key)
        if lane is None:
            lane = self._lane_uncached(sender, recipient_domain, instance, service)
            if len(self._lane_cache) >= _CACHE_LIMIT:
                self._lane_cache.clear()
            self._lane_cache[key] = lane
        return lane

    def _lane_uncached(self, sender: str | None, recipient_domain: str | None,
                       instance: str | None, service: str | None) -> str:
        fields = {
            "sender": sender,
            "sender_domain": domain_of(sender) if sender else None,
            "recipient_domain": recipient_domain,
            "instance": instance,
            "service": service,
        }
        for rule in self._lane_rules:
            if rule.matches(fields):
                return rule.lane
        return self.default_lane

    def local_hop(self, relay: str | None, service: str | None) -> bool:
        """Whether a delivery stays on the host: a local, virtual, pipe or discard agent (last
        element of ``service``), ``relay=local``/``virtual``, a unix socket, a loopback address or
        ``localhost`` (unless ``local_delivery.loopback`` is off), or a configured content-filter
        next hop. ``relay`` is ``host[address]:port``."""
        key = (relay, service)
        local = self._local_cache.get(key)
        if local is None:
            local = self._local_hop_uncached(relay, service)
            if len(self._local_cache) >= _CACHE_LIMIT:
                self._local_cache.clear()
            self._local_cache[key] = local
        return local

    def _local_hop_uncached(self, relay: str | None, service: str | None) -> bool:
        if service and service.rpartition("/")[2] in LOCAL_AGENTS:
            return True
        if not relay or relay == "none":
            return False
        host, address, port = _relay_parts(relay)
        if not address:  # relay=local, relay=virtual, or a pipe's transport name
            return host in ("local", "virtual")
        if _on_host(address, host, self._loopback_local):
            return True
        hops = self._content_filters
        return bool(hops) and any(
            name in hops for name in (host, address, f"{host}:{port}", f"{address}:{port}"))

    def provider(self, domain: str | None, host: str | None = None) -> str:
        """The provider of a recipient ``domain`` or, failing that, of the remote ``host``."""
        key = (domain or "", host)
        name = self._provider_cache.get(key)
        if name is None:
            domain = domain.lower() if domain else domain
            name = self._match_domain(domain, self._domains) if domain else None
            if name is None and host:
                name = self._match_domain(host.lower().rstrip("."), self._suffixes, parents_only=True)
            if name is None and domain:
                name = self._match_domain(domain, self._suffixes, parents_only=False)
            name = name or OTHER
            if len(self._provider_cache) >= _CACHE_LIMIT:
                self._provider_cache.clear()
            self._provider_cache[key] = name
        return name

    @staticmethod
    def _match_domain(name: str, table: dict[str, str], parents_only: bool = False) -> str | None:
        if not parents_only and name in table:
            return table[name]
        dot = name.find(".")
        while dot >= 0:
            name = name[dot + 1:]
            if name in table:
                return table[name]
            dot = name.find(".")
        return None

    def reason(self, dsn: str | None, text: str) -> str:
        """The reason class of a failed or deferred delivery, from its DSN and reply text.

        Answers are cached by the DSN and the text with its digits blanked: replies repeat
        except for ids, timestamps and addresses (Gmail and Microsoft put a fresh id in every
        reply), and the table costs tens of microseconds a reply. Codes that decide a class
        come with replies that differ in more than their digits (``[TSS04]`` "temporarily
        deferred" / ``[TSS09]`` "permanently deferred", ``(S3150)``/``(S775)``) or with their
        own DSN, which stays in the key as it is. A smaller cache of exact replies comes first:
        most repeat whole (connection timeouts, throttling notices), and their key needs no copy;
        it is small because replies with fresh ids never hit it and each entry holds a reply.
        """
        exact = (dsn, text)
        name = self._reason_texts.get(exact)  # a reply seen before exactly, without blanking its digits
        if name is not None:
            return name
        key = (dsn, text.encode("utf-8", "surrogateescape").translate(_BLANK_DIGITS))
        name = self._reason_cache.get(key)
        if name is None:
            name = self._reason_uncached(dsn, text)
            if len(self._reason_cache) >= _CACHE_LIMIT:
                self._reason_cache.clear()
            self._reason_cache[key] = name
        if len(self._reason_texts) >= _EXACT_REPLY_LIMIT:
            self._reason_texts.clear()
        self._reason_texts[exact] = name
        return name

    def _reason_uncached(self, dsn: str | None, text: str) -> str:
        subject = (f"{dsn} {text}" if dsn else text).lower()
        for name, pattern in self._reasons:
            if pattern.search(subject):
                return name
        return OTHER

