"""One-time Postfix provisioning for the throttle actions (``mtaq-exporter actions setup-postfix``).

A provider can only be slowed down on its own if its mail has a transport of its own. The plan:

- a ``master.cf`` service ``mtaq-<provider>`` per provider, cloned from the service of
  ``default_transport`` (usually ``smtp``), so it delivers exactly as before;
- a transport table (``texthash:<config_directory>/mtaq_transport``, no ``postmap`` needed)
  routing the provider's own recipient domains to it, with the next hop mail has today (the
  nexthop of ``default_transport``, else ``relayhost``, else the domain's MX);
- that table put in front of the existing ``transport_maps``. A domain an existing table already
  routes is left alone (and said so).

The plan is idempotent (nothing to do the second time), shown as a diff, and refused when the
configuration cannot be read, does not deliver to the internet, or routes by sender
(``sender_dependent_*`` maps: per-provider transports would bypass them). Hosted domains
recognised only by their MX (Google Workspace, Microsoft 365) cannot be routed by recipient
domain: their mail keeps the default transport.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from collectors.command import CommandError
from collectors.files import atomic_write
from collectors.postfix.control import PostfixControl
from exporter.actions.executors import transport_of

TABLE_NAME = "mtaq_transport"
HEADER = "# Written by `mtaq-exporter actions setup-postfix`: each provider's domains to its own transport.\n"
NOT_DELIVERING = ("error", "discard", "local", "virtual", "retry")


@dataclass
class SetupPlan:
    """What ``apply_setup`` would change in one instance (empty: nothing)."""

    services: dict[str, str] = field(default_factory=dict)  # "mtaq-google/unix" -> master.cf line
    table_path: str = ""
    table_old: str = ""
    table_new: str = ""
    transport_maps: tuple[str | None, str | None] = (None, None)  # (now, planned) explicit values
    skipped: dict[str, str] = field(default_factory=dict)  # domain -> why it keeps its route
    refusal: str | None = None

    @property
    def empty(self) -> bool:
        """Nothing to change."""
        return (not self.services and self.table_old == self.table_new
                and self.transport_maps[0] == self.transport_maps[1])

    def diff(self) -> str:
        """The plan as a reader checks it."""
        if self.refusal:
            return f"refused: {self.refusal}"
        lines = [f"master.cf: + {line}" for line in self.services.values()]
        before, after = self.transport_maps
        if before != after:
            lines.append(f"main.cf:   transport_maps = {before or '(not set)'}")
            lines.append(f"       ->  transport_maps = {after}")
        lines += difflib.unified_diff(self.table_old.splitlines(), self.table_new.splitlines(),
                                      f"{self.table_path} (now)", f"{self.table_path} (planned)", lineterm="")
        lines = lines or ["nothing to change: already set up"]
        lines += [f"left alone: {domain} ({why})" for domain, why in sorted(self.skipped.items())]
        return "\n".join(lines)


def plan_setup(control: PostfixControl, providers: Mapping[str, list[str]]) -> SetupPlan:
    """The changes that give each provider in ``providers`` (name -> domains) its own transport."""
    plan = SetupPlan()
    try:
        control.settings()
        default_transport, relayhost, config_directory, *sender_maps = control.values(
            ["default_transport", "relayhost", "config_directory", "sender_dependent_relayhost_maps",
             "sender_dependent_default_transport_maps"])
        current_maps = control.explicit(["transport_maps"])["transport_maps"]
    except (CommandError, ValueError) as exc:
        plan.refusal = f"cannot read the Postfix configuration: {exc}"
        return plan
    service, _, default_nexthop = default_transport.partition(":")
    if service in NOT_DELIVERING:
        plan.refusal = f"default_transport is {default_transport}: this instance does not deliver to the internet"
        return plan
    if any(sender_maps):
        plan.refusal = ("sender_dependent_relayhost_maps or sender_dependent_default_transport_maps is set: "
                        "per-provider transports would bypass them")
        return plan
    template = control.service(f"{service}/unix")
    if template is None:
        plan.refusal = f"master.cf has no {service}/unix service (the default transport) to clone"
        return plan
    nexthop = default_nexthop or relayhost
    plan.table_path = f"{config_directory}/{TABLE_NAME}"
    table = f"texthash:{plan.table_path}"
    others = [t for t in (current_maps or "").replace(",", " ").split() if t != table]
    try:
        with open(plan.table_path) as f:
            plan.table_old = f.read()
    except FileNotFoundError:
        plan.table_old = ""
    except OSError as exc:
        plan.refusal = f"cannot read {plan.table_path}: {exc}"
        return plan
    entries = []
    for provider, domains in sorted(providers.items()):
        name = f"{transport_of(provider)}/unix"
        line = " ".join([transport_of(provider), *template.split()[1:]])
        existing = control.service(name)
        if existing is None:
            plan.services[name] = line
        elif existing.split() != line.split():
            plan.refusal = f"master.cf has a {name} service that is not ours: {existing}"
            return plan
        for domain in domains:
            routed = next(((t, v) for t in others if (v := control.lookup(t, domain))), None)
            if routed:
                plan.skipped[domain] = f"{routed[0]} routes it to {routed[1]}"
            else:
                entries.append(f"{domain} {transport_of(provider)}:{nexthop}")
    plan.table_new = HEADER + "".join(f"{entry}\n" for entry in entries)
    planned_maps = ", ".join([table, *others]) if table not in (current_maps or "") else current_maps
    plan.transport_maps = (current_maps, planned_maps)
    return plan


def apply_setup(control: PostfixControl, plan: SetupPlan) -> None:
    """Carry ``plan`` out, check the result with ``postfix check`` and reload a running Postfix."""
    if plan.refusal:
        raise ValueError(plan.refusal)
    if plan.table_new != plan.table_old:
        atomic_write(plan.table_path, plan.table_new.encode())
    for name, line in plan.services.items():
        control.add_service(name, line)
    before, after = plan.transport_maps
    if after is not None and before != after:
        control.set({"transport_maps": after})
    control.check()
    if control.running():
        control.reload()
