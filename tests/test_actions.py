"""The actions engine: which alerts act, idempotence, TTL and cool-down, restarts, dry-run, safety,
metrics, and the webhook's HTTP contract (401/400/413/202) on the real server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from collectors.classify import Classifier
from exporter.actions.alerts import Alert, PayloadError, parse_webhook
from exporter.actions.config import ActionsSection
from exporter.actions.engine import ActionEngine
from exporter.agent import Agent
from exporter.config import ConfigError, load_config
from tests.helpers import FakeClock, wait_until

TOKEN = "s3cret-token"
RULE = {"alertname": "MtaqProviderRateLimited", "action": "postfix_throttle",
        "params": {"destination_rate_delay": "2s", "destination_concurrency_limit": 2}, "ttl": "30m",
        "cooldown": "10m"}
PROVIDERS = Classifier().provider_names


class Recording:
    """An executor that records what it is asked to do (Postfix itself is tested in the lab)."""

    remote = False

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def apply(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str],
              changes: dict | None) -> dict:
        self.calls.append(("apply", provider))
        if self.fail:
            raise RuntimeError("postconf failed")
        return changes or {"postfix": {"mtaq-google_destination_rate_delay": None}}

    def restore(self, provider: str, params: Mapping[str, Any], labels: Mapping[str, str], changes: dict) -> None:
        self.calls.append(("restore", provider))


def section(tmp_path: Path, **changes: Any) -> ActionsSection:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    values = {"enabled": True, "dry_run": False, "state_file": str(tmp_path / "actions.json"),
              "agent_labels": {"instance": "mta-1:10154"}, "webhook": {"bearer_token_file": str(token)},
              "rules": [RULE], **changes}
    return ActionsSection.model_validate(values)


def engine(tmp_path: Path, executor: Recording, clock: FakeClock, **changes: Any) -> ActionEngine:
    built = ActionEngine(section(tmp_path, **changes), {"postfix_throttle": executor}, providers=PROVIDERS,
                         instances=["postfix"], clock=clock)
    built.start()
    return built


def alert(provider: str = "google", firing: bool = True, fingerprint: str = "f1", starts: str = "2026-12-01T10:00:00Z",
          **labels: str) -> Alert:
    return Alert(fingerprint, starts, firing, {"alertname": "MtaqProviderRateLimited", "provider": provider,
                                               "instance": "mta-1:10154", "action": "throttle", **labels})


def settle(built: ActionEngine, remote: bool | None = None) -> None:
    """Wait for the workers (or the one for ``remote`` executors, or the other) to finish what was submitted."""
    for kind, worker in built._workers.items():
        if remote is None or kind == remote:
            worker.submit(lambda: None).result(10)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


def test_apply_extend_and_restore_after_the_cooldown(tmp_path: Path, clock: FakeClock) -> None:
    executor = Recording()
    built = engine(tmp_path, executor, clock)
    [first] = built.handle([alert()], "webhook")
    assert (first["decision"], first["action"]) == ("applied", "postfix_throttle")
    settle(built)
    clock.now += 300
    [again] = built.handle([alert(starts="2026-12-01T10:00:00Z")], "webhook")  # re-sent: repeat_interval
    assert again["decision"] == "extended"
    [resolved] = built.handle([alert(firing=False)], "webhook")
    assert resolved["decision"] == "restore_scheduled"
    clock.now += 599
    built.refresh()
    settle(built)
    assert executor.calls == [("apply", "google")]
    clock.now += 2
    built.refresh()
    settle(built)
    assert executor.calls == [("apply", "google"), ("restore", "google")]
    assert built.document()["active"] == []


def test_a_flapping_action_doubles_its_cool_down_up_to_its_ttl(tmp_path: Path, clock: FakeClock) -> None:
    """The throttle removes its own cause: its alert resolves, and fires again soon after the restore."""
    executor = Recording()
    built = engine(tmp_path, executor, clock)

    def cycle(quiet: float, fingerprint: str) -> tuple[dict[str, Any], dict[str, Any], float]:
        """Fire after ``quiet`` s, resolve; (decision, resolution, seconds until the restore)."""
        clock.now += quiet
        [applied] = built.handle([alert(fingerprint=fingerprint)], "webhook")
        [resolved] = built.handle([alert(firing=False, fingerprint=fingerprint)], "webhook")
        start = clock.now
        while ("restore", "google") not in executor.calls[-1:]:
            clock.now += 60
            built.refresh()
            settle(built)
        return applied, resolved, clock.now - start

    applied, resolved, waited = cycle(0, "a")
    assert "flap" not in applied["why"] and waited == 600
    applied, resolved, waited = cycle(300, "b")  # fired again 5 min after the restore
    assert "flap 1: 300 s after its restore" in applied["why"]
    assert "cool-down of 1200 s (1 flap(s): doubled)" in resolved["why"] and waited == 1200
    applied, resolved, waited = cycle(300, "c")
    assert "flap 2" in applied["why"] and "cool-down of 1800 s" in resolved["why"] and waited == 1800  # the TTL
    assert built.document()["active"] == []
    applied, resolved, waited = cycle(3600, "d")  # an hour without it: a new start
    assert "flap" not in applied["why"] and waited == 600


def test_a_restart_remembers_recent_restores(tmp_path: Path, clock: FakeClock) -> None:
    executor = Recording()
    built = engine(tmp_path, executor, clock)
    built.handle([alert(fingerprint="a")], "webhook")
    built.handle([alert(firing=False, fingerprint="a")], "webhook")
    clock.now += 600
    built.refresh()
    settle(built)
    built.stop()
    clock.now += 300
    again = engine(tmp_path, executor, clock)  # the agent restarted; the alert fires again
    [applied] = again.handle([alert(fingerprint="b")], "webhook")
    assert "flap 1: 300 s after its restore" in applied["why"]
    [resolved] = again.handle([alert(firing=False, fingerprint="b")], "webhook")
    assert "cool-down of 1200 s" in resolved["why"]


def test_ttl_lapses_without_a_resend(tmp_path: Path, clock: FakeClock) -> None:
    executor = Recording()
    built = engine(tmp_path, executor, clock)
    built.handle([alert()], "webhook")
    clock.now += 1801
    built.refresh()
    settle(built)
    assert executor.calls == [("apply", "google"), ("restore", "google")]


def test_replays_and_ha_twins_change_nothing(tmp_path: Path, clock: FakeClock) -> None:
    executor = Recording()
    built = engine(tmp_path, executor, clock)
    built.handle([alert()], "webhook")
    settle(built)
    before = built.document()["active"]
    clock.now += 5
    decisions = built.handle([alert(), alert()], "webhook")  # the second Alertmanager, then a replay
    settle(built)
    assert [d["decision"] for d in decisions] == ["ignored", "ignored"]
    assert all("replay or HA twin" in d["why"] for d in decisions)
    assert built.document()["active"] == before
    assert executor.calls == [("apply", "google")]


@pytest.mark.parametrize(("labels", "why"), [
    ({"instance": "mta-2:10154"}, "for another agent (instance=mta-2:10154)"),
    ({"mta_instance": "postfix-other"}, "for another agent (mta_instance=postfix-other)"),
    ({"provider": "other"}, "provider 'other' is not one this agent acts on"),
    ({"provider": "local"}, "provider 'local' is not one this agent acts on"),
    ({"provider": "google;rm -rf /"}, "is not one this agent acts on"),
    ({"provider": "$(reboot)"}, "is not one this agent acts on"),
    ({"alertname": "MtaqSomethingElse"}, "no rule for MtaqSomethingElse"),
])
def test_alerts_that_must_not_act(tmp_path: Path, clock: FakeClock, labels: dict[str, str], why: str) -> None:
    executor = Recording()
    built = engine(tmp_path, executor, clock)
    [decision] = built.handle([alert(**labels)], "webhook")
    settle(built)
    assert decision["decision"] == "ignored" and why in decision["why"], decision
    assert executor.calls == []


def test_an_unaddressed_alert_acts_only_when_allowed(tmp_path: Path, clock: FakeClock) -> None:
    unaddressed = Alert("f9", "t", True, {"alertname": "MtaqProviderRateLimited", "provider": "yahoo"})
    built = engine(tmp_path, Recording(), clock, agent_labels={})
    assert built.handle([unaddressed], "webhook")[0]["why"].startswith("names no agent")
    single = engine(tmp_path, Recording(), clock, agent_labels={}, accept_unaddressed=True)
    assert single.handle([unaddressed], "webhook")[0]["decision"] == "applied"


def test_max_active(tmp_path: Path, clock: FakeClock) -> None:
    built = engine(tmp_path, Recording(), clock, max_active=2)
    decisions = built.handle([alert("google", fingerprint="a"), alert("yahoo", fingerprint="b"),
                              alert("microsoft", fingerprint="c")], "webhook")
    assert [d["decision"] for d in decisions] == ["applied", "applied", "ignored"]
    assert "max_active" in decisions[2]["why"]


def test_dry_run_changes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    executor = Recording()
    built = engine(tmp_path, executor, clock, dry_run=True)
    assert built.handle([alert()], "webhook")[0]["decision"] == "dry_run"
    clock.now += 1801
    built.refresh()
    settle(built)
    assert executor.calls == []
    assert not (tmp_path / "actions.json").exists() or json.loads((tmp_path / "actions.json").read_text())[
        "active"] == []


def test_a_failed_apply_is_counted_and_leaves_nothing_in_force(tmp_path: Path, clock: FakeClock) -> None:
    built = engine(tmp_path, Recording(fail=True), clock)
    built.handle([alert()], "webhook")
    settle(built)
    assert built.document()["active"] == []
    assert value(built, "mtaq_actions_total", action="postfix_throttle", provider="google", result="failed") == 1


def test_a_restart_keeps_an_action_in_force_then_restores_it(tmp_path: Path, clock: FakeClock) -> None:
    first = Recording()
    built = engine(tmp_path, first, clock)
    built.handle([alert()], "webhook")
    settle(built)
    built.stop()
    second = Recording()
    clock.now += 600
    restarted = engine(tmp_path, second, clock)
    settle(restarted)
    assert second.calls == [("apply", "google")]  # applied again, with the recorded changes
    assert [a["id"] for a in restarted.document()["active"]] == ["postfix_throttle:google"]
    clock.now += 1201
    restarted.refresh()
    settle(restarted)
    assert second.calls == [("apply", "google"), ("restore", "google")]


def test_an_action_that_expired_while_down_is_restored_at_start(tmp_path: Path, clock: FakeClock) -> None:
    built = engine(tmp_path, Recording(), clock)
    built.handle([alert()], "webhook")
    settle(built)
    built.stop()
    clock.now += 3600
    later = Recording()
    restarted = engine(tmp_path, later, clock)
    settle(restarted)
    assert later.calls == [("restore", "google")]
    assert restarted.document()["active"] == []


def test_the_operator_restores_by_id(tmp_path: Path, clock: FakeClock) -> None:
    executor = Recording()
    built = engine(tmp_path, executor, clock)
    built.handle([alert()], "webhook")
    settle(built)
    assert not built.restore("postfix_throttle:yahoo")
    assert built.restore("postfix_throttle:google")
    settle(built)
    assert executor.calls[-1] == ("restore", "google")


def value(built: ActionEngine, name: str, **labels: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(type("R", (), {"collect": lambda self: built.families()})())
    return registry.get_sample_value(name, labels)


def test_metrics_are_zero_filled_and_count_decisions(tmp_path: Path, clock: FakeClock) -> None:
    built = engine(tmp_path, Recording(), clock)
    for provider in ("google", "yahoo"):
        assert value(built, "mtaq_action_active", action="postfix_throttle", provider=provider) == 0
        assert value(built, "mtaq_actions_total", action="postfix_throttle", provider=provider, result="applied") == 0
    assert value(built, "mtaq_actions_total", action="postfix_throttle", provider="other", result="applied") is None
    built.handle([alert()], "webhook")
    settle(built)
    assert value(built, "mtaq_actions_total", action="postfix_throttle", provider="google", result="applied") == 1
    assert value(built, "mtaq_action_active", action="postfix_throttle", provider="google") == 1
    assert value(built, "mtaq_action_expiry_timestamp_seconds", action="postfix_throttle",
                 provider="google") == clock.now + 1800


# -- payloads and configuration --------------------------------------------------------------------

WEBHOOK = {"version": "4", "groupKey": "{}", "status": "firing", "receiver": "mtaq-throttle", "extra": {"x": 1},
           "alerts": [{"status": "firing", "labels": {"alertname": "MtaqProviderRateLimited", "provider": "google",
                                                       "instance": "mta-1:10154"},
                       "annotations": {}, "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                       "generatorURL": "http://prom", "fingerprint": "abc123", "newField": True}]}


def api_alert(**labels: str) -> dict[str, Any]:
    """One entry of Alertmanager's ``GET /api/v2/alerts`` answer."""
    return {"labels": {"alertname": "MtaqProviderRateLimited", "provider": "google", "instance": "mta-1:10154",
                       "action": "throttle", **labels},
            "startsAt": "2026-12-01T10:00:00Z", "fingerprint": "p1", "status": {"state": "active"},
            "annotations": {}, "receivers": [{"name": "null"}]}


def test_pull_acts_on_listed_alerts_and_resolves_those_that_vanish(tmp_path: Path, clock: FakeClock) -> None:
    answers = [[api_alert()], [api_alert()], []]
    queries: list[httpx.URL] = []

    def alertmanager(request: httpx.Request) -> httpx.Response:
        queries.append(request.url)
        return httpx.Response(200, json=answers.pop(0))

    executor = Recording()
    configured = section(tmp_path, webhook={"enabled": False}, pull={"url": "http://am.test:9093", "interval": "5s"})
    built = ActionEngine(configured, {"postfix_throttle": executor}, providers=PROVIDERS, instances=["postfix"],
                         clock=clock, pull_transport=httpx.MockTransport(alertmanager))
    built.start()
    assert [job.name for job in built.jobs()] == ["actions", "actions_pull"]
    built._poll()
    settle(built)
    assert executor.calls == [("apply", "google")]
    assert queries[0].params.get_list("filter") == ['action="throttle"']
    assert queries[0].params["active"] == "true" and queries[0].params["silenced"] == "false"
    built._poll()  # still listed: extends, never a second apply
    assert [h["decision"] for h in built.document()["history"][:2]] == ["extended", "in_force"]
    built._poll()  # gone from the list: resolved
    assert built.document()["history"][0]["decision"] == "restore_scheduled"
    clock.now += 601
    built.refresh()
    settle(built)
    assert executor.calls == [("apply", "google"), ("restore", "google")]


def test_pull_and_state_failures_stay_visible_until_they_clear(tmp_path: Path, clock: FakeClock) -> None:
    up = {"ok": False}

    def alertmanager(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[]) if up["ok"] else httpx.Response(503, text="shutting down")

    executor = Recording()
    configured = section(tmp_path, pull={"url": "http://am.test:9093"})
    built = ActionEngine(configured, {"postfix_throttle": executor}, providers=PROVIDERS, instances=["postfix"],
                         clock=clock, pull_transport=httpx.MockTransport(alertmanager))
    built.start()
    built._poll()
    assert built.run_refresh() is False  # the next tick must not hide the failed poll
    assert "polling http://am.test:9093" in str(built.health.view().last_error)
    up["ok"] = True
    built._poll()
    assert built.run_refresh() is True
    # A state file that cannot be written fails the collector until a write succeeds again.
    Path(configured.state_file).unlink(missing_ok=True)
    Path(configured.state_file).mkdir()
    built.handle([alert()], "webhook")
    settle(built)
    assert built.run_refresh() is False
    assert "cannot write the actions state" in str(built.health.view().last_error)
    Path(configured.state_file).rmdir()
    built.handle([alert(fingerprint="f2")], "webhook")
    assert built.run_refresh() is True


def test_a_webhook_payload_tolerates_unknown_fields() -> None:
    [parsed] = parse_webhook(json.dumps(WEBHOOK).encode())
    assert (parsed.fingerprint, parsed.firing, parsed.name) == ("abc123", True, "MtaqProviderRateLimited")


@pytest.mark.parametrize(("body", "why"), [
    (b"{not json", "not JSON"),
    (json.dumps({**WEBHOOK, "version": "3"}).encode(), "version"),
    (json.dumps({**WEBHOOK, "alerts": [{"status": "firing"}]}).encode(), r"alerts\[0\]\.labels: Field required"),
    (json.dumps({**WEBHOOK, "alerts": [{**WEBHOOK["alerts"][0], "status": "maybe"}]}).encode(), "status"),
    (b"[" * 100000 + b"]" * 100000, "not JSON"),
])
def test_malformed_payloads(body: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        parse_webhook(body)


@pytest.mark.parametrize(("changes", "message"), [
    ({"rules": []}, "no rules map alerts to actions"),
    ({"state_file": None}, "state_file is needed"),
    ({"webhook": {}}, "the webhook needs webhook.bearer_token_file"),
    ({"rules": [{**RULE, "ttl": "2d"}]}, "ttl"),
    ({"rules": [{**RULE, "action": "postfix_delete_queue"}]}, "action"),
    ({"rules": [{**RULE, "params": {"destination_rate_delay": "2s; rm -rf /"}}]}, "destination_rate_delay"),
    ({"rules": [{**RULE, "params": {"smtp_tls_security_level": "none"}}]}, "unknown throttle parameter"),
    ({"rules": [{**RULE, "params": {"destination_concurrency_limit": 0}}]}, "from 1 to 1000"),
    ({"pull": {"url": "http://am:9093", "interval": "20m"}}, "shorter than two pull intervals"),
    ({"pull": {"url": "http://am:9093", "matchers": ["action=throttle"]}}, "expected a matcher"),
])
def test_bad_actions_configuration_is_refused(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    values = {"enabled": True, "dry_run": False, "state_file": str(tmp_path / "s.json"),
              "webhook": {"bearer_token_file": str(tmp_path / "t")}, "rules": [RULE], **changes}
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={"actions": values})
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


# -- the webhook over the real server --------------------------------------------------------------

@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    config = load_config(environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0"}, "collectors": {"postfix_queue": False},
        "actions": {"enabled": True, "dry_run": True, "agent_labels": {"instance": "mta-1:10154"},
                    "webhook": {"bearer_token_file": str(token)}, "rules": [RULE]}})
    started = Agent(config)
    started.start()
    yield started
    started.stop()


def post(agent: Agent, body: bytes, token: str | None = TOKEN, content_type: str = "application/json"
         ) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{agent.port}/api/v1/alerts", data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_webhook_http_contract(agent: Agent) -> None:
    body = json.dumps(WEBHOOK).encode()
    assert post(agent, body, token=None)[0] == 401
    assert post(agent, body, token="wrong")[0] == 401
    assert post(agent, b"{nope")[0] == 400
    assert post(agent, json.dumps({"version": "4"}).encode())[0] == 400
    assert post(agent, b"x" * (2 << 20))[0] == 413
    status, answer = post(agent, body)
    assert status == 202
    [decision] = json.loads(answer)["decisions"]
    assert (decision["decision"], decision["provider"]) == ("dry_run", "google")
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/api/v1/actions", timeout=10) as response:
        document = json.loads(response.read())
    assert document["dry_run"] is True and document["history"][0]["decision"] == "dry_run"


def test_the_actions_engine_runs_its_tick(agent: Agent) -> None:
    engine = agent.actions
    assert engine is not None
    wait_until(lambda: engine.health.view().last_run, 10, "the first tick")


def test_actions_list_and_restore_from_the_shell(tmp_path: Path) -> None:
    """The operator's commands against an agent with basic auth: restore is a write, so it needs
    the user; the password comes from a file, not the command line."""
    import bcrypt

    from exporter.commands.actions import main as actions_main

    token = tmp_path / "token"
    token.write_text(TOKEN)
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  ops: {bcrypt.hashpw(b'ops-secret', bcrypt.gensalt(rounds=4)).decode()}\n")
    password = tmp_path / "password"
    password.write_text("ops-secret\n")
    started = Agent(load_config(environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0", "config_file": str(web)}, "collectors": {"postfix_queue": False},
        "actions": {"enabled": True, "dry_run": True, "agent_labels": {"instance": "mta-1:10154"},
                    "webhook": {"bearer_token_file": str(token)}, "rules": [RULE]}}))
    started.start()
    try:
        assert started.actions is not None
        started.actions.handle([alert()], "webhook")
        user_url = f"http://ops@127.0.0.1:{started.port}"
        assert actions_main(["list", "--url", user_url, "--password-file", str(password), "--json"]) == 0
        assert actions_main(["restore", "postfix_throttle:google", "--url", f"127.0.0.1:{started.port}"]) == 2
        assert actions_main(["restore", "postfix_throttle:yahoo", "--url", user_url,
                             "--password-file", str(password)]) == 1  # none in force
        assert actions_main(["restore", "postfix_throttle:google", "--url", user_url,
                             "--password-file", str(password)]) == 0
        wait_until(lambda: not started.actions.document()["active"], 10, "the restore")
        assert started.actions.document()["history"][0]["why"] == "restored by the operator"
    finally:
        started.stop()
