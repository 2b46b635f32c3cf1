"""What an action does: slow or pause delivery to a provider in Postfix, or tell another system.

Each executor applies an action and later restores exactly what it changed. ``apply`` returns a
record of the changes (kept in the state file), which ``restore`` takes back; applying again
with that record (after a restart) sets the same values without losing what was there before.

- ``postfix_throttle``: ``<transport>_destination_rate_delay`` / ``_concurrency_limit`` /
  ``_recipient_limit`` of the provider's own transport (``mtaq-<provider>``, made once by
  ``mtaq-exporter actions setup-postfix``) with ``postconf -e``; restore removes exactly what it
  set (``postconf -X``), or puts back the value that was there, so that ``postconf -n`` ends
  byte-identical to before.
- ``postfix_pause``: the transport into ``defer_transports``; restore takes it out and asks for
  a queue run (``postqueue -f``).
- ``exim_throttle``: the provider's line in each Exim instance's ``throttle`` file
  (``max_parallel``, read by the provider's own transport ``mtaq_<provider>``, which must exist;
  ``serialize_hosts``); restore puts back the line that was there, or none.
- ``exim_pause``: the provider's domains into each instance's ``held_domains`` file; restore takes
  out exactly the lines it added (held mail leaves at the next queue run). Exim reads both files
  on each delivery (``collectors/exim/control.py``): no reload, no restart.
- ``http``: a JSON body built from the alert's labels, POSTed on apply and on restore.

Reloads are coalesced: at most one ``postfix reload`` per instance every ``RELOAD_INTERVAL``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import httpx

from collectors.exim.control import HELD, THROTTLE, EximThrottleFiles
from collectors.postfix.control import PostfixControl

log = logging.getLogger("mtaq.actions")

#: Seconds between two reloads of one Postfix instance at most.
RELOAD_INTERVAL = 10.0
#: Prefix of the per-provider transports ``setup-postfix`` creates.
TRANSPORT_PREFIX = "mtaq-"

Changes = dict[str, Any]


def transport_of(provider: str) -> str:
    """The provider's own Postfix transport."""
    return f"{TRANSPORT_PREFIX}{provider}"


class Executor(Protocol):
    """Applies and restores one kind of action. ``remote``: it calls another system, so it runs on
    a worker thread of its own (a slow or dead endpoint never delays a change to the MTA)."""

    remote: bool

    def apply(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str],
              changes: Changes | None) -> Changes:
        """Apply; ``changes`` (from an earlier apply) says what was there before."""
        ...

    def restore(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str],
                changes: Changes) -> None:
        """Undo what ``apply`` recorded in ``changes``."""
        ...


class Reloader:
    """``postfix reload`` for each changed instance, at most once per ``RELOAD_INTERVAL``."""

    def __init__(self, interval: float = RELOAD_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._pending: dict[str, PostfixControl] = {}
        self._lock = threading.Lock()

    def request(self, control: PostfixControl) -> None:
        """Reload now if allowed, else at the next ``due()`` after the interval."""
        key = control.instance.config_dir or ""
        with self._lock:
            self._pending[key] = control
        self.due()

    def due(self) -> None:
        """Run the reloads whose interval has passed (called by the actions tick)."""
        now = time.monotonic()
        with self._lock:
            ready = [(k, c) for k, c in self._pending.items() if now - self._last.get(k, -1e9) >= self._interval]
            for key, _ in ready:
                del self._pending[key]
                self._last[key] = now
        for key, control in ready:
            if control.running():
                control.reload()
            else:
                log.info("postfix %s is not running: its next start reads the change", key or "(default)")


class PostfixThrottle:
    """Per-provider destination limits in every instance of the agent."""

    remote = False

    def __init__(self, controls: Sequence[PostfixControl], reloader: Reloader) -> None:
        self.controls = controls
        self.reloader = reloader

    def _names(self, control: PostfixControl, provider: str, params: Mapping[str, Any]) -> dict[str, str]:
        transport = transport_of(provider)
        if control.service(f"{transport}/unix") is None:
            raise RuntimeError(f"Postfix has no transport {transport}: run `mtaq-exporter actions setup-postfix "
                               f"--apply` once (instance {control.instance.name})")
        return {f"{transport}_{key}": str(value) for key, value in params.items()}

    def apply(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str],
              changes: Changes | None) -> Changes:
        """Set the limits, remembering what each parameter was."""
        done: Changes = dict(changes or {})
        try:
            for control in self.controls:
                wanted = self._names(control, provider, params)
                key = control.instance.name
                if key not in done:
                    done[key] = control.explicit(list(wanted))
                control.set(wanted)
                self.reloader.request(control)
        except Exception:
            self.restore(provider, params, labels, done)  # never leave one instance throttled alone
            raise
        return done

    def restore(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str], changes: Changes) -> None:
        """Put every parameter back as it was: removed, or its earlier value."""
        for control in self.controls:
            previous: Mapping[str, str | None] = changes.get(control.instance.name, {})
            control.remove([name for name, value in previous.items() if value is None])
            control.set({name: value for name, value in previous.items() if value is not None})
            self.reloader.request(control)


class PostfixPause:
    """The provider's transport in ``defer_transports``: mail to it waits in the queue."""

    remote = False

    def __init__(self, controls: Sequence[PostfixControl], reloader: Reloader) -> None:
        self.controls = controls
        self.reloader = reloader

    def apply(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str],
              changes: Changes | None) -> Changes:
        """Add the transport to ``defer_transports``, remembering the old value."""
        done: Changes = dict(changes or {})
        transport = transport_of(provider)
        try:
            for control in self.controls:
                key = control.instance.name
                if key not in done:
                    done[key] = control.explicit(["defer_transports"])["defer_transports"]
                current = (done[key] or "").replace(",", " ").split()
                if transport not in current:
                    control.set({"defer_transports": " ".join([*current, transport])})
                    self.reloader.request(control)
        except Exception:
            self.restore(provider, params, labels, done)
            raise
        return done

    def restore(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str], changes: Changes) -> None:
        """Put ``defer_transports`` back and let the held-back mail go."""
        for control in self.controls:
            if control.instance.name not in changes:
                continue
            previous = changes[control.instance.name]
            if previous is None:
                control.remove(["defer_transports"])
            else:
                control.set({"defer_transports": previous})
            self.reloader.request(control)
            control.flush()


def exim_throttle_value(params: Mapping[str, Any]) -> str:
    """The ``throttle`` file's value for validated ``exim_throttle`` params."""
    parts = [f"max_parallel={params['max_parallel']}"] if "max_parallel" in params else []
    return " ".join([*parts, *(["serialize_hosts=yes"] if params.get("serialize_hosts") else [])])


class _EximFileAction:
    """Lines of one throttle-directory file in every Exim instance with a ``throttle_dir``: apply
    records what each key's line was (or that there was none) and writes its own; restore puts
    back exactly what was recorded."""

    remote = False

    file = ""

    def __init__(self, files: Sequence[EximThrottleFiles], provider_domains: Mapping[str, list[str]]) -> None:
        self.files = files
        self.provider_domains = provider_domains

    def lines(self, provider: str, params: Mapping[str, Any]) -> dict[str, str]:
        """Key -> value of the lines this action writes."""
        raise NotImplementedError

    def prepare(self, instance: EximThrottleFiles, provider: str, params: Mapping[str, Any]) -> None:
        """What must hold in ``instance`` before its lines are written (default: nothing)."""

    def apply(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str],
              changes: Changes | None) -> Changes:
        """Write the lines, remembering the ones that were there."""
        lines = self.lines(provider, params)
        done: Changes = dict(changes or {})
        try:
            for instance in self.files:
                self.prepare(instance, provider, params)
                if instance.name not in done:
                    present = instance.values(self.file)
                    done[instance.name] = {key: present.get(key) for key in lines}
                instance.set_many(self.file, lines)
        except Exception:
            self.restore(provider, params, labels, done)  # never leave one instance throttled alone
            raise
        return done

    def restore(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str], changes: Changes) -> None:
        """Put every line back as it was (most: none)."""
        for instance in self.files:
            if instance.name in changes:
                instance.set_many(self.file, changes[instance.name])


class EximThrottle(_EximFileAction):
    """The provider's line in ``throttle``: ``max_parallel`` (its own transport must exist) and
    ``serialize_hosts``."""

    file = THROTTLE

    def lines(self, provider: str, params: Mapping[str, Any]) -> dict[str, str]:
        """``<provider>: max_parallel=N serialize_hosts=yes``."""
        return {provider: exim_throttle_value(params)}

    def prepare(self, instance: EximThrottleFiles, provider: str, params: Mapping[str, Any]) -> None:
        """The provider's transport exists (for ``max_parallel``) and its domains are mapped to it."""
        if "max_parallel" in params:
            instance.require_transport(provider)
        instance.write_providers(self.provider_domains)


class EximPause(_EximFileAction):
    """The provider's domains in ``held_domains``: its mail waits in the queue."""

    file = HELD

    def lines(self, provider: str, params: Mapping[str, Any]) -> dict[str, str]:
        """``<domain>: <provider>`` for each of the provider's domains."""
        domains = self.provider_domains.get(provider, [])
        if not domains:
            raise RuntimeError(f"the provider table names no domain of {provider}: nothing to hold")
        return dict.fromkeys(domains, provider)


def render_body(template: Any, values: Mapping[str, str]) -> Any:
    """The body with ``{name}`` in its strings replaced by ``values`` (unknown names left as
    they are); only strings are touched, so a label can never change the body's structure."""
    if isinstance(template, str):
        out = template
        for name, value in values.items():
            out = out.replace("{" + name + "}", value)
        return out
    if isinstance(template, dict):
        return {key: render_body(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [render_body(value, values) for value in template]
    return template


class HttpAction:
    """POSTs to another system (the sending application, say) on apply and on restore; a failed
    POST is retried after ``backoff`` seconds, doubling each time."""

    remote = True

    def __init__(self, transport: httpx.BaseTransport | None = None, backoff: float = 1.0) -> None:
        self._transport = transport
        self._backoff = backoff

    def _post(self, event: str, provider: str, params: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        body = render_body(params["body"], {**labels, "provider": provider, "event": event})
        delay = self._backoff
        with httpx.Client(timeout=params["timeout"], transport=self._transport) as client:
            for attempt in range(params["retries"] + 1):
                try:
                    response = client.post(params["url"], content=json.dumps(body),
                                           headers={"Content-Type": "application/json"})
                    response.raise_for_status()
                    return
                except httpx.HTTPError as exc:
                    if attempt == params["retries"]:
                        raise RuntimeError(f"POST {params['url']} failed: {exc}") from None
                    time.sleep(delay)
                    delay *= 2

    def apply(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str],
              changes: Changes | None) -> Changes:
        """POST the ``apply`` event."""
        self._post("apply", provider, params, labels)
        return {}

    def restore(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str], changes: Changes) -> None:
        """POST the ``restore`` event."""
        self._post("restore", provider, params, labels)
