"""The Exim actions against a real Exim running the documented configuration snippet: a pause holds
the provider's new mail in the queue ("domain is held", counted as Exim's own deferral) until it is
restored, and a throttle reaches the transport's ``max_parallel`` and ``serialize_hosts`` on the
next delivery, without a restart."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import Classifier
from collectors.exim.control import EximThrottleFiles, config_snippet
from collectors.exim.instance import EximInstance
from exporter.actions.executors import EximPause, EximThrottle
from tests.exim_reference import listing
from tests.lab import exim as exim_lab

pytestmark = pytest.mark.lab

DOMAINS = Classifier().provider_domains()
#: Where google.com's mail goes in this lab: a server that stalls (google.com is Google's own domain).
STALLING_HOST = "127.0.0.9"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[exim_lab.EximLab, Path]]:
    reason = exim_lab.available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("exim-actions")
    throttle_dir = root / "mtaq"
    throttle_dir.mkdir()
    snippet = config_snippet(str(throttle_dir), list(DOMAINS))
    lab, provider = exim_lab.start_lab(root / "exim", snippet=snippet, routes={"google.com": STALLING_HOST})
    try:
        yield lab, throttle_dir
    finally:
        lab.stop()
        provider.stop()


def files(exim: exim_lab.EximLab, throttle_dir: Path) -> list[EximThrottleFiles]:
    return [EximThrottleFiles(EximInstance(name="exim-lab", throttle_dir=str(throttle_dir), binary=exim.exim,
                                           config_file=str(exim.config)))]


def test_a_pause_holds_new_mail_until_restored(lab: tuple[exim_lab.EximLab, Path]) -> None:
    exim, throttle_dir = lab
    pause = EximPause(files(exim, throttle_dir), DOMAINS)
    changes = pause.apply("google", {}, {}, None)
    exim.send("ops@alerts.example.com", ["held@googlemail.com"])  # Google's; the simulator accepts it
    exim.wait_for(lambda: re.search(r"== held@googlemail\.com defer \(-23\)\S* (DT=\S+)?: domain is held",
                                    exim.mainlog.read_text()), 30, "Exim to hold the message")
    assert any(b["recipients"] == ["held@googlemail.com"] for b in listing(exim.bp()).values())
    pause.restore("google", {}, {}, changes)
    exim.queue_run()
    exim.wait_for(lambda: " => held@googlemail.com " in exim.mainlog.read_text(), 30, "delivery after the restore")
    assert (throttle_dir / "held_domains").read_text() == ""


class Stalling:
    """An SMTP server that accepts connections and answers none until released: a delivery to it
    stays in progress as long as the test wants."""

    def __init__(self, address: str, port: int) -> None:
        self.server = socket.create_server((address, port))
        self.connected = threading.Event()
        self.release = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            connection, _ = self.server.accept()
            with connection:
                self.connected.set()
                self.release.wait(60)
                connection.sendall(b"421 4.3.2 closing\r\n")

    def close(self) -> None:
        self.release.set()
        self.server.close()


def test_a_throttle_reaches_the_transport_without_a_restart(lab: tuple[exim_lab.EximLab, Path]) -> None:
    """``max_parallel=1`` for Google: the routers move Google's mail to its own transport, and while
    one delivery through it is in progress the next is deferred by Exim itself ("concurrency limit
    reached for transport", counted as self-inflicted); restored, Google's mail takes the common
    transport again. No restart: Exim reads the files on each delivery."""
    exim, throttle_dir = lab
    stalling = Stalling(STALLING_HOST, exim.relay_port)
    throttle = EximThrottle(files(exim, throttle_dir), DOMAINS)
    changes = throttle.apply("google", {"max_parallel": 1, "serialize_hosts": True}, {}, None)
    try:
        exim.send("ops@alerts.example.com", ["first@google.com"])  # stalls at the greeting
        assert stalling.connected.wait(30), "the first delivery never connected"
        exim.send("ops@alerts.example.com", ["second@gmail.com"])
        exim.wait_for(lambda: re.search(r"== second@gmail\.com R=\S+ T=mtaq_google defer \(-57\) (DT=\S+)?: "
                                        "concurrency limit reached for transport", exim.mainlog.read_text()),
                      30, "Exim to refuse a second parallel delivery to Google")
    finally:
        stalling.close()
        throttle.restore("google", {}, {}, changes)
    assert (throttle_dir / "throttle").read_text() == ""
    exim.send("ops@alerts.example.com", ["third@gmail.com"])
    exim.wait_for(lambda: re.search(r"third@gmail\.com .*(4\.7\.28|concurrency)", exim.mainlog.read_text()), 30,
                  "the next attempt")
    assert "third@gmail.com R=to_provider T=remote_smtp defer (-44)" in exim.mainlog.read_text()  # back on remote_smtp


def test_serialize_hosts_reaches_the_common_transport(lab: tuple[exim_lab.EximLab, Path]) -> None:
    """``serialize_hosts`` alone: Google's mail stays on remote_smtp, one connection per host."""
    exim, throttle_dir = lab
    exim.send("ops@alerts.example.com", ["serial@gmail.com"])
    message_id = next(i for i, b in listing(exim.bp()).items() if b["recipients"] == ["serial@gmail.com"])

    def matched() -> bool:
        done = exim.run("-d+transport", "-M", message_id)
        return "127.0.0.3 in serialize_hosts? yes" in done.stdout + done.stderr

    assert not matched()
    throttle = EximThrottle(files(exim, throttle_dir), DOMAINS)
    changes = throttle.apply("google", {"serialize_hosts": True}, {}, None)
    assert matched()
    throttle.restore("google", {}, {}, changes)
    assert not matched()
