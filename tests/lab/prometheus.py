"""A real Prometheus and Alertmanager for tests (Debian packages ``prometheus``,
``prometheus-alertmanager``), each on a free loopback port with its state in a private folder.

Typical use in an end-to-end test::

    am = promlab.start_alertmanager(tmp / "am", webhook_url=f"http://127.0.0.1:{agent}/api/v1/alerts",
                                    bearer_token="secret")
    prom = promlab.start_prometheus(tmp / "prom", targets=[f"127.0.0.1:{agent}"],
                                    rule_files=[promlab.RULES], alertmanager=am)
    try:
        promlab.wait_for_alert(prom.url, "MtaqProviderRateLimited", labels={"provider": "google"})
        print(promlab.query(prom.url, "mtaq_up"))
    finally:
        promlab.stop(prom)
        promlab.stop(am)

Short intervals (1 s scrape and evaluation) keep such tests fast; rules with long ``for:`` or
long rate windows still take their real time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.helpers import free_port

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "mtaq.rules.yml"


def binary(path: str) -> str | None:
    """The executable at ``path`` or of that name on PATH, or None when it is not installed."""
    if Path(path).is_file():
        return path
    return shutil.which(Path(path).name)


@dataclass
class Server:
    """A running Prometheus or Alertmanager."""

    name: str
    process: subprocess.Popen
    port: int
    workdir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the server wrote to stdout/stderr so far (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(server: Server, timeout: float = 30) -> None:
    """Wait until ``/-/ready`` answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            status, _ = _get(f"{server.url}/-/ready", timeout=1)
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise TimeoutError(f"{server.name} not ready after {timeout}s:\n{server.log()[-4000:]}")
        time.sleep(0.05)


def _spawn(name: str, argv: list[str], port: int, workdir: Path, timeout: float) -> Server:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=workdir)
    server = Server(name, process, port, workdir, log_path)
    wait_ready(server, timeout)
    return server


def start_prometheus(workdir: Path, *, targets: Iterable[str] = (), rule_files: Iterable[Path] = (),
                     alertmanager: Server | str | None = None, job: str = "mtaq",
                     scrape_interval: str = "1s", evaluation_interval: str = "1s",
                     extra_config: Mapping | None = None, binary_path: str = PROMETHEUS,
                     timeout: float = 30) -> Server:
    """Start Prometheus scraping ``targets`` (host:port) as job ``job`` with ``rule_files``.

    ``alertmanager`` is a Server from :func:`start_alertmanager` or a host:port. The config and
    the TSDB live under ``workdir``.
    """
    exe = binary(binary_path)
    if exe is None:
        raise FileNotFoundError(f"{binary_path} is not installed (Debian package prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                   "evaluation_interval": evaluation_interval},
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    if alertmanager is not None:
        address = alertmanager.address if isinstance(alertmanager, Server) else alertmanager
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [address]}]}]}
    config.update(extra_config or {})
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [exe, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=warn"]
    return _spawn("prometheus", argv, port, workdir, timeout)


def start_alertmanager(workdir: Path, *, webhook_url: str | None = None, bearer_token: str | None = None,
                       config: Mapping | None = None, binary_path: str = ALERTMANAGER,
                       timeout: float = 30) -> Server:
    """Start Alertmanager (clustering off).

    Without ``config``, every alert goes at once to ``webhook_url`` (or to no receiver), resolved
    notifications included, with ``bearer_token`` sent as ``Authorization: Bearer``.
    """
    exe = binary(binary_path)
    if exe is None:
        raise FileNotFoundError(f"{binary_path} is not installed (Debian package prometheus-alertmanager)")
    workdir.mkdir(parents=True, exist_ok=True)
    if config is None:
        receiver: dict = {"name": "default"}
        if webhook_url:
            hook: dict = {"url": webhook_url, "send_resolved": True}
            if bearer_token is not None:
                token_file = workdir / "webhook-token"
                token_file.write_text(bearer_token)
                token_file.chmod(0o600)
                hook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
            receiver["webhook_configs"] = [hook]
        config = {"route": {"receiver": "default", "group_by": ["..."], "group_wait": "0s",
                            "group_interval": "1s", "repeat_interval": "1h"},
                  "receivers": [receiver]}
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    port = free_port()
    argv = [exe, f"--config.file={config_path}", f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"]
    return _spawn("alertmanager", argv, port, workdir, timeout)


def stop(server: Server | None, timeout: float = 10) -> None:
    """Terminate the server (SIGTERM, then SIGKILL after ``timeout``)."""
    if server is None or server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout)


def api(url: str, path: str, params: Mapping[str, str] | None = None, timeout: float = 10) -> object:
    """GET ``url + path`` from a Prometheus-style JSON API and return ``data``."""
    full = f"{url}{path}"
    if params:
        full += "?" + urllib.parse.urlencode(params)
    status, body = _get(full, timeout)
    payload = json.loads(body)
    if status != 200 or payload.get("status") != "success":
        raise RuntimeError(f"GET {full} -> {status}: {payload.get('error', body[:500])}")
    return payload["data"]


def query(url: str, promql: str, at: float | None = None) -> list[dict]:
    """Instant query via /api/v1/query; returns the result list (``metric`` + ``value``)."""
    params = {"query": promql}
    if at is not None:
        params["time"] = str(at)
    data = api(url, "/api/v1/query", params)
    result = data["result"]  # type: ignore[index]
    return result if isinstance(result, list) else [{"metric": {}, "value": result}]


def query_value(url: str, promql: str) -> float | None:
    """The single value of an instant query, or None when the result is empty."""
    result = query(url, promql)
    if not result:
        return None
    if len(result) > 1:
        raise ValueError(f"{promql!r} returned {len(result)} series")
    return float(result[0]["value"][1])


def alerts(url: str) -> list[dict]:
    """Active (pending or firing) alerts of a Prometheus, from /api/v1/alerts."""
    return api(url, "/api/v1/alerts")["alerts"]  # type: ignore[index]


def rules(url: str) -> list[dict]:
    """Rule groups loaded by a Prometheus, from /api/v1/rules."""
    return api(url, "/api/v1/rules")["groups"]  # type: ignore[index]


def wait_for_alert(url: str, alertname: str, *, state: str = "firing", labels: Mapping[str, str] | None = None,
                   timeout: float = 60, interval: float = 0.25) -> dict:
    """Poll /api/v1/alerts until ``alertname`` (with ``labels``) is in ``state``; return it."""
    wanted = dict(labels or {})
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while True:
        seen = [a for a in alerts(url) if a["labels"].get("alertname") == alertname
                and all(a["labels"].get(k) == v for k, v in wanted.items())]
        for alert in seen:
            if alert["state"] == state:
                return alert
        if time.monotonic() > deadline:
            raise TimeoutError(f"{alertname} {wanted} not {state} after {timeout}s; seen: {seen}")
        time.sleep(interval)


class Receiver:
    """Records every POST (Alertmanager webhook and Slack notifications) on a loopback port."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((self.path, dict(self.headers), json.loads(body or b"{}")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
