"""Configuration loading: file, environment, flags, and precise errors with exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config

EXAMPLE = Path(__file__).parent.parent / "examples" / "mtaq.yml"


def test_defaults() -> None:
    config = load_config(None, environ={})
    assert config.web.listen_address == ":10154"
    assert config.lanes.names == ["high", "normal", "low"]
    assert config.postfix.queue_scan_interval == 30
    assert config.log.start_from == "end"


def test_example_config_loads() -> None:
    config = load_config(str(EXAMPLE), environ={})
    assert config.lanes.rules[0].lane == "high"
    assert config.postfix.instances[0].name == "postfix"


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    file = tmp_path / "c.yml"
    file.write_text("web:\n  listen_address: ':1000'\npostfix:\n  queue_scan_interval: 1m\n")
    env = {"MTAQ_WEB__LISTEN_ADDRESS": ":2000", "MTAQ_LOG__PATHS": "[/var/log/mail.log, /var/log/b.log]",
           "MTAQ_LOG__FROM": "start", "OTHER": "x"}
    config = load_config(str(file), environ=env)
    assert config.web.listen_address == ":2000"
    assert config.postfix.queue_scan_interval == 60
    assert config.log.paths == ["/var/log/mail.log", "/var/log/b.log"]
    assert config.log.start_from == "start"
    config = load_config(str(file), environ=env, overrides={"web": {"listen_address": "127.0.0.1:3000"}})
    assert config.web.listen_address == "127.0.0.1:3000"


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("web:\n  listen_address: nonsense\n", {}, "web.listen_address: expected [host]:port"),
    ("postfix:\n  queue_scan_interval: soon\n", {}, "postfix.queue_scan_interval: expected a duration"),
    ("postfix:\n  queue_scan_interval: 0\n", {}, "postfix.queue_scan_interval: Input should be greater than 0"),
    ("lanes:\n  rules:\n    - lane: urgent\n      match: {sender: '*'}\n", {}, "lanes: rules[0].lane"),
    ("webb: {}\n", {}, "webb: unknown key"),
    ("", {"MTAQ_WEB__LISTEN_ADRESS": "x"}, "web.listen_adress: unknown key [from MTAQ_WEB__LISTEN_ADRESS]"),
    ("", {"MTAQ_LOG__FROM": "middle"}, "log.from: Input should be 'start' or 'end'"),
])
def test_errors_name_the_key_and_source(tmp_path: Path, text: str, env: dict, expected: str) -> None:
    file = tmp_path / "bad.yml"
    file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(file), environ=env)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    file = tmp_path / "bad.yml"
    file.write_text("web:\n  listen_address: x\n  extra: 1\npostfix:\n  queue_scan_interval: -1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(file), environ={})
    assert len(caught.value.problems) == 3


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read"),
    ("a: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_unreadable_or_malformed_file(tmp_path: Path, content: str | None, expected: str) -> None:
    file = tmp_path / "c.yml"
    if content is not None:
        file.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_config(str(file), environ={})


def test_cli_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    file = tmp_path / "bad.yml"
    file.write_text("web:\n  listen_address: x\n")
    done = subprocess.run([sys.executable, "-m", "exporter.cli", "--config.file", str(file)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"mtaq-exporter: configuration error: web.listen_address: expected [host]:port, got 'x' "
        f"[from {file}]"]


def check_config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter.cli", "check-config", *args], capture_output=True,
                          text=True, timeout=30)


def test_check_config_command(tmp_path: Path) -> None:
    done = check_config("--config.file", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout


def test_check_config_checks_what_the_agent_would_read(tmp_path: Path) -> None:
    """Everything the agent would refuse or wait for: the web-config file, logs that are not there,
    a checkpoint directory that does not exist, a configured showq socket that does not exist."""
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  u: plaintext\n")
    done = check_config("--web.config.file", str(web))
    assert done.returncode == 2 and "web.config_file: basic_auth_users: user 'u'" in done.stderr
    file = tmp_path / "mtaq.yml"
    file.write_text(f"log:\n  paths: [{tmp_path / 'missing.log'}]\n  checkpoint_file: {tmp_path / 'no' / 'cp.json'}\n"
                    f"postfix:\n  enabled: true\n  instances:\n    - showq_path: {tmp_path / 'showq'}\n")
    done = check_config("--config.file", str(file))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"mtaq-exporter: configuration error: postfix instance postfix: configured showq socket {tmp_path / 'showq'} "
        "does not exist",
        f"mtaq-exporter: configuration error: mail log {tmp_path / 'missing.log'}: No such file or directory",
        f"mtaq-exporter: configuration error: checkpoint {tmp_path / 'no' / 'cp.json'}: directory {tmp_path / 'no'} "
        "is not writable or does not exist",
    ]


def test_environment_values_are_parsed_by_the_setting_type() -> None:
    config = load_config(environ={"MTAQ_WEB__TELEMETRY_PATH": "/metrics #x", "MTAQ_LOG__FROM": "start",
                                  "MTAQ_LOG__PATHS": "[/a.log, /b.log]", "MTAQ_WEB__UNAUTHENTICATED_WRITES": "true",
                                  "MTAQ_POSTFIX__INSTANCES": "[{name: postfix-bulk}]"})
    assert config.web.telemetry_path == "/metrics #x"  # text is taken verbatim, not as YAML
    assert config.log.paths == ["/a.log", "/b.log"]
    assert config.web.unauthenticated_writes is True
    assert config.postfix.instances[0].name == "postfix-bulk"


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_numbers_are_refused(value: str, tmp_path: Path) -> None:
    file = tmp_path / "c.yml"
    file.write_text(f"postfix:\n  queue_scan_interval: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(file), environ={})
    assert caught.value.problems[0].startswith("postfix.queue_scan_interval:")


def _documented_keys(node: object, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        keys = set()
        for key, value in node.items():
            keys |= {f"{prefix}{key}"} | _documented_keys(value, f"{prefix}{key}.")
        return keys
    if isinstance(node, list):
        return set().union(*(_documented_keys(item, prefix) for item in node)) if node else set()
    return set()


def _model_keys(model: type, prefix: str = "") -> set[str]:
    from pydantic import BaseModel

    keys = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        keys.add(key)
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys |= _model_keys(candidate, f"{key}.")
    return keys


def test_example_config_documents_every_key() -> None:
    """The annotated example is the configuration reference: it may not drift from the model."""
    import yaml

    from exporter.config import Config

    documented = _documented_keys(yaml.safe_load(EXAMPLE.read_text()))
    # providers.<name> and lanes.objectives.<lane> are open mappings (documented for one entry);
    # lists.add entries have the catalogue's fields.
    objectives = {k.replace("lanes.objectives.high.", "lanes.objectives.") for k in documented}
    missing = {k for k in _model_keys(Config) if k not in documented | objectives
               and not k.startswith(("providers.", "dnsbl.lists.add."))}
    assert missing == set()
