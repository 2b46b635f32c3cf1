"""Asking a running agent from the shell (``status``, ``dead-letters``, ``actions``): its address
as an operator types it (the agent's basic-auth user in it, ``http://user@host:port``, with the
password there too or, kept out of the process list, in ``--password-file``), and its JSON API
with errors in one line."""

from __future__ import annotations

import argparse
import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:10154"


class AgentError(Exception):
    """The agent could not be asked, or answered with an error; the message says which, in one line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of an error answer, None when there was no answer


def add_agent_flags(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--password-file``, the same for every command that asks an agent."""
    parser.add_argument("--url", default=DEFAULT_URL,
                        help="the agent: http(s)://[user[:password]@]host:port, host:port or :port "
                             "(default %(default)s)")
    parser.add_argument("--password-file", metavar="FILE",
                        help="the basic-auth password of the user in --url, kept out of the process list")


def agent_url(value: str) -> str:
    """A base URL from what an operator types: ``http(s)://host:port``, ``host:port``, ``:port``
    (this host) or a bare port number."""
    value = value.strip().rstrip("/")
    if "://" in value:
        return value
    if value.isdigit():
        value = f":{value}"
    if value.startswith(":"):
        value = "127.0.0.1" + value
    return f"http://{value}"


def _without_credentials(url: str, password_file: str | None = None) -> tuple[str, dict[str, str]]:
    """``url`` without its user information, and the basic auth header that carries it instead
    (the password from ``password_file`` when given)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    password = (Path(password_file).read_text().strip() if password_file
                else urllib.parse.unquote(parts.password or ""))
    credentials = f"{urllib.parse.unquote(parts.username)}:{password}"
    return (urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])),
            {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()})


def shown_url(base: str) -> str:
    """The agent's base URL as output may show it: credentials left out."""
    return _without_credentials(agent_url(base))[0]


def get_json(base: str, path: str, *, password_file: str | None = None, timeout: float = 10.0) -> Any:
    """``GET base+path`` as JSON; ``AgentError`` naming the URL (never the credentials) and the
    reason otherwise (for an HTTP error, the agent's own explanation)."""
    return _ask(base, path, None, password_file, timeout)


def post_json(base: str, path: str, body: Any, *, password_file: str | None = None, timeout: float = 10.0) -> Any:
    """``POST`` ``body`` as JSON to ``base+path``; the answer as JSON, errors as for ``get_json``."""
    return _ask(base, path, body, password_file, timeout)


def _ask(base: str, path: str, body: Any, password_file: str | None, timeout: float) -> Any:
    try:
        url, headers = _without_credentials(agent_url(base) + path, password_file)
    except OSError as exc:
        raise AgentError(f"cannot read the password file: {exc}") from None
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        request = urllib.request.Request(url, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        explanation = exc.read().decode("utf-8", "replace").strip().splitlines()
        raise AgentError(f"{url}: HTTP {exc.code}: {explanation[0] if explanation else exc.reason}",
                         exc.code) from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise AgentError(f"cannot reach {url}: {reason} (is the agent running there? see --url)") from None
    except (OSError, ValueError) as exc:
        raise AgentError(f"{url}: {exc}") from None
