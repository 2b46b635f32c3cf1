"""``mtaq-exporter healthcheck``: exit 0 when the agent answers ``/healthz``, 1 when it does not.

It reads the configuration the way the agent does (``--config.file`` or ``MTAQ_CONFIG_FILE``, the
``MTAQ_...`` variables, the agent's flags), so it asks the address the agent listens on, over
HTTPS when the web-config file turns TLS on. ``--agent-pid PID`` takes the flags from the
command line of that running agent instead: the image's HEALTHCHECK uses ``--agent-pid 1``, so a
container started with ``--web.listen-address=:9999`` is checked on port 9999 without repeating
the flag. ``/healthz`` needs no credentials, so basic auth does not matter; the certificate is
not verified (the check talks to its own agent, whose certificate names the host's public name).

Exit status: 0 healthy, 1 unhealthy (Docker's HEALTHCHECK contract), 2 bad usage or
configuration, or an agent that demands client certificates (no HTTP check can pass there).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

from collectors.settings import ConfigError
from exporter.commands.flags import (
    WEB_FLAGS,
    add_config_flags,
    collector_flags,
    command_parser,
    exit_on_config_error,
    load,
)
from exporter.web_config import load_web_config

#: The name of the console script, looked for in the agent's command line.
SCRIPT = "mtaq-exporter"
#: The agent's own commands that serve HTTP with the web flags (none: the agent itself).
SERVING_COMMANDS = ("demo",)


def _usage_error(message: str) -> NoReturn:
    print(f"mtaq-exporter healthcheck: {message}", file=sys.stderr)
    raise SystemExit(2)


def agent_arguments(pid: int, proc: Path = Path("/proc")) -> list[str]:
    """The flags of the agent running as process ``pid``: what follows ``mtaq-exporter`` (and
    ``demo``) in its command line, also when an init process (tini, catatonit) started it."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError as exc:
        _usage_error(f"cannot read the command line of process {pid}: {exc.strerror or exc}")
    words = [word.decode("utf-8", "surrogateescape") for word in argv if word]
    start = next((i for i, word in enumerate(words) if os.path.basename(word) == SCRIPT), None)
    if start is None:
        _usage_error(f"process {pid} is not {SCRIPT}: {' '.join(words)[:200]!r}")
    args = words[start + 1:]
    if args and not args[0].startswith("-"):
        if args[0] not in SERVING_COMMANDS:
            _usage_error(f"process {pid} runs '{SCRIPT} {args[0]}', which serves no HTTP")
        args = args[1:]
    return args


def healthz_url(config: Any) -> tuple[str, ssl.SSLContext | None]:
    """The ``/healthz`` URL of the agent ``config`` describes, and the client TLS context when it
    serves HTTPS. Raises ``ConfigError`` for a bad web-config file."""
    host, port = config.web.endpoint()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"  # an agent listening on every address answers on loopback
    elif host == "::":
        host = "::1"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server_tls = load_web_config(config.web.config_file)[0] if config.web.config_file else None
    if server_tls is None:
        return f"http://{netloc}/healthz", None
    if server_tls.verify_mode == ssl.CERT_REQUIRED:
        raise ConfigError([f"web.config_file: tls_server_config.client_auth_type demands a client certificate, "
                           f"which a health check does not have: check the port with TCP instead "
                           f"[from {config.web.config_file}]"])
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return f"https://{netloc}/healthz", client


def check(url: str, context: ssl.SSLContext | None, timeout: float) -> tuple[bool, str]:
    """GET ``url``: (healthy, one line saying what happened)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status == 200, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"cannot reach {url}: {getattr(reason, 'strerror', None) or reason}"


def _parser() -> tuple[argparse.ArgumentParser, tuple[Any, ...]]:
    parser = command_parser("mtaq-exporter healthcheck", __doc__)
    flags = (*WEB_FLAGS, *collector_flags())
    add_config_flags(parser, flags, switches=True)
    parser.add_argument("--agent-pid", type=int, metavar="PID",
                        help="take every flag from the command line of the agent running as PID (the image uses 1)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="how long to wait for the answer (default %(default)s)")
    return parser, flags


def main(argv: list[str]) -> int:
    """Exit 0 when the configured agent answers ``/healthz`` with 200, 1 when not, 2 on bad input."""
    parser, flags = _parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout: expected a positive number of seconds")
    if args.agent_pid is not None:
        given = [arg for arg in argv if arg.startswith("--") and not arg.startswith(("--agent-pid", "--timeout"))]
        if given:
            parser.error(f"--agent-pid takes every flag from the agent's command line; remove {' '.join(given)}")
        timeout = args.timeout
        # The agent validated its own flags; options only it has (--log.level, the demo's) are skipped.
        args = parser.parse_known_args(agent_arguments(args.agent_pid))[0]
        args.timeout = timeout
    config = load(args, flags)
    try:
        url, context = healthz_url(config)
    except ConfigError as exc:
        exit_on_config_error(exc)
    healthy, what = check(url, context, args.timeout)
    print(f"{'healthy' if healthy else 'unhealthy'}: {what}")
    return 0 if healthy else 1
