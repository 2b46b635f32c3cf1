"""DNS blocklist catalogue and the ``dnsbl:`` config section.

The catalogue is data (``collectors/data/dnsbl_lists.yaml``): per list its zone, the target kinds
it answers for, what each answer code means and weighs, which answers are refusals rather than
listings, where to delist, whether it needs an access key, and its RFC 5782 test points. This
module validates that data (and the user's ``lists.add`` entries, which have the same shape) with
pydantic, and turns the chosen entries into frozen :class:`BlockList` objects for the checker.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    IPvAnyAddress,
    SecretStr,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collectors.settings import Duration, StrictModel, parse_duration, parse_host_port

log = logging.getLogger("mtaq.dnsbl")

CATALOGUE_FILE = Path(__file__).parent / "data" / "dnsbl_lists.yaml"

Kind = Literal["ip4", "ip6", "domain"]

# RFC 5782 §5 test points, used when a user-defined list names none.
RFC5782_TEST_POINTS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {"ip": (("127.0.0.2",), ("127.0.0.1",)), "domain": (("test",), ("invalid",))}
)

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_KEY = re.compile(r"[A-Za-z0-9-]{1,63}")
_LOOPBACK = IPv4Network("127.0.0.0/8")


def normalize_domain(value: str) -> str:
    """Return ``value`` as a lower-case ASCII (IDNA) domain name without the root dot.

    Raises ``ValueError`` when it is not a syntactically valid domain name.
    """
    name = value.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{value!r} is not a valid domain name: {exc}") from None
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{value!r} is not a valid domain name")
    return name


def nameserver_endpoint(value: str) -> tuple[str, int]:
    """``"IP[:port]"`` (IPv6 in brackets with a port) as (address, port), port 53 when absent.

    Host names are refused: the checker must know exactly which resolver answers, and dnspython
    wants addresses.
    """
    return parse_host_port(value, default_port=53, ip_only=True)


def _canonical_nameserver(value: str) -> str:
    host, port = nameserver_endpoint(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_key(secret: SecretStr) -> SecretStr:
    # The key becomes a DNS label of the queried zone; never echo it in the message.
    if not _KEY.fullmatch(secret.get_secret_value()):
        raise ValueError("an access key must be one DNS label: 1-63 letters, digits or '-'")
    return secret


def _check_bit(bit: int) -> int:
    if bit & (bit - 1):
        raise ValueError(f"{bit} is not a single bit (1, 2, 4, ... 128)")
    return bit


DomainName = Annotated[str, AfterValidator(normalize_domain)]
Nameserver = Annotated[str, AfterValidator(_canonical_nameserver)]
AccessKey = Annotated[SecretStr, AfterValidator(_check_key)]
KeyName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
Bit = Annotated[int, Field(ge=1, le=128), AfterValidator(_check_bit)]
Weight = Annotated[int, Field(ge=0, le=100)]


class CodeSpec(StrictModel):
    """Meaning and optional weight of one listing code or bit."""

    meaning: str = Field(min_length=1)
    weight: Weight | None = None


class TestPointsSpec(StrictModel):
    """RFC 5782 canaries: ``listed`` names must be listed, ``not_listed`` names NXDOMAIN."""

    listed: tuple[str, ...] = ()
    not_listed: tuple[str, ...] = ()


class BlockListSpec(StrictModel):
    """One catalogue entry or ``dnsbl.lists.add`` item (the YAML file's header documents it)."""

    zone: DomainName
    name: str = ""
    kinds: tuple[Kind, ...] = Field(min_length=1)
    weight: Weight
    codes: dict[IPv4Address, CodeSpec] = {}
    bitmask: dict[Bit, CodeSpec] = {}
    errors: dict[IPv4Network, str] = {}
    undocumented: Literal["listed", "unknown"] = "listed"
    delist_url: str = ""
    key: KeyName | None = None
    keyed_zone: str | None = None
    key_required: bool = False
    test_points: TestPointsSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        is_domain = "domain" in self.kinds
        if is_domain and len(self.kinds) > 1:
            raise ValueError("kinds: a list answers either for IPs (ip4, ip6) or for domains, not both")
        outside = [str(a) for a in (*self.codes, *(n.network_address for n in self.errors))
                   if a not in _LOOPBACK]
        if outside:
            raise ValueError(f"codes/errors must be in 127.0.0.0/8, got {', '.join(outside)}")
        if (self.key is None) != (self.keyed_zone is None):
            raise ValueError("key and keyed_zone go together")
        if self.key_required and self.key is None:
            raise ValueError("key_required needs key and keyed_zone")
        if self.keyed_zone is not None:
            if "{key}" not in self.keyed_zone:
                raise ValueError("keyed_zone must contain {key}")
            normalize_domain(self.keyed_zone.replace("{key}", "key"))
        if self.delist_url:
            if not self.delist_url.startswith(("https://", "http://")):
                raise ValueError("delist_url must be an http(s) URL")
            if "{" in self.delist_url.replace("{target}", ""):
                raise ValueError("delist_url may only contain the placeholder {target}")
        for point in (*self.listed_test_points, *self.not_listed_test_points):
            _check_test_point(point, is_domain)
        return self

    @property
    def listed_test_points(self) -> tuple[str, ...]:
        """Test points that must be listed (RFC 5782 defaults when none are given)."""
        if self.test_points is not None:
            return self.test_points.listed
        return RFC5782_TEST_POINTS["domain" if "domain" in self.kinds else "ip"][0]

    @property
    def not_listed_test_points(self) -> tuple[str, ...]:
        """Test points that must answer NXDOMAIN (RFC 5782 defaults when none are given)."""
        if self.test_points is not None:
            return self.test_points.not_listed
        return RFC5782_TEST_POINTS["domain" if "domain" in self.kinds else "ip"][1]

    def build(self, key: str | None) -> BlockList:
        """Freeze this entry into a :class:`BlockList`, querying the keyed zone when ``key`` is set."""
        query_zone = self.zone
        if key is not None and self.keyed_zone is not None:
            query_zone = self.keyed_zone.replace("{key}", key)

        def code(spec: CodeSpec) -> Code:
            return Code(spec.meaning, self.weight if spec.weight is None else spec.weight)

        return BlockList(
            zone=self.zone,
            name=self.name or self.zone,
            kinds=frozenset(self.kinds),
            weight=self.weight,
            codes=MappingProxyType({a: code(s) for a, s in self.codes.items()}),
            bitmask=MappingProxyType({b: code(s) for b, s in sorted(self.bitmask.items())}),
            # Most specific first, so 127.255.255.254 wins over 127.255.255.0/24.
            errors=tuple(sorted(self.errors.items(), key=lambda item: -item[0].prefixlen)),
            undocumented_listed=self.undocumented == "listed",
            delist_url=self.delist_url,
            listed_test_points=self.listed_test_points,
            not_listed_test_points=self.not_listed_test_points,
            query_zone=query_zone,
        )


def _check_test_point(point: str, is_domain: bool) -> None:
    if is_domain:
        normalize_domain(point)
        return
    try:
        ipaddress.ip_address(point)
    except ValueError:
        raise ValueError(f"test point {point!r} of an IP list must be an IP address") from None


@dataclass(frozen=True)
class Code:
    """What a listing code (or bit) means and how much it weighs (0-100)."""

    meaning: str
    weight: int


@dataclass(frozen=True)
class BlockList:
    """A blocklist ready to query. ``zone`` is its public name and metric label; ``query_zone``
    is what is actually queried and may embed an access key, so it stays out of ``repr``."""

    zone: str
    name: str
    kinds: frozenset[str]
    weight: int
    codes: Mapping[IPv4Address, Code]
    bitmask: Mapping[int, Code]
    errors: tuple[tuple[IPv4Network, str], ...]
    undocumented_listed: bool
    delist_url: str
    listed_test_points: tuple[str, ...]
    not_listed_test_points: tuple[str, ...]
    query_zone: str = field(repr=False)

    def refusal(self, address: IPv4Address) -> str | None:
        """The documented reason when ``address`` is a refusal/error code of this list."""
        return next((reason for net, reason in self.errors if address in net), None)

    def delist_url_for(self, target: str) -> str:
        """The delisting / lookup page for ``target``."""
        return self.delist_url.replace("{target}", target)


@functools.cache
def default_specs() -> tuple[BlockListSpec, ...]:
    """The packaged catalogue, validated (read once per process)."""
    raw = yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8"))
    specs = TypeAdapter(tuple[BlockListSpec, ...]).validate_python(raw)
    zones = [spec.zone for spec in specs]
    if len(set(zones)) != len(zones):
        raise ValueError(f"{CATALOGUE_FILE}: duplicate zones")
    return specs


class DnsblTargets(StrictModel):
    """What to check: sending IPs (IPv4 and IPv6) and sending identity domains."""

    ips: tuple[IPvAnyAddress, ...] = ()
    domains: tuple[DomainName, ...] = ()


class DnsblLists(StrictModel):
    """Which lists to use: the catalogue plus ``add``, minus ``disable``, or only ``enable_only``.

    An ``add`` entry with a catalogue zone replaces that catalogue entry.
    """

    # Declared first: the zone checks of the other fields see the added zones.
    add: tuple[BlockListSpec, ...] = ()
    disable: tuple[DomainName, ...] = ()
    enable_only: tuple[DomainName, ...] | None = None

    @field_validator("add")
    @classmethod
    def _unique(cls, add: tuple[BlockListSpec, ...]) -> tuple[BlockListSpec, ...]:
        zones = [spec.zone for spec in add]
        twice = sorted({zone for zone in zones if zones.count(zone) > 1})
        if twice:
            raise ValueError(f"zone added more than once: {', '.join(twice)}")
        return add

    @field_validator("disable", "enable_only")
    @classmethod
    def _known(cls, zones: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        known = {spec.zone for spec in (*default_specs(), *info.data.get("add", ()))}
        unknown = [zone for zone in zones or () if zone not in known]
        if unknown:
            raise ValueError(f"unknown zone {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return zones

    def specs(self) -> dict[str, BlockListSpec]:
        """Every list this config knows, by zone: the catalogue with ``add`` applied."""
        specs = {spec.zone: spec for spec in default_specs()}
        specs.update((spec.zone, spec) for spec in self.add)
        return specs


class DnsblSettings(StrictModel):
    """The ``dnsbl:`` config section."""

    enabled: bool = False
    targets: DnsblTargets = Field(default=DnsblTargets(), validate_default=True)
    nameservers: tuple[Nameserver, ...] = Field(
        default=(), description="host[:port] of recursive resolvers; empty = /etc/resolv.conf"
    )
    timeout: Duration = Field(default=2.0, le=60, description="seconds per DNS query")
    deadline: Duration = Field(default=30.0, le=3600, description="seconds for a whole run")
    concurrency: int = Field(default=32, ge=1, le=256, description="DNS queries in flight at most")
    interval: Duration = Field(default=10800, ge=3600, le=86400, description="seconds between runs")
    min_recheck_interval: Duration = Field(
        default=600, ge=1, le=86400, description="on-demand runs (POST /api/v1/blocklists/check) at most this often")
    jitter: Annotated[float, BeforeValidator(parse_duration)] = Field(
        default=300, ge=0, le=3600, description="random delay added to a run")
    lists: DnsblLists = DnsblLists()
    keys: dict[KeyName, AccessKey] = Field(
        default={}, validate_default=True,
        description="access keys by name (spamhaus_dqs, abusix) for keyed zones",
    )

    @model_validator(mode="before")
    @classmethod
    def _hide_keys(cls, data: Any) -> Any:
        # Wrapped before any check, so that no validation error can show an access key.
        if isinstance(data, Mapping) and isinstance(data.get("keys"), Mapping):
            hidden = {name: SecretStr(v) if isinstance(v, str) else v for name, v in data["keys"].items()}
            data = {**data, "keys": hidden}
        return data

    @field_validator("targets")
    @classmethod
    def _something_to_check(cls, targets: DnsblTargets, info: ValidationInfo) -> DnsblTargets:
        if info.data.get("enabled") and not (targets.ips or targets.domains):
            raise ValueError("dnsbl is enabled but has no ips or domains to check")
        return targets

    @field_validator("keys")
    @classmethod
    def _keys_match_lists(cls, keys: dict[str, SecretStr], info: ValidationInfo) -> dict[str, SecretStr]:
        lists = info.data.get("lists")
        if lists is None:  # lists failed validation: its errors say enough
            return keys
        specs = lists.specs()
        key_names = sorted({spec.key for spec in specs.values() if spec.key})
        for name in keys:
            if name not in key_names:
                raise ValueError(f"no list uses the key {name!r}; known keys: {', '.join(key_names)}")
        for zone in lists.enable_only or ():
            spec = specs[zone]
            if spec.key_required and spec.key not in keys:
                raise ValueError(f"lists.enable_only names {zone}, which needs keys.{spec.key}")
        return keys

    def target_names(self) -> tuple[str, ...]:
        """Configured targets as label values: IPs first, then domains, duplicates dropped."""
        return tuple(dict.fromkeys([*(str(ip) for ip in self.targets.ips), *self.targets.domains]))

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """Configured nameservers as (IP address, port) pairs."""
        return tuple(nameserver_endpoint(ns) for ns in self.nameservers)


def load_catalogue(settings: DnsblSettings) -> list[BlockList]:
    """The lists a run checks, in catalogue order then ``lists.add`` order.

    ``lists.enable_only`` (when set) and ``lists.disable`` filter them; a keyed list queries its
    keyed zone when its key is configured, and is skipped when it requires a key that is missing.
    """
    keys = {name: secret.get_secret_value() for name, secret in settings.keys.items()}
    only = settings.lists.enable_only
    chosen = []
    for zone, spec in settings.lists.specs().items():
        if (only is not None and zone not in only) or zone in settings.lists.disable:
            continue
        key = keys.get(spec.key) if spec.key else None
        if spec.key_required and key is None:
            log.debug("dnsbl: %s skipped: needs keys.%s", zone, spec.key)
            continue
        chosen.append(spec.build(key))
    return chosen
