"""HTTP endpoints of the agent over real sockets: metrics, health, landing page, errors, and
the server's route table with its per-route auth policies."""

import base64
import gzip
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import bcrypt
import pytest

from collectors.base import Auth, BaseCollector, Request, Response, Route
from collectors.families import Family
from exporter.agent import Agent
from exporter.config import ConfigError, load_config
from exporter.http import HTTPServer
from exporter.web_config import BasicAuth


class Scripted(BaseCollector):
    """A collector whose refresh outcome and families the test controls."""

    interval = 60

    def __init__(self) -> None:
        super().__init__("scripted", clock=lambda: 1000.0)
        self.error: str | None = None
        self.broken_render = False

    def describe(self) -> tuple[Family, ...]:
        return ()

    def refresh(self) -> None:
        if self.error:
            raise RuntimeError(self.error)

    def families(self) -> Iterator:
        if self.broken_render:
            raise ValueError("render exploded")
        return iter(())


@pytest.fixture
def served() -> Iterator[tuple[str, Scripted, Agent]]:
    collector = Scripted()
    agent = Agent(load_config(environ={}, overrides={"web": {"listen_address": "127.0.0.1:0"}}), [collector])
    port = agent.http.serve("127.0.0.1", 0)  # the agent's server without its scheduler: the test runs refreshes
    yield f"http://127.0.0.1:{port}", collector, agent
    agent.http.shutdown()


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_ready_only_after_first_run(served) -> None:
    base, collector, _ = served
    assert get(base + "/readyz")[0] == 503
    collector.run_refresh()
    assert get(base + "/readyz") [0] == 200
    assert get(base + "/healthz")[:2] == (200, b"ok\n")


def test_metrics_and_gzip(served) -> None:
    base, collector, _ = served
    collector.run_refresh()
    status, body, headers = get(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b'mtaq_collector_success{collector="scripted"} 1.0' in body
    assert b'mtaq_build_info{version="0.1.0"} 1.0' in body
    status, zipped, headers = get(base + "/metrics", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert b'mtaq_collector_success{collector="scripted"} 1.0' in gzip.decompress(zipped)
    assert b"process_resident_memory_bytes" in body


def test_failure_is_on_landing_page_and_in_metrics(served) -> None:
    base, collector, _ = served
    collector.error = "showq: Permission denied"
    collector.run_refresh()
    assert b'mtaq_collector_success{collector="scripted"} 0.0' in get(base + "/metrics")[1]
    page = get(base + "/")[1].decode()
    assert "FAILING" in page and "RuntimeError: showq: Permission denied" in page
    collector.error = None
    collector.run_refresh()
    page = get(base + "/")[1].decode()
    assert "FAILING" not in page and ">ok<" in page


def test_render_crash_is_contained(served) -> None:
    base, collector, _ = served
    collector.run_refresh()
    collector.broken_render = True
    status, body, _ = get(base + "/metrics")
    assert status == 200 and b'mtaq_collector_success{collector="scripted"} 0.0' in body
    assert collector.health.view().last_error == "ValueError: render exploded"


def test_unknown_path_and_method(served) -> None:
    base, _, _ = served
    assert get(base + "/nope")[0] == 404
    request = urllib.request.Request(base + "/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 405 and caught.value.headers["Allow"] == "GET"


def test_status_json(served) -> None:
    base, collector, _ = served
    collector.run_refresh()
    status = json.loads(get(base + "/api/v1/status")[1])
    assert status["collectors"]["scripted"]["success"] is True


def test_concurrent_scrapes(served) -> None:
    base, collector, _ = served
    collector.run_refresh()
    results: list[int] = []

    def scrape() -> None:
        for _ in range(20):
            results.append(get(base + "/metrics")[0])

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 160


# -- the route table and its auth policies ---------------------------------------------------------

def echo(request: Request) -> Response:
    return Response(200, request.method.encode())


def request(server: HTTPServer, path: str, method: str = "GET", authorization: str | None = None) -> Response:
    headers = {"authorization": authorization} if authorization else {}
    return server.dispatch(Request(method, path, "", headers, b""))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_auth_policy_per_route() -> None:
    users = {"prom": bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()}
    server = HTTPServer([Route("GET", "/probe", echo, Auth.NONE), Route("GET", "/data", echo),
                         Route("POST", "/hook", echo, Auth.BEARER)], basic_auth=BasicAuth(users),
                        bearer_token="t0ken")
    assert request(server, "/probe").status == 200
    assert request(server, "/data").status == 401
    assert request(server, "/data", authorization=basic("prom", "wrong")).status == 401
    assert request(server, "/data", authorization=basic("prom", "secret")).status == 200
    # a bearer route takes only its token, not the basic-auth credentials
    assert request(server, "/hook", "POST", basic("prom", "secret")).status == 401
    assert request(server, "/hook", "POST", "Bearer nope").status == 401
    denied = request(server, "/hook", "POST")
    assert denied.status == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
    assert request(server, "/hook", "POST", "Bearer t0ken").status == 200
    # unknown paths reveal nothing without credentials
    assert request(server, "/elsewhere").status == 401
    assert request(server, "/elsewhere", authorization=basic("prom", "secret")).status == 404


def test_bearer_route_without_a_token_is_closed() -> None:
    server = HTTPServer([Route("POST", "/hook", echo, Auth.BEARER)])
    assert request(server, "/hook", "POST", "Bearer ").status == 401
    assert request(server, "/hook", "POST", "Bearer anything").status == 401


def test_two_handlers_for_one_route_are_refused() -> None:
    with pytest.raises(ValueError, match="two handlers for GET /x"):
        HTTPServer([Route("GET", "/x", echo), Route("GET", "/x", echo)])



def test_ready_only_while_the_required_collectors_succeed(served) -> None:
    base, collector, _ = served
    collector.run_refresh()
    assert get(base + "/readyz")[:2] == (200, b"ready\n")
    collector.error = "showq: Permission denied"
    collector.run_refresh()
    status, body, _ = get(base + "/readyz")
    assert (status, body) == (503, b"not ready: scripted: failing (RuntimeError: showq: Permission denied)\n")
    assert get(base + "/healthz")[0] == 200  # liveness is another question


def test_readiness_can_leave_a_collector_out() -> None:
    collector = Scripted()
    collector.error = "down"
    collector.run_refresh()
    config = load_config(environ={}, overrides={"web": {"readiness_collectors": []}})
    response = Agent(config, [collector]).http.dispatch(Request("GET", "/readyz", "", {}, b""))
    assert response.status == 200


def test_an_unknown_readiness_collector_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"web\.readiness_collectors: unknown collector nope"):
        load_config(environ={}, overrides={"web": {"readiness_collectors": ["nope"]}})
