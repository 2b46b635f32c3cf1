"""Regenerate the bundled demo data from the real Postfix lab (needs root and Debian's postfix).

    .venv/bin/python -m scripts.capture_demo_data

Writes ``collectors/data/demo_queue.jsonl`` (``postqueue -j`` of a queue holding mail for every
lane and simulated provider) and ``collectors/data/demo_maillog.log`` (that instance's log,
including retries, bounces and expiries). Review the diff like code.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from tests.lab.postfix import send_traffic, start_lab

DATA = Path(__file__).resolve().parent.parent / "collectors" / "data"

def main() -> None:
    """Run the lab long enough for retries and expiries, then save queue and log."""
    with tempfile.TemporaryDirectory(prefix="mtaq-demo-") as tmp:
        lab, provider = start_lab(Path(tmp), queue_run_delay="2s", minimal_backoff_time="2s",
                                  maximal_backoff_time="4s", maximal_queue_lifetime="20s",
                                  bounce_queue_lifetime="20s")
        try:
            send_traffic(lab)
            time.sleep(25)  # first round: retried and expired
            send_traffic(lab)
            time.sleep(6)
            held = lab.queue_json()[0]["queue_id"]
            subprocess.run(["postsuper", "-c", str(lab.config_dir), "-h", held], check=True, capture_output=True)
            lab.stop()  # freeze the queue as it is now
            queue = subprocess.run(["postqueue", "-c", str(lab.config_dir), "-j"], capture_output=True,
                                   text=True, check=True).stdout
            (DATA / "demo_queue.jsonl").write_text(queue)
            (DATA / "demo_maillog.log").write_text(lab.log_file.read_text())
        finally:
            lab.abort()
            provider.stop()
    print(f"wrote {DATA / 'demo_queue.jsonl'} and {DATA / 'demo_maillog.log'}")


if __name__ == "__main__":
    main()
