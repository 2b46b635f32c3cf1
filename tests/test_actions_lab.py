"""The Postfix side of the actions against a real private Postfix: the one-time setup, a throttle
that leaves ``postconf -n`` exactly as it found it, and a pause whose mail goes out afterwards."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import Classifier
from collectors.postfix.control import PostfixControl
from collectors.postfix.instance import PostfixInstance
from exporter.actions.executors import PostfixPause, PostfixThrottle, Reloader
from exporter.actions.setup import TABLE_NAME, plan_setup
from tests.lab.postfix import PostfixLab, start_lab
from tests.lab.provider_smtp import ProviderSMTP

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostfixLab, ProviderSMTP]]:
    lab, provider = start_lab(tmp_path_factory.mktemp("actions"), queue_run_delay="1s", minimal_backoff_time="1s",
                              maximal_backoff_time="2s")
    try:
        yield lab, provider
    finally:
        lab.abort()
        provider.stop()


def postconf_n(lab: PostfixLab) -> str:
    return subprocess.run(["postconf", "-c", str(lab.config_dir), "-n"], capture_output=True, text=True,
                          check=True).stdout


def setup_cli(lab: PostfixLab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter.cli", "actions", "setup-postfix", "--config-dir",
                           str(lab.config_dir), *args], capture_output=True, text=True, timeout=120)


def test_setup_postfix_shows_applies_and_is_idempotent(lab: tuple[PostfixLab, ProviderSMTP]) -> None:
    postfix, provider = lab
    # A domain the operator already routes keeps its route.
    custom = postfix.config_dir / "custom_transport"
    custom.write_text(f"gmx.de smtp:[127.0.0.1]:{provider.port}\n")
    subprocess.run(["postconf", "-c", str(postfix.config_dir), "-e", f"transport_maps=texthash:{custom}"],
                   check=True)
    before = postconf_n(postfix)
    shown = setup_cli(postfix)
    assert shown.returncode == 0, shown.stderr
    assert "master.cf: + mtaq-google unix" in shown.stdout
    assert f"->  transport_maps = texthash:{postfix.config_dir}/{TABLE_NAME}, texthash:{custom}" in shown.stdout
    assert f"+gmail.com mtaq-google:[127.0.0.1]:{provider.port}" in shown.stdout
    assert "left alone: gmx.de" in shown.stdout
    assert postconf_n(postfix) == before  # only shown
    applied = setup_cli(postfix, "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "applied; postfix check passed" in applied.stdout
    control = PostfixControl(PostfixInstance(config_dir=str(postfix.config_dir)))
    table = f"texthash:{postfix.config_dir}/{TABLE_NAME}"
    assert control.lookup(table, "gmail.com") == f"mtaq-google:[127.0.0.1]:{provider.port}"
    assert control.lookup(table, "gmx.de") is None
    assert control.service("mtaq-google/unix") is not None
    again = setup_cli(postfix, "--apply")
    assert "nothing to change: already set up" in again.stdout
    # Mail to a provider still goes out, now through its own transport.
    sent = len(provider.stats.delivered)
    postfix.send("ops@alerts.example.com", ["user@googlemail.com"])
    postfix.wait_for(lambda: len(provider.stats.delivered) > sent, what="the delivery through mtaq-google")


def test_setup_refuses_an_instance_that_does_not_deliver(tmp_path: Path) -> None:
    config = tmp_path / "etc"
    config.mkdir()
    (config / "main.cf").write_text("default_transport = error\n")
    (config / "master.cf").write_text(Path("/etc/postfix/master.cf").read_text())
    plan = plan_setup(PostfixControl(PostfixInstance(config_dir=str(config))), {"google": ["gmail.com"]})
    assert plan.refusal == "default_transport is error: this instance does not deliver to the internet"


def test_throttle_and_restore_leave_postconf_as_found(lab: tuple[PostfixLab, ProviderSMTP]) -> None:
    postfix, _ = lab
    assert setup_cli(postfix, "--apply").returncode == 0
    control = PostfixControl(PostfixInstance(config_dir=str(postfix.config_dir)))
    control.set({"mtaq-yahoo_destination_concurrency_limit": "5"})  # the operator's own setting
    before = postconf_n(postfix)
    throttle = PostfixThrottle([control], Reloader(interval=0))
    params = {"destination_rate_delay": "2s", "destination_concurrency_limit": "2"}
    changes = throttle.apply("yahoo", params, {}, None)
    during = postconf_n(postfix)
    assert "mtaq-yahoo_destination_rate_delay = 2s" in during
    assert "mtaq-yahoo_destination_concurrency_limit = 2" in during
    assert throttle.apply("yahoo", params, {}, changes) == changes  # after a restart: the same record
    throttle.restore("yahoo", params, {}, changes)
    assert postconf_n(postfix) == before  # byte for byte, the operator's 5 included


def test_pause_holds_mail_and_restore_lets_it_go(lab: tuple[PostfixLab, ProviderSMTP]) -> None:
    postfix, provider = lab
    assert setup_cli(postfix, "--apply").returncode == 0
    control = PostfixControl(PostfixInstance(config_dir=str(postfix.config_dir)))
    before = postconf_n(postfix)
    pause = PostfixPause([control], Reloader(interval=0))
    changes = pause.apply("apple", {}, {}, None)
    assert "defer_transports = mtaq-apple" in postconf_n(postfix)
    sent = len(provider.stats.delivered)
    postfix.send("billing@shop.example.com", ["someone@me.com"])  # Apple's, accepted by the simulator
    postfix.wait_for(lambda: any(m["queue_name"] == "deferred" for m in postfix.queue_json()),
                     what="the paused message to wait in the deferred queue")
    assert len(provider.stats.delivered) == sent
    pause.restore("apple", {}, {}, changes)
    assert postconf_n(postfix) == before
    postfix.wait_for(lambda: len(provider.stats.delivered) > sent, what="the paused message to go out")


def test_every_provider_domain_is_in_the_table(lab: tuple[PostfixLab, ProviderSMTP]) -> None:
    postfix, _ = lab
    assert setup_cli(postfix, "--apply").returncode == 0
    table = (postfix.config_dir / TABLE_NAME).read_text()
    routed = {line.split()[0] for line in table.splitlines() if line and not line.startswith("#")}
    expected = {d for p, domains in Classifier().provider_domains().items() if p not in ("other", "local")
                for d in domains} - {"gmx.de"}  # routed by the operator's own table
    assert routed == expected
