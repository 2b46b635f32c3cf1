"""``mtaq-exporter healthcheck``: it asks the agent the configuration describes (flags, variables,
file; TLS from the web-config file), or the agent whose command line it reads (``--agent-pid``,
what the image's HEALTHCHECK does), and says healthy (0), unhealthy (1) or why it cannot (2)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.agent import Agent
from exporter.commands import healthcheck
from exporter.config import load_config
from tests.helpers import free_port, wait_until

NO_MTA = ["--no-collector.postfix_queue", "--no-collector.postfix_log"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = healthcheck.main(argv)
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def agent(web: dict[str, str]) -> Agent:
    started = Agent(load_config(None, environ={}, overrides={"web": web, "postfix": {"enabled": False}}))
    started.start()
    return started


@pytest.fixture
def plain() -> Iterator[Agent]:
    started = agent({"listen_address": "127.0.0.1:0"})
    yield started
    started.stop()


@pytest.fixture
def tls_config(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=mta.example", "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt")],
                   check=True, capture_output=True)
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    return config


def test_healthy_agent_on_the_flagged_address(plain: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["--web.listen-address", f"127.0.0.1:{plain.port}"], capsys)
    assert (status, out) == (0, f"healthy: http://127.0.0.1:{plain.port}/healthz: HTTP 200\n")


def test_the_address_comes_from_the_file_and_the_environment_like_the_agents(
        plain: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mtaq.yml"
    config.write_text(f"web:\n  listen_address: ':{plain.port}'\n")
    assert run(["--config.file", str(config)], capsys)[:2] == (
        0, f"healthy: http://127.0.0.1:{plain.port}/healthz: HTTP 200\n")
    monkeypatch.setenv("MTAQ_WEB__LISTEN_ADDRESS", f"127.0.0.1:{plain.port}")
    assert run([], capsys)[0] == 0


def test_nothing_listening_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    status, out, _ = run(["--web.listen-address", f"127.0.0.1:{port}"], capsys)
    assert status == 1
    assert out == f"unhealthy: cannot reach http://127.0.0.1:{port}/healthz: Connection refused\n"


def test_tls_from_the_web_config_file(tls_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = agent({"listen_address": "127.0.0.1:0", "config_file": str(tls_config)})
    try:
        status, out, _ = run(["--web.listen-address", f"127.0.0.1:{started.port}",
                              "--web.config.file", str(tls_config)], capsys)
        assert (status, out) == (0, f"healthy: https://127.0.0.1:{started.port}/healthz: HTTP 200\n")
        # Without the web-config file the check speaks plain HTTP to a TLS port: no answer.
        assert run(["--web.listen-address", f"127.0.0.1:{started.port}"], capsys)[0] == 1
    finally:
        started.stop()


def test_client_certificates_required_cannot_be_checked(tls_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tls_config.write_text(tls_config.read_text() + "  client_auth_type: RequireAndVerifyClientCert\n"
                                                   "  client_ca_file: tls.crt\n")
    status, _, err = run(["--web.config.file", str(tls_config)], capsys)
    assert status == 2
    assert "web.config_file: tls_server_config.client_auth_type demands a client certificate" in err


def test_bad_configuration_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["--web.listen-address", "nowhere"], capsys)
    assert status == 2
    assert "configuration error: web.listen_address: expected [host]:port, got 'nowhere'" in err
    status, _, err = run(["--timeout", "0"], capsys)
    assert status == 2 and "--timeout: expected a positive number of seconds" in err


def test_agent_pid_reads_the_running_agents_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """The console script, as the image runs it (``python -m exporter.cli`` would not be found)."""
    port = free_port()
    agent_process = subprocess.Popen([str(Path(sys.executable).parent / "mtaq-exporter"), *NO_MTA, "--log.level",
                                      "warning", "--web.listen-address", f"127.0.0.1:{port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: run(["--web.listen-address", f"127.0.0.1:{port}"], capsys)[0] == 0,
                   what="the agent to answer", interval=0.1)
        status, out, _ = run(["--agent-pid", str(agent_process.pid)], capsys)
        assert (status, out) == (0, f"healthy: http://127.0.0.1:{port}/healthz: HTTP 200\n")
        status, _, err = run(["--agent-pid", str(agent_process.pid), "--web.listen-address", ":1"], capsys)
        assert status == 2 and "remove --web.listen-address" in err
    finally:
        agent_process.terminate()
        agent_process.wait(timeout=30)


@pytest.mark.parametrize(("argv", "flags"), [
    (["/opt/mtaq/bin/python", "/opt/mtaq/bin/mtaq-exporter", "--web.listen-address=:9999"],
     ["--web.listen-address=:9999"]),
    (["/run/podman-init", "--", "/opt/mtaq/bin/mtaq-exporter", "--config.file", "/etc/mtaq/mtaq.yml"],
     ["--config.file", "/etc/mtaq/mtaq.yml"]),
    (["/opt/mtaq/bin/python", "/opt/mtaq/bin/mtaq-exporter", "demo", "--web.listen-address", ":8080"],
     ["--web.listen-address", ":8080"]),
    (["mtaq-exporter"], []),
])
def test_agent_arguments_from_a_command_line(tmp_path: Path, argv: list[str], flags: list[str]) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    assert healthcheck.agent_arguments(7, proc=tmp_path) == flags


@pytest.mark.parametrize(("argv", "complaint"), [
    (["/usr/sbin/nginx", "-g", "daemon off;"], "process 7 is not mtaq-exporter"),
    (["/opt/mtaq/bin/mtaq-exporter", "qshape", "--json"], "runs 'mtaq-exporter qshape', which serves no HTTP"),
    (None, "cannot read the command line of process 7"),
])
def test_agent_arguments_of_something_else_exit_2(tmp_path: Path, argv: list[str] | None, complaint: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if argv is not None:
        (tmp_path / "7").mkdir()
        (tmp_path / "7" / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv))
    with pytest.raises(SystemExit) as exited:
        healthcheck.agent_arguments(7, proc=tmp_path)
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err


def test_the_readme_documents_the_command_and_its_options() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "| `mtaq-exporter healthcheck` |" in readme
    assert "`--agent-pid PID`" in readme and "`--timeout SECONDS`" in readme
    assert "`mtaq-exporter healthcheck --agent-pid 1`" in readme
