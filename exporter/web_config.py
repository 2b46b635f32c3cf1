"""TLS and basic authentication from an exporter-toolkit ``web-config.yml`` (``--web.config.file``).

The same file format as the Go exporters (prometheus/exporter-toolkit ``docs/web-configuration.md``),
so one file and ``promtool check web-config`` serve both. Supported: ``tls_server_config``
(``cert_file``, ``key_file``, ``client_ca_file``, ``client_auth_type``, ``min_version``,
``max_version``) and ``basic_auth_users`` (user name → bcrypt hash). Other exporter-toolkit keys
are refused at start rather than silently ignored.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from pathlib import Path
from typing import Literal

import bcrypt
import yaml
from pydantic import Field, ValidationError, field_validator

from collectors.settings import ConfigError, StrictModel, describe_errors

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


class TLSServerConfig(StrictModel):
    """``tls_server_config`` of web-config.yml."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_auth_type: Literal[tuple(_CLIENT_AUTH)] = "NoClientCert"  # type: ignore[valid-type]
    min_version: Literal["TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS12", "TLS13"] = "TLS13"


class WebConfigFile(StrictModel):
    """The whole web-config.yml."""

    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"user {user!r}: expected a bcrypt hash ($2y$…), not a plain password")
            try:
                bcrypt.checkpw(b"", hashed.encode())
            except ValueError:
                raise ValueError(f"user {user!r}: not a valid bcrypt hash") from None
        return users


#: bcrypt looks at 72 bytes; exporter-toolkit (Go's bcrypt) refuses longer passwords outright.
MAX_PASSWORD_BYTES = 72
#: Accepted credentials remembered at once (Prometheus servers scraping this agent).
ACCEPTED_CACHE = 64


class BasicAuth:
    """Checks ``Authorization: Basic`` headers the way exporter-toolkit does.

    Accepted credentials are remembered (bcrypt is slow on purpose, and Prometheus scrapes every
    few seconds with the same ones); only a digest of them is kept. An unknown user is checked
    against a dummy hash of the same cost, and a password longer than bcrypt's 72 bytes against
    its first 72, so that neither answers faster than a wrong password and timing reveals no user
    name. One bcrypt check runs at a time: a flood of wrong passwords costs one core, not all.
    """

    def __init__(self, users: dict[str, str]) -> None:
        self.users = {user: hashed.encode() for user, hashed in users.items()}
        cost = int(next(iter(self.users.values())).split(b"$")[2]) if self.users else 10
        self._dummy = bcrypt.hashpw(b"not a password of anyone", bcrypt.gensalt(rounds=cost))
        self._accepted: dict[bytes, None] = {}  # insertion-ordered: the oldest is dropped first
        self._lock = threading.Lock()
        self._checking = threading.Semaphore(1)

    def allows(self, header: str | None) -> bool:
        """Whether ``header`` carries a valid user name and password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password_text = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        password = password_text.encode()
        hashed = self.users.get(user)
        key = hashlib.sha256((hashed or b"") + b"\0" + password).digest()
        with self._lock:
            if hashed is not None and key in self._accepted:
                return True
        with self._checking:
            matches = bcrypt.checkpw(password[:MAX_PASSWORD_BYTES], hashed or self._dummy)
        if hashed is None or len(password) > MAX_PASSWORD_BYTES or not matches:
            return False
        with self._lock:
            self._accepted[key] = None
            while len(self._accepted) > ACCEPTED_CACHE:
                del self._accepted[next(iter(self._accepted))]
        return True


def _context(tls: TLSServerConfig, base: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.maximum_version = _VERSIONS[tls.max_version]
    context.load_cert_chain(base / tls.cert_file, base / tls.key_file)
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file:
        context.load_verify_locations(base / tls.client_ca_file)
    return context


def load_web_config(path: str) -> tuple[ssl.SSLContext | None, BasicAuth | None]:
    """The TLS context and basic-auth checker a web-config.yml asks for.

    Relative file names are relative to the web-config file, as in exporter-toolkit. Raises
    ``ConfigError`` naming the key for anything invalid, unreadable or unknown.
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"web.config_file: cannot load {path}: {exc}"]) from None
    try:
        config = WebConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, prefix="web.config_file: ", origin=lambda _key: path)) from None
    context = None
    if config.tls_server_config is not None:
        try:
            context = _context(config.tls_server_config, Path(path).parent)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"web.config_file: tls_server_config: {exc} [from {path}]"]) from None
    return context, BasicAuth(config.basic_auth_users) if config.basic_auth_users else None
