"""``mtaq-exporter actions list|restore|setup-postfix|setup-exim``: the alert-driven actions from the shell.

    mtaq-exporter actions list [--url URL] [--json]        actions in force and recent decisions
    mtaq-exporter actions restore ID [--url URL]           end an action now (ID: postfix_throttle:google)
    mtaq-exporter actions setup-postfix [--config-dir DIR] [--apply]
                                                           give each provider its own Postfix transport
    mtaq-exporter actions setup-exim [--throttle-dir DIR] [--transport NAME]
                                                           print the Exim configuration the Exim actions need

``restore`` writes: on an agent with basic auth, ``--url http://user@host:port --password-file FILE``.

``setup-postfix`` prints the changes; with ``--apply`` it makes them (as root, or the owner of
the Postfix configuration), checks them with ``postfix check`` and reloads a running Postfix.
``setup-exim`` prints the lines to add to the Exim configuration (hand-kept or Debian's split
files: nothing is changed for you), for the providers of the table and the throttle directory.
Exit status: 0 done (or nothing to do), 1 refused or failed, 2 bad usage or unreachable agent.
"""

from __future__ import annotations

import argparse
import json
import sys

from collectors.classify import LOCAL, OTHER, Classifier
from collectors.command import CommandError
from collectors.exim.control import config_snippet
from collectors.postfix.control import PostfixControl
from collectors.postfix.instance import PostfixInstance
from exporter.actions.setup import apply_setup, plan_setup
from exporter.commands.agent_client import AgentError, add_agent_flags, get_json, post_json
from exporter.commands.flags import add_config_flags, load
from exporter.render import table, when

PROG = "mtaq-exporter actions"
DEFAULT_THROTTLE_DIR = "/etc/exim4/mtaq"


def _list(args: argparse.Namespace) -> int:
    document = get_json(args.url, "/api/v1/actions", password_file=args.password_file)
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    print("DRY RUN: decisions are logged and counted, nothing is changed" if document["dry_run"] else "")
    print("In force:")
    print("\n".join(table(["id", "alert", "since", "until", "alerts"],
                          [[a["id"], a["alertname"], when(a["applied_at"]), when(a["restore_at"] or a["expires_at"]),
                            len(a["alerts"])] for a in document["active"]], indent="  ", align="lllll"))
          if document["active"] else "  none")
    print("Recent decisions:")
    for entry in document["history"][:args.limit]:
        print(f"  {when(entry['at'])}  {entry.get('decision', '?'):17} {entry.get('action') or '-'}:"
              f"{entry.get('provider') or '-'}  {entry.get('alertname', '')}  {entry.get('why', '')}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    print(json.dumps(post_json(args.url, "/api/v1/actions/restore", {"id": args.id},
                               password_file=args.password_file)))
    return 0


def _setup_postfix(args: argparse.Namespace) -> int:
    config = load(args, ())
    throttleable = {p: d for p, d in Classifier(config).provider_domains().items() if p not in (OTHER, LOCAL)}
    if args.provider:
        unknown = sorted(set(args.provider) - set(throttleable))
        if unknown:
            print(f"{PROG} setup-postfix: unknown provider {', '.join(unknown)}; known: {', '.join(throttleable)}",
                  file=sys.stderr)
            return 2
        throttleable = {p: throttleable[p] for p in args.provider}
    instances = [PostfixInstance(config_dir=args.config_dir)] if args.config_dir else config.postfix.instances
    status = 0
    for instance in instances:
        control = PostfixControl(instance)
        plan = plan_setup(control, throttleable)
        print(f"Postfix instance {instance.name} ({instance.config_dir or 'default configuration'}):")
        print(plan.diff())
        if plan.refusal:
            status = 1
        elif args.apply and not plan.empty:
            try:
                apply_setup(control, plan)
            except (CommandError, OSError, ValueError) as exc:
                print(f"{PROG} setup-postfix: failed: {exc}", file=sys.stderr)
                return 1
            print("applied; postfix check passed")
        elif not plan.empty:
            print("(nothing changed: run again with --apply)")
    return status


def _setup_exim(args: argparse.Namespace) -> int:
    config = load(args, ())
    providers = [p for p in Classifier(config).provider_domains() if p not in (OTHER, LOCAL)]
    directory = args.throttle_dir or next((i.throttle_dir for i in config.exim.instances if i.throttle_dir),
                                          DEFAULT_THROTTLE_DIR)
    print(config_snippet(directory, providers, args.transport).text())
    return 0


def main(argv: list[str]) -> int:
    """Run ``actions`` with ``argv`` (the words after ``actions``)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("list", "actions in force and recent decisions"), ("restore", "end an action now")):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_agent_flags(sub)
        if name == "list":
            sub.add_argument("--json", action="store_true", help="print the API document")
            sub.add_argument("--limit", type=int, default=20, help="recent decisions shown (default 20)")
        else:
            sub.add_argument("id", metavar="ID", help="the action's id, e.g. postfix_throttle:google")
    setup = commands.add_parser("setup-postfix", help="give each provider its own Postfix transport",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(setup, ())
    setup.add_argument("--config-dir", metavar="DIR", help="the instance's configuration directory "
                                                            "(default: the instances of the configuration)")
    setup.add_argument("--provider", action="append", metavar="NAME", help="only this provider (repeatable)")
    setup.add_argument("--apply", action="store_true", help="make the changes (default: only show them)")
    exim = commands.add_parser("setup-exim", help="print the Exim configuration the Exim actions need",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(exim, ())
    exim.add_argument("--throttle-dir", metavar="DIR",
                      help=f"where the agent writes (default: the configured throttle_dir or {DEFAULT_THROTTLE_DIR})")
    exim.add_argument("--transport", default="remote_smtp", metavar="NAME",
                      help="your remote smtp transport (default remote_smtp)")
    args = parser.parse_args(argv)
    if args.command == "setup-postfix":
        return _setup_postfix(args)
    if args.command == "setup-exim":
        return _setup_exim(args)
    try:
        return _list(args) if args.command == "list" else _restore(args)
    except AgentError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1 if exc.status == 404 else 2
