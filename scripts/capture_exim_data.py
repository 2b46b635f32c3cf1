"""Regenerate the Exim data captured from the real Exim lab (needs root; fetches Debian's exim4 once).

    .venv/bin/python -m scripts.capture_exim_data

Writes ``collectors/data/demo_exim_spool/`` (the ``input/`` and ``msglog/`` trees of a split
spool while mail for every simulated provider waits, one bounce frozen by Exim and one message
frozen by ``exim -Mf``), ``tests/fixtures/exim_queue/bp.txt`` (``exim -bp`` of that same spool:
the independent reference) and ``collectors/data/demo_exim_mainlog.log``, the instance's main log
until every retry has run out (deliveries, deferrals, self-inflicted deferrals, bounces, retry
timeouts, bounce messages, freezes). The demo shows them (package data); the tests and ``bench/``
read them there too. Review the diff like code.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

from tests.lab.exim import start_lab
from tests.lab.postfix import send_traffic

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
#: Package data, so that the demo can show them; the tests and bench/ read them there too.
DEMO_SPOOL = ROOT / "collectors" / "data" / "demo_exim_spool"
DEMO_MAINLOG = ROOT / "collectors" / "data" / "demo_exim_mainlog.log"
#: A message line of ``exim -bp`` (recipient lines are indented further and have no age).
HEAD = re.compile(r"^ *\d+[mhd] ")


def main() -> None:
    """Run the lab, save the spool while mail waits, then the log once retries ran out."""
    with tempfile.TemporaryDirectory(prefix="mtaq-exim-") as tmp:
        lab, provider = start_lab(Path(tmp), split_spool=True)
        try:
            send_traffic(lab)  # type: ignore[arg-type] - it only needs send()
            lab.send("billing@shop.example.com", ["paid@example.com", "late@gmail.com"])
            lab.send("postmaster@gmx.de", ["nobody@gmx.de"])
            lab.wait_for(lambda: "Frozen (delivery error message)" in lab.mainlog.read_text(), 60, "a frozen bounce")
            time.sleep(20)  # a queue run: second attempts, self-inflicted deferrals in the message logs
            lab.stop()
            time.sleep(2)  # a delivery the daemon had started ends
            waiting = [line.split()[2] for line in lab.bp().splitlines() if HEAD.match(line) and "frozen" not in line]
            lab.run("-Mf", waiting[0], check=True)
            shutil.rmtree(DEMO_SPOOL, ignore_errors=True)
            for part in ("input", "msglog"):
                shutil.copytree(lab.spool / part, DEMO_SPOOL / part)
            (FIXTURES / "exim_queue" / "bp.txt").write_text(lab.bp())
            lab.start()
            lab.wait_for(lambda: all("frozen" in line for line in lab.bp().splitlines() if HEAD.match(line)), 240,
                         "every retry to run out")
            DEMO_MAINLOG.write_text(lab.mainlog.read_text())
        finally:
            lab.stop()
            provider.stop()


if __name__ == "__main__":
    main()
