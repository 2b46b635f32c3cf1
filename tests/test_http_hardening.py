"""The HTTP server under the faults found when probing the agent: malformed and oversized requests
before authentication, bursts of scrapes, slow clients, HEAD, IPv6, a port in use, bcrypt limits
and the safe defaults for state-changing endpoints and personal data."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from exporter.web_config import BasicAuth
from tests.helpers import AgentProcess, free_port

ONLY_THE_AGENT = ("--no-collector.postfix_queue", "--no-collector.postfix_log", "--no-collector.dnsbl")


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with AgentProcess(*ONLY_THE_AGENT) as process:
        yield process.wait_ready()
        assert process.stop() == 0
        assert "Traceback" not in process.output, process.output


def raw_request(port: int, data: bytes, *, read: int = 200) -> bytes:
    """Send ``data`` as it is and return the start of the answer (b"" if the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        try:
            return sock.recv(read)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3", b"0x10", b"1, 2"])
def test_malformed_content_length_gets_400(agent: AgentProcess, length: bytes) -> None:
    answer = raw_request(agent.port, b"POST /api/v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: " + length
                         + b"\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 400"), answer


def test_300_mib_behind_a_negative_length_cost_no_memory(agent: AgentProcess) -> None:
    before = agent.rss_mb()
    chunk = b"x" * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/blocklists/check HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        try:
            while sent < 300:
                sock.sendall(chunk)
                sent += 1
        except OSError:
            pass  # the server answered and closed: what we want
        answer = b""
        with contextlib.suppress(OSError):
            answer = sock.recv(200)
    assert sent < 300, "the server kept reading an invalid body"
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 413")), answer
    assert agent.rss_mb() - before < 20


def test_a_body_above_the_cap_gets_413(agent: AgentProcess) -> None:
    answer = raw_request(agent.port, b"POST /api/v1/blocklists/check HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_oversized_headers_are_refused(agent: AgentProcess) -> None:
    # The request head is buffered up to one read (64 KiB) plus MAX_HEAD: never without bound.
    answer = raw_request(agent.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 200_000 + b"\r\n\r\n")
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431", b"HTTP/1.1 413")), answer


def test_head_answers_like_get_without_a_body(agent: AgentProcess) -> None:
    for path in ("/healthz", "/metrics", "/"):
        request = urllib.request.Request(agent.url(path), method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) > 0
            assert response.read() == b""


def test_200_concurrent_scrapes_are_all_answered(agent: AgentProcess) -> None:
    start = threading.Barrier(200)
    statuses: list[int] = []

    def scrape() -> None:
        start.wait()
        with urllib.request.urlopen(agent.url("/metrics"), timeout=60) as response:
            response.read()
            statuses.append(response.status)

    threads = [threading.Thread(target=scrape) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 200


def test_a_dripping_client_is_dropped_after_the_client_timeout() -> None:
    with AgentProcess(*ONLY_THE_AGENT, env={"MTAQ_WEB__CLIENT_TIMEOUT": "1s", "PATH": "/usr/bin:/bin"}) as process:
        process.wait_ready()
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as sock:
            began = time.monotonic()
            closed_after = None
            for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n":
                try:
                    sock.sendall(bytes([byte]))
                    time.sleep(2.5)  # longer than the timeout between two bytes
                    sock.setblocking(False)
                    if sock.recv(1) == b"":
                        closed_after = time.monotonic() - began
                        break
                except BlockingIOError:
                    pass
                except OSError:
                    closed_after = time.monotonic() - began
                    break
                finally:
                    sock.setblocking(True)
        assert closed_after is not None and closed_after < 10
        assert process.stop() == 0


def test_ipv6_listen_address() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", *ONLY_THE_AGENT,
                             "--web.listen-address", f"[::1]:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.parametrize(("address", "message"), [
    ("in use", "address already in use"),
    ("no-such-host.invalid:10154", "unknown host"),
])
def test_listen_errors_are_one_line_and_exit_2(address: str, message: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if address == "in use":
            address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run([sys.executable, "-m", "exporter.cli", *ONLY_THE_AGENT, "--web.listen-address",
                               address], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("mtaq-exporter:")]
    assert len(errors) == 1 and errors[0].startswith(f"mtaq-exporter: cannot listen on {address}: {message}")
    assert "Traceback" not in done.stderr


# -- basic auth -----------------------------------------------------------------------------------

USERS = {"prometheus": bcrypt.hashpw(b"scrape-secret", bcrypt.gensalt(rounds=4)).decode()}


def header(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


def test_unknown_users_and_long_passwords_cost_a_bcrypt_check_too(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth(USERS)
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        checked.append(password)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert not auth.allows(header("nobody", b"scrape-secret"))
    assert not auth.allows(header("prometheus", b"wrong"))
    # 73 bytes: bcrypt itself would raise; refused like a wrong password, after the same work.
    assert not auth.allows(header("prometheus", b"scrape-secret" + b"x" * 60))
    assert len(checked) == 3 and len(checked[2]) == 72
    assert auth.allows(header("prometheus", b"scrape-secret"))
    assert auth.allows(header("prometheus", b"scrape-secret"))  # remembered: no second bcrypt
    assert len(checked) == 4


@pytest.fixture(scope="module")
def authenticated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    web = tmp_path_factory.mktemp("web") / "web.yml"
    web.write_text("basic_auth_users:\n" + "".join(f"  {u}: {h}\n" for u, h in USERS.items()))
    with AgentProcess(*ONLY_THE_AGENT, "--web.config.file", str(web)) as process:
        yield process.wait_ready()
        process.stop()
        assert "Traceback" not in process.output, process.output


def status_of(url: str, authorization: str | None = None, method: str = "GET", body: bytes | None = None,
              content_type: str | None = None) -> int:
    headers = {k: v for k, v in (("Authorization", authorization), ("Content-Type", content_type)) if v}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_oversized_password_over_the_wire(authenticated: AgentProcess) -> None:
    assert status_of(authenticated.url("/metrics"), header("prometheus", b"p" * 100)) == 401
    assert status_of(authenticated.url("/metrics"), "Basic !!!not-base64") == 401
    assert status_of(authenticated.url("/metrics"), header("prometheus", b"scrape-secret")) == 200
    assert status_of(authenticated.url("/healthz")) == 200  # probes need no credentials


# -- safe defaults --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blocklists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A dnsbl section pointing at a resolver that never answers (the checks need not succeed)."""
    config = tmp_path_factory.mktemp("cfg") / "mtaq.yml"
    config.write_text(json.dumps({"dnsbl": {"enabled": True, "targets": {"ips": ["192.0.2.10"]},
                                            "nameservers": ["127.0.0.1:9"], "timeout": "0.2s",
                                            "lists": {"enable_only": ["bl.spamcop.net"]}}}))
    return config


def test_default_config_refuses_state_changes(blocklists: Path) -> None:
    with AgentProcess("--config.file", str(blocklists), "--no-collector.postfix_queue") as process:
        process.wait_ready()
        url = process.url("/api/v1/blocklists/check")
        assert status_of(url, method="POST", body=b"{}", content_type="application/json") == 403
        assert status_of(url, method="POST", body=b"x", content_type="text/plain") == 403
        assert process.stop() == 0


def test_state_changes_with_credentials_need_json_and_are_rate_limited(blocklists: Path, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n" + "".join(f"  {u}: {h}\n" for u, h in USERS.items()))
    good = header("prometheus", b"scrape-secret")
    with AgentProcess("--config.file", str(blocklists), "--web.config.file", str(web),
                      "--no-collector.postfix_queue") as process:
        process.wait_ready()
        url = process.url("/api/v1/blocklists/check")
        assert status_of(url, method="POST", body=b"{}", content_type="application/json") == 401
        # A cross-site form can only send simple content types: refused.
        assert status_of(url, good, "POST", b"a=b", "application/x-www-form-urlencoded") == 415
        assert status_of(url, good, "POST", b"{}", "application/json") == 202
        assert status_of(url, good, "POST", b"{}", "application/json") == 429
        assert process.stop() == 0


def test_hangup_is_ignored_and_terminate_writes_the_checkpoint(tmp_path: Path) -> None:
    log, checkpoint = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_text("Nov 27 10:00:01 mx postfix/qmgr[1]: ABCDEF1234: removed\n")
    with AgentProcess("--no-collector.postfix_queue", "--log.path", str(log), "--log.from", "start",
                      env={"MTAQ_LOG__CHECKPOINT_FILE": str(checkpoint), "PATH": "/usr/bin:/bin"}) as process:
        process.wait_ready()
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            process.proc.send_signal(sig)
        time.sleep(0.5)
        assert process.proc.poll() is None
        assert process.stop() == 0
    assert "received SIGHUP: ignored" in process.output and "received SIGUSR1: ignored" in process.output
    assert json.loads(checkpoint.read_text())[str(log)]["offset"] == log.stat().st_size


def test_terminate_right_after_start_ends_the_agent() -> None:
    """CI once saw the agent never end after a SIGTERM sent the moment it said "listening on": the
    handler set a ``threading.Event`` whose lock the main thread held while entering ``wait``. The
    handlers now take no lock; a signal at that moment (repeated, as the race is narrow) ends it."""
    for _ in range(5):
        with AgentProcess("--no-collector.postfix_queue", "--no-collector.postfix_log",
                          env={"PATH": "/usr/bin:/bin"}) as process:
            process.wait_for_line("listening on")
            assert process.stop() == 0, process.output
