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
import hmac
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
        return users


class BasicAuth:
    """Checks ``Authorization: Basic`` headers; remembers accepted credentials (bcrypt is slow
    on purpose, and Prometheus scrapes every few seconds with the same ones)."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = {user: hashed.encode() for user, hashed in users.items()}
        self._accepted: set[bytes] = set()
        self._lock = threading.Lock()

    def allows(self, header: str | None) -> bool:
        """Whether ``header`` carries a valid user name and password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        # The cache key is a digest of what was checked, so no password is kept in memory.
        key = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        with self._lock:
            if any(hmac.compare_digest(key, seen) for seen in self._accepted):
                return True
        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._accepted.add(key)
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
