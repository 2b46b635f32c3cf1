"""Small helpers shared by the test modules (sinks, clocks, waiting, ports, scrapes)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from collectors.families import CATALOGUE
from collectors.tailer import SourceStats

T = TypeVar("T")


class Recorder:
    """A tailer sink that keeps every batch (list.append is atomic, so threads may share it)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[bytes]]] = []

    def __call__(self, source: str, lines: list[bytes]) -> None:
        self.batches.append((source, list(lines)))

    def lines(self, source: str | None = None) -> list[bytes]:
        """Every delivered line, in order; only ``source``'s when given."""
        return [line for s, batch in self.batches for line in batch if source in (None, s)]


class FakeClock:
    """A clock the test moves by setting ``now``."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` the way a logger does."""
    with open(path, "ab") as f:
        f.write(data)


def wait_until(predicate: Callable[[], T], timeout: float = 30, what: str = "condition",
               interval: float = 0.01) -> T:
    """Poll ``predicate()`` until it is truthy and return its value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One /metrics scrape, parsed: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def mta_labels(name: str, labels: dict[str, str], mta: str = "postfix", instance: str = "postfix") -> dict[str, str]:
    """``labels`` plus ``mta``/``mta_instance`` where the catalogue says the sample ``name`` has
    them and the test did not name them: most tests read a single default Postfix instance."""
    family = CATALOGUE.get(name) or CATALOGUE.get(re.sub(r"_(bucket|sum|count)$", "", name))
    defaults = {"mta": mta, "mta_instance": instance}
    if family is None:
        return labels
    return {**{k: v for k, v in defaults.items() if k in family.labels}, **labels}


class AgentProcess:
    """``mtaq-exporter`` in a process of its own on a free loopback port, for tests that need its
    exit status, its output or its memory; ``stop()`` sends SIGTERM and returns the exit status.

    Its output is read all along by a thread (``output``, ``wait_for_line``): an agent logging at
    debug level would otherwise fill the pipe and block on its next log line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", *args, "--web.listen-address", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="agent-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        """What the agent printed so far (all of it once it has exited)."""
        return "".join(self._lines)

    def wait_for_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The first match of ``pattern`` in a line the agent printed, waiting for it."""
        def found() -> re.Match[str] | None:
            return next((m for line in list(self._lines) if (m := re.search(pattern, line))), None)

        return wait_until(found, timeout, f"the agent to print {pattern!r}", interval=0.05)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 30) -> AgentProcess:
        """Wait until the agent answers ``/healthz``."""
        def answers() -> bool:
            if self.proc.poll() is not None:
                self._reader.join(10)
                raise AssertionError(f"the agent exited {self.proc.returncode}: {self.output}")
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=2):
                    return True
            except OSError:
                return False

        wait_until(answers, timeout, "the agent to answer", interval=0.05)
        return self

    def rss_mb(self) -> float:
        """The agent's resident memory now."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0]) / 1024

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then the exit status (all output in ``output``)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.proc.returncode

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc.poll() is None:  # SIGTERM first: the agent (and the demo's temporary files) end cleanly
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)


class FakeTailer:
    """Stands in for ``collectors.tailer.Tailer``: the test hands lines to ``sink`` itself and
    sets ``stats`` and the checkpoint state; it records how the collector built it."""

    def __init__(self, paths: list[str], sink: Callable[[str, list[bytes]], None], **options: object) -> None:
        self.paths = paths
        self.sink = sink
        self.options = options
        self.stats = {path: SourceStats() for path in paths}
        self.checkpoint_error: str | None = None
        self.checkpoint_write_errors = 0
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False
