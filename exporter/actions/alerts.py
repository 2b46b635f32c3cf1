"""Alerts as the actions engine sees them, from Alertmanager's webhook (payload version 4) or its
API v2 (pull mode). Unknown fields are tolerated; what the engine relies on is checked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collectors.settings import describe_errors

#: Alerts in one payload at most (Alertmanager's max_alerts; a sane ceiling either way).
MAX_ALERTS = 1000


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _WebhookAlert(_Tolerant):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    startsAt: str = Field(min_length=1)  # Alertmanager's field name
    fingerprint: str | None = None


class _WebhookPayload(_Tolerant):
    version: Literal["4"]
    alerts: list[_WebhookAlert] = Field(max_length=MAX_ALERTS)


class _ApiAlertStatus(_Tolerant):
    state: str


class _ApiAlert(_Tolerant):
    labels: dict[str, str]
    startsAt: str = Field(min_length=1)  # Alertmanager's field name
    fingerprint: str | None = None
    status: _ApiAlertStatus


@dataclass(frozen=True)
class Alert:
    """One alert: its identity (fingerprint, and startsAt telling one firing from the next),
    whether it fires, and its labels."""

    fingerprint: str
    starts_at: str
    firing: bool
    labels: Mapping[str, str]

    @property
    def name(self) -> str:
        """Its ``alertname``."""
        return self.labels.get("alertname", "")


def _fingerprint(labels: Mapping[str, str], given: str | None) -> str:
    # Alertmanager sends one; without it, the labels identify the alert just as well.
    if given:
        return given
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


class PayloadError(ValueError):
    """A request body that is not an Alertmanager payload; the message says what is wrong."""


def parse_webhook(body: bytes) -> list[Alert]:
    """The alerts of a webhook request body (raises ``PayloadError``)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    try:
        payload = _WebhookPayload.model_validate(data)
    except ValidationError as exc:
        raise PayloadError("; ".join(describe_errors(exc))) from None
    return [Alert(_fingerprint(a.labels, a.fingerprint), a.startsAt, a.status == "firing", a.labels)
            for a in payload.alerts]


def parse_api_alerts(data: Any) -> list[Alert]:
    """The active alerts of an API v2 ``GET /api/v2/alerts`` answer (raises ``PayloadError``)."""
    try:
        alerts = [_ApiAlert.model_validate(item) for item in data]
    except (ValidationError, TypeError) as exc:
        raise PayloadError(f"not an Alertmanager API v2 alert list: {exc}") from None
    return [Alert(_fingerprint(a.labels, a.fingerprint), a.startsAt, True, a.labels)
            for a in alerts if a.status.state == "active"]
