"""Pull mode: ask Alertmanager's API v2 for the active alerts aimed at this agent, every few
seconds, instead of (or besides) receiving its webhook. One Alertmanager, many sidecars, no
inbound port. An alert that was active and is no longer listed counts as resolved."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from exporter.actions.alerts import Alert, parse_api_alerts
from exporter.actions.config import PullSection


class AlertmanagerPuller:
    """``poll()`` hands the active alerts, and the ones that stopped being active, to ``handle``."""

    def __init__(self, section: PullSection, handle: Callable[[Iterable[Alert], str], Any],
                 transport: httpx.BaseTransport | None = None) -> None:
        self.section = section
        self._handle = handle
        self._transport = transport
        self._active: dict[str, Alert] = {}
        self._headers = {}
        if section.bearer_token_file:
            self._headers["Authorization"] = f"Bearer {Path(section.bearer_token_file).read_text().strip()}"

    def poll(self) -> None:
        """One request; raises when Alertmanager cannot be asked (the job records the failure)."""
        params = [("active", "true"), ("silenced", "false"), ("inhibited", "false"),
                  *(("filter", matcher) for matcher in self.section.matchers)]
        assert self.section.url is not None
        with httpx.Client(timeout=10, transport=self._transport, headers=self._headers) as client:
            response = client.get(f"{self.section.url.rstrip('/')}/api/v2/alerts", params=params)
            response.raise_for_status()
            alerts = parse_api_alerts(response.json())
        current = {alert.fingerprint: alert for alert in alerts}
        ended = [replace(alert, firing=False) for fingerprint, alert in self._active.items()
                 if fingerprint not in current]
        self._active = current
        self._handle([*alerts, *ended], "pull")
