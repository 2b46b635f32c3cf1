"""The Exim side of the actions on real files: throttle and pause write what the documented Exim
snippet reads, keep every other line byte for byte, and restore exactly; bad values and a missing
``throttle_dir`` are refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.classify import Classifier
from collectors.exim.control import HELD, PROVIDERS, THROTTLE, EximThrottleFiles, config_snippet
from collectors.exim.instance import EximInstance
from collectors.settings import ConfigError
from exporter.actions import build_actions
from exporter.actions.config import ActionRule
from exporter.actions.executors import EximPause, EximThrottle
from exporter.config import load_config

README = (Path(__file__).parent.parent / "README.md").read_text()
DOMAINS = Classifier().provider_domains()
OPERATOR = "# maintained by hand\ngoogle: max_parallel=5\nother.example.net:  max_parallel=3\n\n"


def files(tmp_path: Path, name: str = "exim") -> EximThrottleFiles:
    return EximThrottleFiles(EximInstance(name=name, throttle_dir=str(tmp_path)))


def test_throttle_then_restore_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    (tmp_path / THROTTLE).write_text(OPERATOR)
    throttle = EximThrottle([files(tmp_path)], DOMAINS)
    changes = throttle.apply("google", {"serialize_hosts": True}, {}, None)
    assert (tmp_path / THROTTLE).read_text() == (
        "# maintained by hand\ngoogle: serialize_hosts=yes\nother.example.net:  max_parallel=3\n\n")
    assert changes == {"exim": {"google": "max_parallel=5"}}
    # Applied again after a restart, with what was recorded: the original stays what restore puts back.
    assert throttle.apply("google", {"serialize_hosts": True}, {}, changes) == changes
    throttle.restore("google", {}, {}, changes)
    assert (tmp_path / THROTTLE).read_text() == OPERATOR


def test_a_throttle_that_was_not_there_goes_away_again(tmp_path: Path) -> None:
    throttle = EximThrottle([files(tmp_path, "exim-a"), files(tmp_path / "b", "exim-b")], DOMAINS)
    (tmp_path / "b").mkdir()
    changes = throttle.apply("yahoo", {"serialize_hosts": True}, {}, None)
    assert changes == {"exim-a": {"yahoo": None}, "exim-b": {"yahoo": None}}
    assert (tmp_path / THROTTLE).read_text() == "yahoo: serialize_hosts=yes\n"
    providers = (tmp_path / PROVIDERS).read_text().splitlines()
    assert "gmail.com: google" in providers and "yahoo.com: yahoo" in providers
    assert oct((tmp_path / THROTTLE).stat().st_mode & 0o777) == "0o644"
    throttle.restore("yahoo", {}, {}, changes)
    assert (tmp_path / THROTTLE).read_text() == "" and (tmp_path / "b" / THROTTLE).read_text() == ""


def test_pause_holds_the_provider_domains_and_restore_keeps_the_operators(tmp_path: Path) -> None:
    (tmp_path / HELD).write_text("gmail.com: held by the operator\nexample.org\n")
    pause = EximPause([files(tmp_path)], DOMAINS)
    changes = pause.apply("google", {}, {}, None)
    held = (tmp_path / HELD).read_text().splitlines()
    assert held[:2] == ["gmail.com: google", "example.org"]
    assert set(DOMAINS["google"]) <= {line.split(":")[0] for line in held}
    assert changes["exim"]["gmail.com"] == "held by the operator"
    pause.restore("google", {}, {}, changes)
    assert (tmp_path / HELD).read_text() == "gmail.com: held by the operator\nexample.org\n"


def test_a_failure_half_way_restores_what_was_done(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "missing"
    good.mkdir()
    throttle = EximThrottle([files(good, "exim-a"), files(bad, "exim-b")], DOMAINS)
    with pytest.raises(OSError):
        throttle.apply("google", {"serialize_hosts": True}, {}, None)
    assert (good / THROTTLE).read_text() == ""  # exim-a is not left throttled alone


@pytest.mark.parametrize(("key", "value"), [("gmail.com\nx", "1"), ("Gmail", "x"), ("google", "max_parallel=1\nx: y"),
                                            ("google", "${run{/bin/sh}}"), ("", "x"), ("../etc", "x")])
def test_nothing_unchecked_reaches_a_file(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ValueError, match="refusing"):
        files(tmp_path).set_many(THROTTLE, {key: value})
    assert not (tmp_path / THROTTLE).exists()


@pytest.mark.parametrize(("action", "params", "message"), [
    ("exim_throttle", {}, "needs at least one of max_parallel, serialize_hosts"),
    ("exim_throttle", {"max_parallel": 0}, "max_parallel: expected a whole number from 1 to 1000"),
    ("exim_throttle", {"max_parallel": "2"}, "max_parallel: expected a whole number"),
    ("exim_throttle", {"serialize_hosts": "yes"}, "serialize_hosts: expected true"),
    ("exim_throttle", {"connection_max_messages": 5}, "unknown exim_throttle parameter"),
    ("exim_pause", {"max_parallel": 1}, "exim_pause takes no params"),
])
def test_bad_exim_action_params_are_refused(action: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ActionRule(alertname="A", action=action, params=params, ttl=3600)


def test_an_exim_action_without_a_throttle_dir_stops_the_agent_naming_the_key(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    config = load_config(environ={}, overrides={
        "exim": {"instances": [{"spool_directory": str(tmp_path)}]},
        "actions": {"enabled": True, "accept_unaddressed": True, "webhook": {"bearer_token_file": str(token)},
                    "rules": [{"alertname": "A", "action": "exim_pause", "ttl": "1h"}]}})
    with pytest.raises(ConfigError, match=r"rules\[0\].action: exim_pause needs exim.instances\[\].throttle_dir"):
        build_actions(config, Classifier(config))


def test_the_readme_shows_the_snippet_the_lab_runs() -> None:
    snippet = config_snippet("/etc/exim4/mtaq", ["google"])
    for line in (*snippet.main, snippet.router, *snippet.transport, *snippet.provider_transports[0].splitlines()):
        assert line.strip() in README, line


def test_max_parallel_needs_the_providers_own_transport(tmp_path: Path) -> None:
    """Routers move a provider with a max_parallel to mtaq_<provider>: without that transport its
    mail would defer, so the throttle is refused (and nothing is written) when Exim cannot show it."""
    instance = EximInstance(name="exim", throttle_dir=str(tmp_path), binary="/bin/true")
    throttle = EximThrottle([EximThrottleFiles(instance)], DOMAINS)
    with pytest.raises(RuntimeError, match="exim instance exim has no transport mtaq_google"):
        throttle.apply("google", {"max_parallel": 1}, {}, None)
    assert not (tmp_path / THROTTLE).exists()
    broken = EximInstance(name="exim", throttle_dir=str(tmp_path), binary=str(tmp_path / "no-exim"))
    with pytest.raises(RuntimeError, match="cannot confirm that transport mtaq_google exists"):
        EximThrottle([EximThrottleFiles(broken)], DOMAINS).apply("google", {"max_parallel": 1}, {}, None)
