"""The ``actions:`` configuration section: which alerts act, how, for how long, and from where."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, StringConstraints, field_validator, model_validator

from collectors.settings import Duration, NonNegativeDuration, StrictModel, parse_duration

#: The executors an alert may trigger; nothing else can run.
ACTIONS = ("postfix_throttle", "postfix_pause", "exim_throttle", "exim_pause", "http")
#: The ``<transport>_…`` parameters a throttle may set, and how each value is checked.
THROTTLE_PARAMETERS = ("destination_rate_delay", "destination_concurrency_limit", "destination_recipient_limit")
#: What an Exim throttle may set for a provider (``collectors/exim/control.py``).
EXIM_THROTTLE_PARAMETERS = ("max_parallel", "serialize_hosts")
MAX_TTL = 86400.0

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")]


def _throttle_params(params: dict[str, Any]) -> dict[str, str]:
    """Postfix values for a throttle, every one checked: no other key, no other shape."""
    out = {}
    for key, value in params.items():
        if key not in THROTTLE_PARAMETERS:
            raise ValueError(f"unknown throttle parameter {key!r}; known: {', '.join(THROTTLE_PARAMETERS)}")
        if key == "destination_rate_delay":
            seconds = parse_duration(value)
            if not isinstance(seconds, int | float) or not 0 < seconds <= 3600:
                raise ValueError(f"{key}: expected a duration from 1s to 1h, got {value!r}")
            out[key] = f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds}s"
        else:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
                raise ValueError(f"{key}: expected a whole number from 1 to 1000, got {value!r}")
            out[key] = str(value)
    if not out:
        raise ValueError(f"a throttle needs at least one of {', '.join(THROTTLE_PARAMETERS)}")
    return out


def _exim_throttle_params(params: dict[str, Any]) -> dict[str, Any]:
    """Exim values for a throttle, every one checked: ``max_parallel`` 1..1000 (concurrent
    deliveries through the transport to the provider), ``serialize_hosts: true`` (one connection
    per host at a time)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in EXIM_THROTTLE_PARAMETERS:
            raise ValueError(f"unknown exim_throttle parameter {key!r}; known: {', '.join(EXIM_THROTTLE_PARAMETERS)}")
        if key == "max_parallel":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
                raise ValueError(f"{key}: expected a whole number from 1 to 1000, got {value!r}")
        elif value is not True:
            raise ValueError(f"{key}: expected true (leave it out for no serialization), got {value!r}")
        out[key] = value
    if not out:
        raise ValueError(f"an exim_throttle needs at least one of {', '.join(EXIM_THROTTLE_PARAMETERS)}")
    return out


class HttpTarget(StrictModel):
    """Where the ``http`` action posts, and what."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")]
    body: dict[str, Any] = Field(
        default_factory=lambda: {"provider": "{provider}"},
        description="JSON body; strings may name alert labels as {label}, plus {event} (apply/restore)")
    timeout: Duration = 5.0
    retries: int = Field(default=3, ge=0, le=10)


class ActionRule(StrictModel):
    """Alerts named ``alertname`` (and matching ``match``) trigger ``action`` for their provider."""

    alertname: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_:][A-Za-z0-9_:]*$")]
    match: dict[LabelName, str] = Field(default_factory=dict, description="further labels the alert must carry")
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict)
    ttl: Duration = Field(le=MAX_TTL, description="how long an action lasts after the alert last fired")
    cooldown: NonNegativeDuration = Field(default=0, le=MAX_TTL,
                                          description="after the alert resolves, wait this long before restoring")

    @model_validator(mode="after")
    def _params_fit_the_action(self) -> ActionRule:
        if self.action == "postfix_throttle":
            object.__setattr__(self, "params", _throttle_params(self.params))
        elif self.action == "exim_throttle":
            object.__setattr__(self, "params", _exim_throttle_params(self.params))
        elif self.action in ("postfix_pause", "exim_pause") and self.params:
            raise ValueError(f"{self.action} takes no params")
        elif self.action == "http":
            object.__setattr__(self, "params", HttpTarget.model_validate(self.params).model_dump())
        return self


class WebhookSection(StrictModel):
    """``POST /api/v1/alerts``: Alertmanager's webhook, with a bearer token."""

    enabled: bool = True
    bearer_token_file: str | None = Field(default=None, description="file holding the token Alertmanager sends")
    bearer_token: SecretStr | None = Field(default=None, description="the token itself (from the environment)")

    def token(self) -> str | None:
        """The configured token (raises ``OSError`` when the file cannot be read)."""
        if self.bearer_token is not None:
            return self.bearer_token.get_secret_value()
        if self.bearer_token_file:
            return Path(self.bearer_token_file).read_text().strip() or None
        return None


class PullSection(StrictModel):
    """Poll Alertmanager's API v2 for active alerts instead of (or besides) the webhook."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    interval: Duration = 30.0
    matchers: list[str] = Field(default_factory=lambda: ['action="throttle"'],
                                description="Alertmanager filter matchers, e.g. action=\"throttle\"")
    bearer_token_file: str | None = None

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, matchers: list[str]) -> list[str]:
        for matcher in matchers:
            if not re.fullmatch(r'[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"[^"\n]*"', matcher):
                raise ValueError(f'expected a matcher like action="throttle", got {matcher!r}')
        return matchers


class ActionsSection(StrictModel):
    """The ``actions:`` section."""

    enabled: bool = False
    dry_run: bool = Field(default=True, description="decide, log and count, change nothing")
    state_file: str | None = Field(default=None, description="active actions, kept across restarts")
    max_active: int = Field(default=5, ge=1, le=100, description="actions in force at once at most")
    agent_labels: dict[LabelName, str] = Field(
        default_factory=dict, description="labels that name this agent in alerts, e.g. {instance: mta-1:10154}")
    accept_unaddressed: bool = Field(default=False, description="act on alerts that name no agent at all")
    webhook: WebhookSection = Field(default_factory=WebhookSection)
    pull: PullSection = Field(default_factory=PullSection)
    rules: list[ActionRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> ActionsSection:
        if not self.enabled:
            return self
        if not self.rules:
            raise ValueError("actions are enabled but no rules map alerts to actions")
        if not self.dry_run and not self.state_file:
            raise ValueError("state_file is needed to change anything: a restart must find what it has to undo")
        if not self.webhook.enabled and self.pull.url is None:
            raise ValueError("neither the webhook nor pull.url is set: no alert would ever arrive")
        if self.webhook.enabled and self.webhook.bearer_token is None and not self.webhook.bearer_token_file:
            raise ValueError("the webhook needs webhook.bearer_token_file (or MTAQ_ACTIONS__WEBHOOK__BEARER_TOKEN)")
        for rule in self.rules:
            # Polling refreshes the TTL; one that lapses between two polls would flap the action.
            if self.pull.url is not None and rule.ttl < 2 * self.pull.interval:
                raise ValueError(f"rule {rule.alertname}: ttl {rule.ttl:g}s is shorter than two pull intervals "
                                 f"({2 * self.pull.interval:g}s)")
        return self
