"""TLS and basic auth from an exporter-toolkit web-config.yml, over real sockets."""

import base64
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.agent import Agent
from exporter.config import ConfigError, load_config
from exporter.web_config import load_web_config

EXAMPLE = Path(__file__).parent.parent / "examples" / "web-config.yml"
GOOD = "Basic " + base64.b64encode(b"prometheus:scrape-secret").decode()


def get(url: str, authorization: str | None = None, context: ssl.SSLContext | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def start(web_config: Path) -> Agent:
    agent = Agent(load_config(None, environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0", "config_file": str(web_config)}, "postfix": {"enabled": False}}))
    agent.start()
    return agent


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "mtaq.key"),
                    "-out", str(tmp_path / "mtaq.crt")], check=True, capture_output=True)
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: mtaq.crt\n  key_file: mtaq.key\n"
                      + EXAMPLE.read_text().split("basic_auth_users:", 1)[1].join(["basic_auth_users:", ""]))
    return config


@pytest.fixture
def basic_only() -> Iterator[Agent]:
    agent = start(EXAMPLE)
    yield agent
    agent.stop()


def test_basic_auth(basic_only: Agent) -> None:
    base = f"http://127.0.0.1:{basic_only.port}"
    assert get(base + "/metrics") == 401
    assert get(base + "/metrics", "Basic " + base64.b64encode(b"prometheus:wrong").decode()) == 401
    assert get(base + "/metrics", "Basic " + base64.b64encode(b"nobody:scrape-secret").decode()) == 401
    assert get(base + "/metrics", "Basic !!!") == 401
    assert get(base + "/metrics", GOOD) == 200
    assert get(base + "/metrics", GOOD) == 200  # second time from the cache of accepted credentials
    assert get(base + "/", GOOD) == 200
    assert get(base + "/healthz") == 200 and get(base + "/readyz") == 200  # probes carry no credentials


def test_tls_and_basic_auth(tls_files: Path) -> None:
    agent = start(tls_files)
    try:
        trusted = ssl.create_default_context(cafile=str(tls_files.parent / "mtaq.crt"))
        assert get(f"https://127.0.0.1:{agent.port}/metrics", GOOD, trusted) == 200
        assert get(f"https://127.0.0.1:{agent.port}/metrics", None, trusted) == 401
        with pytest.raises(OSError):
            get(f"http://127.0.0.1:{agent.port}/metrics", GOOD)  # plain HTTP gets no answer
        assert get(f"https://127.0.0.1:{agent.port}/metrics", GOOD, trusted) == 200  # still serving
    finally:
        agent.stop()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_example_passes_promtool(tls_files: Path) -> None:
    for path in (EXAMPLE, tls_files):
        done = subprocess.run(["promtool", "check", "web-config", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("content", "message"), [
    ("basic_auth_users:\n  u: plaintext\n", "basic_auth_users: user 'u': expected a bcrypt hash"),
    ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "tls_server_config: [Errno 2]"),
    ("tls_server_config:\n  cert_file: a\n", "tls_server_config.key_file: Field required"),
    ("http_server_config:\n  http2: false\n", "http_server_config: unknown key"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n", "min_version: Input should be"),
])
def test_bad_web_config_names_the_key(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_web_config(str(path))
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_agent_exits_2_on_a_bad_web_config(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  u: plaintext\n")
    done = subprocess.run([sys.executable, "-m", "exporter.cli", "--web.config.file", str(path),
                           "--web.listen-address", "127.0.0.1:0"], capture_output=True, text=True, timeout=30,
                          env={"MTAQ_POSTFIX__ENABLED": "false", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "configuration error: web.config_file: basic_auth_users: user 'u'" in done.stderr
