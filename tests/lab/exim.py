"""A private, real Exim for tests and benchmarks, beside the Postfix lab.

Debian's ``exim4-daemon-light`` conflicts with ``postfix`` (both provide mail-transport-agent and
``/usr/sbin/sendmail``), so it is not installed: ``install()`` fetches the two packages with
``apt-get download`` into ``/var/cache/mtaq-lab/exim`` (kept, so a second run downloads nothing),
unpacks them there with ``dpkg -x``, creates the ``Debian-exim`` user as the package would, and
points ``/usr/sbin/exim4`` at the unpacked binary: Exim re-executes its compiled-in path for queue
runs and deliveries. Nothing else of the host changes: ``/usr/sbin/sendmail`` stays Postfix's, and a
``/usr/sbin/exim4`` that is not that link (a real Exim) is used as it is. ``libidn12`` comes from
the Makefile's ``system-deps``.

``EximLab`` runs ``exim4 -C <own config> -bd -q15s`` on a loopback port with its own spool, log
and pid file, relaying each provider's domain to its own loopback address of one
``ProviderSMTP`` (Exim keeps retry state per host: one shared address would let Gmail's 421 defer
every other provider). Needs root (Exim is setuid root and drops to ``Debian-exim``).

``python -m tests.lab.exim install`` does the installation alone (``make test`` runs it).

``install_backport()`` unpacks a second, newer Exim beside it: Debian 12's backports carry 4.98,
which writes the 23-character message ids of Exim 4.97 and later. It is fetched with a private apt
state (the host's sources and package lists are not touched) and only run directly (``-odq``
submissions, ``-bp``, ``-M…`` commands), never as a daemon: ``/usr/sbin/exim4`` stays the lab's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from collectors.exim.control import EximSnippet
from tests.helpers import free_port
from tests.lab.provider_smtp import REPLIES, ProviderSMTP, submit

CACHE = Path("/var/cache/mtaq-lab/exim")
UNPACKED = CACHE / "root"
PACKAGES = ("exim4-daemon-light", "exim4-base")
#: Where Exim re-executes itself from (its compiled-in BIN_DIRECTORY).
COMPILED_PATH = Path("/usr/sbin/exim4")
USER = "Debian-exim"
#: Provider domains of the simulator -> the loopback address standing for their MX host.
PROVIDER_HOSTS = {domain: f"127.0.0.{i}" for i, domain in enumerate(sorted(REPLIES), start=2)}
DEFAULT_HOST = "127.0.0.1"
LOG_SELECTOR = "+queue_time +queue_time_overall +deliver_time +outgoing_port +millisec +pid"


def binary() -> Path:
    """The unpacked ``exim4``."""
    return UNPACKED / "usr" / "sbin" / "exim4"


def available() -> str | None:
    """Why the Exim lab cannot run here, or None when it can (after ``install()``)."""
    if os.geteuid() != 0:
        return "the Exim lab needs root"
    if not shutil.which("apt-get") and not binary().exists():
        return "the Exim lab needs apt-get (Debian) to fetch exim4-daemon-light"
    return None


def _unpacked_debs() -> list[Path]:
    return [deb for package in PACKAGES for deb in CACHE.glob(f"{package}_*.deb")]


BACKPORT_CACHE = CACHE / "backports"


def debian_codename() -> str | None:
    """This host's Debian release name (``bookworm``), None when it is no Debian."""
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return None
    values = dict(line.partition("=")[::2] for line in lines if "=" in line)
    return values.get("VERSION_CODENAME", "").strip('"') or None if values.get("ID") == "debian" else None


def install_backport() -> Path:
    """Exim from ``<codename>-backports`` (fetched once, unpacked beside the lab's); its binary."""
    codename = debian_codename()
    root = BACKPORT_CACHE / "root"
    exim = root / "usr" / "sbin" / "exim4"
    if exim.exists():
        return exim
    state = BACKPORT_CACHE / "apt"
    for directory in (state / "lists" / "partial", state / "cache" / "archives" / "partial"):
        directory.mkdir(parents=True, exist_ok=True)
    sources = state / "sources.list"
    sources.write_text(f"deb http://deb.debian.org/debian {codename}-backports main\n")
    private = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
               "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
               "-o", "APT::Sandbox::User=root"]
    for argv in (["apt-get", "-q", *private, "update"], ["apt-get", "-q", *private, "download", "exim4-daemon-light"]):
        done = subprocess.run(argv, cwd=BACKPORT_CACHE, capture_output=True, text=True, check=False, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2] + argv[-1:])} ({codename}-backports) failed: {done.stderr.strip()}")
    deb = max(BACKPORT_CACHE.glob("exim4-daemon-light_*.deb"))  # the newest, if an older one was kept
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
    return exim


def install() -> Path:
    """Fetch (once), unpack, create the user, link the compiled-in path; returns the binary to run."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if len(_unpacked_debs()) < len(PACKAGES):
        done = subprocess.run(["apt-get", "download", *PACKAGES], cwd=CACHE, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get download {' '.join(PACKAGES)} failed: {done.stderr.strip()}")
    if not binary().exists():
        for deb in _unpacked_debs():
            subprocess.run(["dpkg", "-x", str(deb), str(UNPACKED)], check=True, capture_output=True)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", USER], check=True, capture_output=True)
    if COMPILED_PATH.is_symlink() and Path(os.readlink(COMPILED_PATH)) == binary():
        return COMPILED_PATH
    if COMPILED_PATH.exists() or COMPILED_PATH.is_symlink():
        return COMPILED_PATH  # a real Exim is installed: use it, change nothing
    COMPILED_PATH.symlink_to(binary())
    missing = subprocess.run(["ldd", str(binary())], capture_output=True, text=True, check=False).stdout
    if "not found" in missing:
        raise RuntimeError(f"{binary()} lacks libraries (make system-deps installs libidn12):\n{missing}")
    return COMPILED_PATH


class EximLab:
    """One Exim daemon under ``root`` relaying to the provider simulator on ``relay_port``.

    ``split_spool`` sets ``split_spool_directory``; ``retry`` is the retry rule for every host and
    address (short, so that retries run out within a test); ``snippet`` is the throttle
    configuration of ``collectors/exim/control.py``, put where its pieces go; ``routes`` sends more
    domains to other loopback addresses (same port).
    """

    def __init__(self, root: Path, *, relay_port: int, split_spool: bool = False, retry: str = "F,1m,15s",
                 snippet: EximSnippet | None = None, routes: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.spool = root / "spool"
        self.log_dir = root / "log"
        self.mainlog = self.log_dir / "mainlog"
        self.config = root / "exim.conf"
        self.pid_file = root / "exim.pid"
        self.smtp_port = free_port()
        self.relay_port = relay_port
        self.split_spool = split_spool
        self.retry = retry
        self.snippet = snippet
        self.routes = {**PROVIDER_HOSTS, **(routes or {})}
        self.exim = str(install())

    def _config(self) -> str:
        routes = " ; ".join(f"{domain} {host}" for domain, host in self.routes.items())
        remote = [f"port = {self.relay_port}", "allow_localhost"]
        snippet = self.snippet
        provider_transports = [block.rstrip("\n") + "".join(f"\n  {line}" for line in remote) + "\n"
                               for block in (snippet.provider_transports if snippet else ())]
        return "\n".join([
            "primary_hostname = mta.lab.test",
            f"exim_user = {USER}",
            f"exim_group = {USER}",
            "keep_environment =",
            f"spool_directory = {self.spool}",
            f"log_file_path = {self.log_dir}/%slog",
            f"pid_file_path = {self.pid_file}",
            f"daemon_smtp_ports = {self.smtp_port}",
            "local_interfaces = 127.0.0.1",
            "disable_ipv6 = true",
            "tls_advertise_hosts =",
            "domainlist local_domains = mta.lab.test",
            "hostlist relay_from_hosts = 127.0.0.1",
            "acl_smtp_rcpt = acl_check_rcpt",
            f"log_selector = {LOG_SELECTOR}",
            "log_timezone = true",
            f"split_spool_directory = {'true' if self.split_spool else 'false'}",
            "remote_max_parallel = 4",
            *(snippet.main if snippet else ()),
            "",
            "begin acl",
            "acl_check_rcpt:",
            "  accept hosts = +relay_from_hosts",
            "",
            "begin routers",
            "to_provider:",
            "  driver = manualroute",
            "  domains = ! +local_domains",
            f"  {snippet.router if snippet else 'transport = remote_smtp'}",
            f"  route_list = {routes} ; * {DEFAULT_HOST}",
            "  self = send",
            "",
            "begin transports",
            "remote_smtp:",
            "  driver = smtp",
            *(f"  {line}" for line in (*remote, *(snippet.transport if snippet else ()))),
            "",
            *provider_transports,
            "begin retry",
            f"*  *  {self.retry}",
            "",
            "begin rewrite",
            "",
        ])

    def start(self) -> EximLab:
        """Write the configuration, make the spool and log directories, start the daemon."""
        for directory in (self.spool, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
            shutil.chown(directory, USER, USER)
        for d in (self.root, *self.root.parents):  # Debian-exim must reach its spool
            if d.stat().st_mode & 0o005 != 0o005:
                d.chmod(d.stat().st_mode | 0o005)
        self.config.write_text(self._config())
        check = self.run("-bV")
        if check.returncode != 0:
            raise RuntimeError(f"exim -bV rejects the lab configuration: {check.stdout}{check.stderr}")
        done = self.run("-bd", "-q15s")
        if done.returncode != 0:
            raise RuntimeError(f"exim -bd failed: {done.stdout}{done.stderr}\n{self.log_tail()}")
        self.wait_for(lambda: self.pid_file.exists() and self.mainlog.exists()
                      and "daemon started" in self.mainlog.read_text(errors="replace"), 20, "the Exim daemon")
        return self

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``exim4 -C <config> args``."""
        return subprocess.run([self.exim, "-C", str(self.config), *args], capture_output=True, text=True,
                              check=check, timeout=60)

    def stop(self) -> None:
        """Stop the daemon and wait until it is gone (queue runners it started finish on their own)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def bp(self) -> str:
        """``exim -bp``: the reference listing of the queue."""
        return self.run("-bp", check=True).stdout

    def bpc(self) -> int:
        """``exim -bpc``: the reference count of the queue."""
        return int(self.run("-bpc", check=True).stdout.strip())

    def queue_run(self) -> None:
        """One queue run now, waiting for it (``exim -q``: retry times are respected)."""
        self.run("-q", check=True)

    def send(self, sender: str, recipients: Iterable[str], subject: str = "lab") -> None:
        """Submit one message over SMTP to the daemon."""
        submit(self.smtp_port, sender, recipients, subject, "test message from the mtaq-exporter Exim lab\n")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the main log (start-up errors go to the panic log too)."""
        out = []
        for path in (self.mainlog, self.log_dir / "paniclog"):
            try:
                out += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
        return "\n".join(out) or "(no log)"

    def wait_for(self, predicate: Callable[[], object], timeout: float = 60, what: str = "condition") -> None:
        """Poll ``predicate()`` until true; fail with the queue and the log tail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                queue = self.run("-bp").stdout[:3000]
                raise TimeoutError(f"timed out waiting for {what}\nqueue:\n{queue}\nlog:\n{self.log_tail()}")
            time.sleep(0.2)


def start_lab(root: Path, **options: object) -> tuple[EximLab, ProviderSMTP]:
    """A provider simulator on every provider's loopback address and an Exim relaying to it."""
    provider = ProviderSMTP(addresses=(DEFAULT_HOST, *PROVIDER_HOSTS.values())).start()
    try:
        return EximLab(root, relay_port=provider.port, **options).start(), provider  # type: ignore[arg-type]
    except Exception:
        provider.stop()  # no simulator left behind by a lab that did not start
        raise


if __name__ == "__main__" and sys.argv[1:] == ["install"]:
    print(f"exim lab: {install()} -> {binary()}")
