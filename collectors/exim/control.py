"""The files an Exim configuration reads to throttle or hold a provider: the only code that writes them.

Exim cannot be told anything at run time, but it looks things up in files on every delivery
(``lsearch`` lookups are cached per process only, and each delivery is a new process), so a
change applies to the next delivery without a restart or reload. In an instance's
``throttle_dir``:

- ``providers``: ``<domain>: <provider>`` for every domain of the provider table, so that the
  configuration can name the provider of ``$domain``;
- ``throttle``: ``<provider>: max_parallel=<n> serialize_hosts=yes``: ``serialize_hosts`` of the
  remote ``smtp`` transports, and ``max_parallel`` of the provider's own transport, which the
  routers choose while the provider has one;
- ``held_domains``: ``<domain>: <provider>`` read by ``hold_domains``: mail to them stays queued
  ("domain is held", a deferral Exim inflicts on itself) and leaves at the next queue run after
  the line is gone.

The configuration that reads them is ``config_snippet`` (``mtaq-exporter actions setup-exim`` prints
it; the lab runs Exim with it). Every file is rewritten
atomically (temporary file, rename) so Exim never reads half of one, lines the agent did not
write are kept byte for byte, and keys and values are checked before they are written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from collectors.command import CommandError, run
from collectors.exim.instance import EximInstance
from collectors.files import atomic_write

PROVIDERS, THROTTLE, HELD = "providers", "throttle", "held_domains"
#: What a key (a domain, a provider) and a value may look like: nothing lsearch would read otherwise.
_KEY = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,251}[a-z0-9])?$")
_VALUE = re.compile(r"^[a-z0-9_=. -]{0,200}$")


#: Exim expands a transport's ``max_parallel`` before it sets ``$domain`` (``deliver.c`` checks the
#: limit, then sets the address's variables), so a per-provider limit needs a transport per
#: provider: ``mtaq_<provider>``, chosen by the remote routers only while that provider has a
#: ``max_parallel`` in the throttle file. ``serialize_hosts`` is a host list, matched with
#: ``$domain`` set: it works in every transport. A missing file means nothing is throttled or
#: held (a lookup in a missing file would defer every delivery).
TRANSPORT_PREFIX = "mtaq_"
_MAIN = (
    "MTAQ_DIR = {directory}",
    "MTAQ_PROVIDER = ${if exists{MTAQ_DIR/providers}{${lookup{$domain}lsearch{MTAQ_DIR/providers}}}}",
    "MTAQ_THROTTLE = ${if exists{MTAQ_DIR/throttle}{${lookup{MTAQ_PROVIDER}lsearch{MTAQ_DIR/throttle}}}}",
    "hold_domains = ${if exists{MTAQ_DIR/held_domains}{lsearch;MTAQ_DIR/held_domains}}",
)
_ROUTER = "transport = ${if match{MTAQ_THROTTLE}{max_parallel=}{mtaq_MTAQ_PROVIDER}{{transport}}}"
_SERIALIZE = "serialize_hosts = ${if match{MTAQ_THROTTLE}{serialize_hosts=yes}{*}{}}"
_MAX_PARALLEL = ("max_parallel = ${extract{max_parallel}"
                 "{${if exists{MTAQ_DIR/throttle}{${lookup{{provider}}lsearch{MTAQ_DIR/throttle}}}}}{$value}{0}}")


@dataclass(frozen=True)
class EximSnippet:
    """The Exim configuration that reads a throttle directory, in the pieces it goes into."""

    main: list[str]  # for the main section
    router: str  # the transport line of each router that sends mail to the internet
    transport: list[str]  # for the remote transport itself
    provider_transports: list[str]  # one transport block per provider
    remote: str  # the remote transport's name

    def text(self) -> str:
        """The whole snippet, commented, as ``mtaq-exporter actions setup-exim`` prints it."""
        return "\n".join([
            "# main section (before \"begin acl\"); merge hold_domains with a setting of your own",
            *self.main, "",
            f"# each router that sends mail to the internet, instead of \"transport = {self.remote}\"",
            f"  {self.router}", "",
            f"# in the {self.remote} transport",
            *(f"  {line}" for line in self.transport), "",
            f"# one transport per provider: a copy of {self.remote} (every option of it) plus these lines",
            *self.provider_transports])


def config_snippet(directory: str, providers: list[str], transport: str = "remote_smtp") -> EximSnippet:
    """The configuration that reads ``directory``, for the remote transport ``transport`` and the
    throttleable ``providers`` (README "Exim"; the lab runs Exim with it)."""
    return EximSnippet(
        main=[line.replace("{directory}", directory) for line in _MAIN],
        router=_ROUTER.replace("{transport}", transport),
        transport=[_SERIALIZE],
        provider_transports=[f"{TRANSPORT_PREFIX}{provider}:\n  driver = smtp\n"
                             f"  {_MAX_PARALLEL.replace('{provider}', provider)}\n  {_SERIALIZE}\n"
                             for provider in providers],
        remote=transport)


def transports(instance: EximInstance) -> set[str]:
    """The transports the instance's Exim configuration defines (``exim -bP transport_list``)."""
    return set(run(instance.command("-bP", "transport_list")).split())


def _key_of(line: str) -> str | None:
    """The key of an lsearch line (``key: value`` or ``key value``); None for comments and blanks."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    return re.split(r"[:\s]", text, maxsplit=1)[0]


class EximThrottleFiles:
    """The throttle directory of one Exim instance."""

    def __init__(self, instance: EximInstance) -> None:
        if not instance.throttle_dir:
            raise ValueError(f"exim instance {instance.name} has no throttle_dir")
        self.instance = instance
        self.name = instance.name
        self.directory = instance.throttle_dir

    def require_transport(self, provider: str) -> None:
        """Refuse (``RuntimeError``) unless Exim defines the provider's own transport: routers
        switch to it while the provider has a ``max_parallel``, and a missing one would defer its mail."""
        name = f"{TRANSPORT_PREFIX}{provider}"
        try:
            defined = transports(self.instance)
        except CommandError as exc:
            raise RuntimeError(f"exim instance {self.name}: cannot confirm that transport {name} exists: {exc}") \
                from None
        if name not in defined:
            raise RuntimeError(f"exim instance {self.name} has no transport {name}: add it as "
                               "`mtaq-exporter actions setup-exim` shows")

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _lines(self, name: str) -> list[str]:
        try:
            with open(self._path(name), encoding="utf-8") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def values(self, name: str) -> dict[str, str]:
        """Key -> value of every entry in file ``name``."""
        out = {}
        for line in self._lines(name):
            key = _key_of(line)
            if key is not None:
                rest = line.strip()[len(key):]
                out[key] = rest.removeprefix(":").strip()
        return out

    def get(self, name: str, key: str) -> str | None:
        """The value of ``key`` in file ``name`` (None when absent)."""
        return self.values(name).get(key)

    def set_many(self, name: str, values: Mapping[str, str | None]) -> None:
        """Set each key's value (None removes its line) in one atomic rewrite of file ``name``;
        every other line stays as it was."""
        for key, value in values.items():
            if not _KEY.match(key) or (value is not None and not _VALUE.match(value)):
                raise ValueError(f"refusing to write {key!r}: {value!r} to {self._path(name)}")
        pending = dict(values)
        lines = []
        for line in self._lines(name):
            key = _key_of(line)
            if key in pending:
                value = pending.pop(key)
                if value is not None:
                    lines.append(f"{key}: {value}")
                continue
            lines.append(line)
        lines += [f"{key}: {value}" for key, value in pending.items() if value is not None]
        text = "".join(f"{line}\n" for line in lines)
        if os.path.exists(self._path(name)) or text:
            atomic_write(self._path(name), text.encode())
            os.chmod(self._path(name), 0o644)  # the Exim user reads it

    def write_providers(self, domains: Mapping[str, list[str]]) -> None:
        """``providers``: each domain of the provider table with its provider (unchanged lines kept)."""
        wanted = {domain: provider for provider, names in domains.items() for domain in names if _KEY.match(domain)}
        current = self.values(PROVIDERS)
        changed = {domain: provider for domain, provider in wanted.items() if current.get(domain) != provider}
        if changed or not os.path.exists(self._path(PROVIDERS)):
            self.set_many(PROVIDERS, changed)
