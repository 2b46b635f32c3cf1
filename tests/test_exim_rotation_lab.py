"""Rotation while mail flows, with a real Exim and Debian's own logrotate rule for it.

``exim4-base`` rotates ``mainlog`` daily with ``compress``, ``delaycompress`` and ``nocreate``: the
file is renamed to ``mainlog.1`` (the one before becomes ``mainlog.2.gz``) and nothing creates a
new one until Exim writes its next line (it ``stat()``s the name before each write and reopens).
The tailer must drain the renamed file, wait out the gap and read the new file from its first line:
every line of every generation is counted once.
"""

from __future__ import annotations

import gzip
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import Classifier
from collectors.log_collector import LogCollector
from exporter.agent import build_collectors
from exporter.config import load_config
from exporter.summary import collect_samples
from tests.exim_reference import line_results, reference, series
from tests.helpers import wait_until
from tests.lab import exim as exim_lab

pytestmark = pytest.mark.lab

MESSAGES = 60


def debian_rule(log_dir: Path) -> str:
    """exim4-base's /etc/logrotate.d/exim4-base, pointed at the lab's log directory."""
    rule = (exim_lab.UNPACKED / "etc" / "logrotate.d" / "exim4-base").read_text()
    assert "nocreate" in rule and "delaycompress" in rule
    return rule.replace("/var/log/exim4/", f"{log_dir}/")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[exim_lab.EximLab]:
    reason = exim_lab.available()
    if reason:
        pytest.skip(reason)
    lab, provider = exim_lab.start_lab(tmp_path / "exim")
    yield lab
    lab.stop()
    provider.stop()


def generations(log_dir: Path) -> list[str]:
    """Every line of every generation of the main log, oldest file first."""
    lines = []
    for name in ("mainlog.2.gz", "mainlog.1", "mainlog"):
        path = log_dir / name
        if path.exists():
            with (gzip.open(path, "rt") if name.endswith(".gz") else open(path)) as f:
                lines += f.read().splitlines()
    return lines


def test_rotation_while_mail_flows_loses_nothing(lab: exim_lab.EximLab, tmp_path: Path) -> None:
    config = load_config(environ={}, overrides={
        "postfix": {"enabled": False}, "local_delivery": {"loopback": False},
        "log": {"from": "start", "poll_interval": "50ms"},
        "exim": {"instances": [{"name": "exim-lab", "log_path": str(lab.mainlog)}]},
        "collectors": {"exim_queue": False}})
    (collector,) = build_collectors(config, Classifier(config))
    assert isinstance(collector, LogCollector)
    rule = tmp_path / "exim4-base"
    rule.write_text(debian_rule(lab.log_dir))
    state = tmp_path / "logrotate.state"
    collector.start()
    try:
        def reopens() -> int:
            return int(sum(series(collect_samples([collector]), "mtaq_log_reopens_total", "mta").values()))

        def traffic(first: int) -> None:
            for i in range(first, first + MESSAGES // 3):
                lab.send("news@bulk.example.com", [f"reader{i}@example.com"], subject=f"rotation {i}")

        for rotation in range(3):
            sender = threading.Thread(target=traffic, args=(rotation * MESSAGES // 3,))
            sender.start()
            if rotation:  # rotate while the sender is busy; the tailer's reopen is the barrier
                before = reopens()
                done = subprocess.run(["logrotate", "-f", "-s", str(state), str(rule)], capture_output=True,
                                      text=True, check=False)
                assert done.returncode == 0, done.stderr
                wait_until(lambda b=before: reopens() > b, 60, "the tailer to follow the rotation")
            sender.join()
        lab.wait_for(lambda: sum(line.count(" => reader") for line in generations(lab.log_dir)) == MESSAGES, 60,
                     "every message delivered")
        names = sorted(p.name for p in lab.log_dir.glob("mainlog*"))
        assert names == ["mainlog", "mainlog.1", "mainlog.2.gz"]
        lines = generations(lab.log_dir)
        expected = line_results(lines)
        wait_until(lambda: series(collect_samples([collector]), "mtaq_log_lines_total", "result") == expected, 60,
                   "every line of every generation")
    finally:
        collector.stop()
    samples = collect_samples([collector])
    assert series(samples, "mtaq_delivery_attempts_total", "provider", status="sent") == reference(lines)["sent"]
    assert reference(lines)["sent"]["other"] == MESSAGES
    assert series(samples, "mtaq_messages_received_total", "mta") == {"exim": MESSAGES}
    assert reopens() >= 2
