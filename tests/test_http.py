"""HTTP endpoints of the agent over real sockets: metrics, health, landing page, errors."""

import gzip
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from collectors.base import BaseCollector
from exporter.http import AgentHTTP
from exporter.registry import build_registry


class Scripted(BaseCollector):
    """A collector whose refresh outcome and families the test controls."""

    id = "scripted"
    interval = 60

    def __init__(self) -> None:
        super().__init__(clock=lambda: 1000.0)
        self.error: str | None = None
        self.broken_render = False

    def refresh(self) -> None:
        if self.error:
            raise RuntimeError(self.error)

    def families(self) -> Iterator:
        if self.broken_render:
            raise ValueError("render exploded")
        return iter(())


@pytest.fixture
def served() -> Iterator[tuple[str, Scripted, AgentHTTP]]:
    collector = Scripted()
    http = AgentHTTP(build_registry([collector]), [collector])
    server = http.serve("127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_address[1]}", collector, http
    http.shutdown()


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
    assert collector.health.last_error == "ValueError: render exploded"


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
    import json
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
