"""The ``http`` action against a real HTTP server on loopback: the body it posts on apply and on
restore, retries with back-off, a clear failure, and a slow endpoint that never delays a throttle."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exporter.actions.config import ActionsSection
from exporter.actions.engine import ActionEngine
from exporter.actions.executors import HttpAction
from tests.helpers import FakeClock
from tests.test_actions import PROVIDERS, TOKEN, Recording, alert, settle

RULE = {"alertname": "MtaqProviderRateLimited", "action": "http", "ttl": "30m",
        "params": {"body": {"event": "{event}", "provider": "{provider}", "instance": "{instance}",
                            "keep": ["{provider}", 3]}, "retries": 2, "timeout": "2s"}}


class Endpoint:
    """A loopback HTTP server recording each POST body; answers ``statuses`` in turn (then 200),
    and holds each request while ``hold`` is clear."""

    def __init__(self) -> None:
        self.bodies: list[object] = []
        self.statuses: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.hold.wait(30)
                endpoint.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/throttle"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint()
    yield served
    served.close()


def params(endpoint: Endpoint, **changes: object) -> dict:
    rule = ActionsSection.model_validate({"rules": [{**RULE, "params": {**RULE["params"], "url": endpoint.url,
                                                                        **changes}}]}).rules[0]
    return rule.params


def test_apply_and_restore_post_the_rendered_body(endpoint: Endpoint) -> None:
    action = HttpAction(backoff=0.01)
    labels = {"instance": "mta-1:10154", "provider": "google"}
    assert action.apply("google", params(endpoint), labels, None) == {}
    action.restore("google", params(endpoint), labels, {})
    assert endpoint.bodies == [
        {"event": "apply", "provider": "google", "instance": "mta-1:10154", "keep": ["google", 3]},
        {"event": "restore", "provider": "google", "instance": "mta-1:10154", "keep": ["google", 3]}]


def test_a_label_cannot_change_the_body_structure(endpoint: Endpoint) -> None:
    HttpAction(backoff=0.01).apply("google", params(endpoint), {"instance": '", "event": "restore'}, None)
    assert endpoint.bodies[0]["instance"] == '", "event": "restore'  # type: ignore[index]
    assert endpoint.bodies[0]["event"] == "apply"  # type: ignore[index]


def test_failed_posts_are_retried_with_backoff(endpoint: Endpoint) -> None:
    endpoint.statuses = [503, 502]
    HttpAction(backoff=0.01).apply("google", params(endpoint), {}, None)
    assert len(endpoint.bodies) == 3


def test_a_post_that_keeps_failing_is_an_error_naming_the_url(endpoint: Endpoint) -> None:
    endpoint.statuses = [500] * 3
    with pytest.raises(RuntimeError, match=re.escape(f"POST {endpoint.url} failed: ") + ".*500"):
        HttpAction(backoff=0.01).apply("google", params(endpoint), {}, None)
    assert len(endpoint.bodies) == 3  # the first try and two retries


def test_an_unreachable_endpoint_is_an_error(endpoint: Endpoint) -> None:
    dead = params(endpoint, url="http://127.0.0.1:9/throttle", retries=0)
    with pytest.raises(RuntimeError, match=re.escape("POST http://127.0.0.1:9/throttle failed")):
        HttpAction(backoff=0.01).apply("google", dead, {}, None)


def test_a_slow_endpoint_never_delays_a_throttle(tmp_path: Path, endpoint: Endpoint) -> None:
    """The http call waits on its endpoint while the throttle of another alert is applied."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    section = ActionsSection.model_validate({
        "enabled": True, "dry_run": False, "accept_unaddressed": True, "state_file": str(tmp_path / "actions.json"),
        "webhook": {"bearer_token_file": str(token)},
        "rules": [{**RULE, "params": {**RULE["params"], "url": endpoint.url}},
                  {"alertname": "MtaqProviderDeferralsHigh", "action": "postfix_throttle", "ttl": "30m",
                   "params": {"destination_rate_delay": "2s"}}]})
    throttle = Recording()
    built = ActionEngine(section, {"http": HttpAction(backoff=0.01), "postfix_throttle": throttle},
                         providers=PROVIDERS, instances=["postfix"], clock=FakeClock(1_800_000_000.0))
    built.start()
    try:
        endpoint.hold.clear()
        decisions = built.handle([alert("yahoo"), alert("google", fingerprint="f2",
                                                         alertname="MtaqProviderDeferralsHigh")], "webhook")
        assert [d["decision"] for d in decisions] == ["applied", "applied"]
        settle(built, remote=False)
        assert throttle.calls == [("apply", "google")] and endpoint.bodies == []
        endpoint.hold.set()
        settle(built, remote=True)
        assert [body["provider"] for body in endpoint.bodies] == ["yahoo"]  # type: ignore[index]
    finally:
        endpoint.hold.set()
        built.stop()
