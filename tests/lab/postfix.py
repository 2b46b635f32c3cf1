"""A private, real Postfix instance for tests, benchmarks and capturing demo data.

It runs from Debian's ``postfix`` package with its own config directory, queue, log file and
loopback SMTP port, and relays every message to ``ProviderSMTP`` (tests/lab/provider_smtp.py). ``send_traffic`` submits
the traffic mix the tests, the benchmarks and the demo data share.
Needs root (Postfix's master runs as root and drops privileges).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from tests.helpers import free_port
from tests.lab.provider_smtp import ProviderSMTP, submit

POSTFIX = "/usr/sbin/postfix"


def available() -> str | None:
    """Why the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the Postfix lab needs root"
    if not Path(POSTFIX).exists():
        return "Debian package postfix is not installed (run make setup as root)"
    return None


class PostfixLab:
    """One Postfix instance under ``root``; ``settings`` are extra main.cf lines."""

    def __init__(self, root: Path, *, relay_port: int, syslog_name: str = "postfix-lab",
                 settings: dict[str, str] | None = None) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"
        self.data_dir = root / "data"
        self.log_file = root / "log" / "maillog"
        self.smtp_port = free_port()
        self.relay_port = relay_port
        self.syslog_name = syslog_name
        self.settings = settings or {}

    @property
    def showq_path(self) -> Path:
        """The showq unix socket this instance serves."""
        return self.queue_dir / "public" / "showq"

    def _main_cf(self) -> dict[str, str]:
        base = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mta.lab.test",
            "mydomain": "lab.test",
            "myorigin": "lab.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.root),
            "syslog_name": self.syslog_name,
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "default_transport": "smtp",
            "relay_transport": "smtp",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_dns_support_level": "disabled",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "notify_classes": "",
            "biff": "no",
            "smtp_connection_cache_on_demand": "no",
            "queue_run_delay": "300s",
            "minimal_backoff_time": "300s",
            "maximal_backoff_time": "600s",
        }
        base.update(self.settings)
        return base

    def _master_cf(self) -> str:
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                fields[4] = "n"  # no chroot: the private queue has no copy of /etc
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.smtp_port}"
                line = "  ".join(fields)
            lines.append(line)
        return "\n".join(lines) + "\n"

    def start(self) -> PostfixLab:
        """Write the configuration, set permissions and start the instance."""
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.log_file.parent):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.root, *self.root.parents):  # the postfix user must reach its data directory
            if d.stat().st_mode & 0o005 != 0o005:
                d.chmod(d.stat().st_mode | 0o005)
        shutil.chown(self.data_dir, "postfix")
        self.log_file.touch()
        (self.config_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in self._main_cf().items()))
        (self.config_dir / "master.cf").write_text(self._master_cf())
        self._allow_alternate_config()
        self.postfix("set-permissions")
        self.postfix("start")
        deadline = time.monotonic() + 20
        while not self.showq_path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not create {self.showq_path}:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _allow_alternate_config(self) -> None:
        # postqueue/postsuper -c only accept directories that the default main.cf allows.
        current = subprocess.run(["postconf", "-h", "alternate_config_directories"],
                                 capture_output=True, text=True, check=False).stdout.split()
        if str(self.config_dir) not in current:
            subprocess.run(["postconf", "-e",
                            f"alternate_config_directories = {' '.join([*current, str(self.config_dir)])}"],
                           check=True, capture_output=True)

    def postfix(self, *args: str) -> None:
        """Run ``postfix -c DIR args``; a failure carries the instance's own log."""
        done = subprocess.run([POSTFIX, "-c", str(self.config_dir), *args], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed: {done.stdout}{done.stderr}\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the instance (quietly if it is not running)."""
        subprocess.run([POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, check=False)

    def abort(self) -> None:
        """Stop at once, for teardown."""
        subprocess.run([POSTFIX, "-c", str(self.config_dir), "abort"], capture_output=True, check=False)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the instance's maillog_file (where fatal start-up errors go)."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def queue_json(self) -> list[dict]:
        """``postqueue -j`` for this instance, parsed: the independent reference for queue tests."""
        out = subprocess.run(["postqueue", "-c", str(self.config_dir), "-j"], capture_output=True,
                             text=True, check=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now."""
        subprocess.run(["postqueue", "-c", str(self.config_dir), "-f"], capture_output=True, check=True)

    def send(self, sender: str, recipients: Iterable[str], subject: str = "lab") -> None:
        """Submit one message over SMTP to the instance's own smtpd."""
        submit(self.smtp_port, sender, recipients, subject, "test message from the mtaq-exporter lab\n")

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
        """Poll ``predicate()`` until true; fail with the log tail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                try:
                    queue = "\n".join(json.dumps(m)[:300] for m in self.queue_json()[:10])
                except (OSError, subprocess.SubprocessError) as exc:
                    queue = f"(postqueue failed: {exc})"
                sockets = subprocess.run(["ss", "-tanpo"], capture_output=True, text=True,
                                         check=False).stdout if shutil.which("ss") else "(no ss command)"
                sockets = "\n".join(line for line in sockets.splitlines() if f":{self.relay_port}" in line
                                    and "TIME-WAIT" not in line)
                raise TimeoutError(f"timed out waiting for {what}\nqueue:\n{queue}\nconnections to the provider "
                                   f"simulator:\n{sockets}\nlog:\n{self.log_tail()}")
            time.sleep(0.2)


def start_lab(root: Path, *, provider: ProviderSMTP | None = None, **settings: str) -> tuple[PostfixLab, ProviderSMTP]:
    """A provider simulator (``provider``, started here, or a new one) and a Postfix instance
    relaying to it; ``settings`` are extra main.cf lines."""
    provider = (provider or ProviderSMTP()).start()
    lab = PostfixLab(root, relay_port=provider.port, settings=settings)
    try:
        lab.start()
    except Exception:
        provider.stop()
        raise
    return lab, provider


# (sender, recipient domains): one message per recipient, the way bulk senders submit.
TRAFFIC = [
    ("ops@alerts.example.com", ["gmail.com", "example.com", "outlook.com"]),
    ("billing@shop.example.com", ["outlook.com", "icloud.com", "yahoo.com", "example.org", "gmail.com"]),
    ("news@bulk.example.com", ["yahoo.com", "yahoo.com", "gmail.com", "gmail.com", "outlook.com",
                               "comcast.net", "gmx.de", "icloud.com", "example.net", "example.com"]),
]


def send_traffic(lab: PostfixLab, rounds: int = 1,
                 traffic: list[tuple[str, list[str]]] = TRAFFIC) -> int:
    """Submit ``traffic`` ``rounds`` times; returns the number of messages sent."""
    sent = 0
    for r in range(rounds):
        for sender, domains in traffic:
            for i, domain in enumerate(domains):
                lab.send(sender, [f"user{r}{i}@{domain}"], subject=f"round {r}")
                sent += 1
    return sent
