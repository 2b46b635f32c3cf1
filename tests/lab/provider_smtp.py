"""A loopback SMTP server that answers like real mailbox providers, by recipient domain.

Postfix in the lab relays everything here, so the deferral and bounce replies in its log and
queue are real Postfix handling of provider-shaped answers (reference/exim-kumo-throttle.md §4).
"""

from __future__ import annotations

import contextlib
import smtplib
import socketserver
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage

# Recipient domain -> the reply to RCPT TO. Multi-line replies use "code-" continuation lines
# and a final "code " line; anything else makes Postfix wait for the rest of the reply.
REPLIES: dict[str, list[str]] = {
    "gmail.com": [
        "421-4.7.28 [127.0.0.1] Our system has detected an unusual rate of",
        "421-4.7.28 unsolicited mail originating from your IP address. To protect our",
        "421-4.7.28 users from spam, mail sent from your IP address has been temporarily",
        "421 4.7.28 rate limited. https://support.google.com/mail/answer/81126 - gsmtp",
    ],
    "yahoo.com": [
        "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
    ],
    "outlook.com": [
        "451 4.7.650 The mail server [127.0.0.1] has been temporarily rate limited due to IP "
        "reputation. For e-mail delivery information, see https://aka.ms/postmaster (S775)",
    ],
    "icloud.com": ["452 4.2.2 The email account that you tried to reach is over quota"],
    "gmx.de": ["550 5.1.1 <unknown@gmx.de>: Recipient address rejected: User unknown"],
    "comcast.net": [
        "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/127.0.0.1",
    ],
}
ACCEPT = ["250 2.1.5 Ok"]


#: What Gmail answers a sender that goes over its rate (reference/exim-kumo-throttle.md §4).
GMAIL_RATE_LIMIT = REPLIES["gmail.com"]


@dataclass
class Stats:
    """What the simulator saw, so tests can cross-check Postfix's own accounting."""

    delivered: list[str] = field(default_factory=list)
    delivered_at: list[tuple[float, str]] = field(default_factory=list)  # (time, domain) per recipient
    rejected: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered_to(self, domain: str, since: float, until: float) -> int:
        """Recipients of ``domain`` accepted between ``since`` and ``until``."""
        with self.lock:
            return sum(1 for at, d in self.delivered_at if d == domain and since <= at < until)


@dataclass
class RateLimit:
    """A provider that accepts ``limit`` recipients per ``window`` seconds, then answers like
    Gmail does to a burst, until the window has room again."""

    limit: int
    window: float
    accepted: list[float] = field(default_factory=list)

    def allows(self, now: float) -> bool:
        self.accepted = [t for t in self.accepted if now - t < self.window]
        if len(self.accepted) >= self.limit:
            return False
        self.accepted.append(now)
        return True


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def _send(self, lines: list[str]) -> None:
        self.wfile.write("".join(f"{line}\r\n" for line in lines).encode())
        self.wfile.flush()

    def handle(self) -> None:
        # Postfix may drop a connection at any point, as clients of real providers do.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError, TimeoutError):
            self._converse()

    def _converse(self) -> None:
        stats: Stats = self.server.stats  # type: ignore[attr-defined]
        self._send(["220 provider.test ESMTP simulator"])
        recipients: list[str] = []
        while True:
            raw = self.rfile.readline(8192)
            if not raw:
                return
            command = raw.decode("utf-8", "replace").strip()
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self._send(["250-provider.test", "250-PIPELINING", "250-8BITMIME", "250 SIZE 52428800"])
            elif verb == "MAIL":
                recipients = []
                self._send(["250 2.1.0 Ok"])
            elif verb == "RCPT":
                address = command.partition(":")[2].strip().strip("<>")
                domain = address.rpartition("@")[2].lower()
                reply = REPLIES.get(domain, ACCEPT)
                limit: RateLimit | None = self.server.limits.get(domain)  # type: ignore[attr-defined]
                if limit is not None:
                    with stats.lock:
                        reply = ACCEPT if limit.allows(time.time()) else GMAIL_RATE_LIMIT
                if reply is ACCEPT:
                    recipients.append(address)
                else:
                    with stats.lock:
                        stats.rejected[domain] = stats.rejected.get(domain, 0) + 1
                self._send(reply)
                if reply[-1].startswith("421"):
                    return
            elif verb == "DATA":
                if not recipients:
                    self._send(["554 5.5.1 No valid recipients"])
                    continue
                self._send(["354 End data with <CR><LF>.<CR><LF>"])
                while True:
                    line = self.rfile.readline(65536)
                    if not line or line in (b".\r\n", b".\n"):
                        break
                with stats.lock:
                    stats.delivered.extend(recipients)
                    now = time.time()
                    stats.delivered_at.extend((now, r.rpartition("@")[2].lower()) for r in recipients)
                self._send(["250 2.0.0 Ok: queued"])
            elif verb == "RSET":
                recipients = []
                self._send(["250 2.0.0 Ok"])
            elif verb == "QUIT":
                self._send(["221 2.0.0 Bye"])
                return
            else:
                self._send(["250 2.0.0 Ok"])


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 overflows when Postfix opens many connections at once:
    # the kernel then drops the handshake's last ACK, the client believes it is connected and
    # waits minutes for a greeting that never comes.
    request_queue_size = 256


class ProviderSMTP:
    """Start with ``start()``; ``port`` is a free loopback port chosen at start (the same on every
    one of ``addresses``). ``limits``
    (domain -> RateLimit) make domains answer bursts with Gmail's rate-limit reply; the test may
    change them while the simulator runs (``limits.clear()``: the provider recovered)."""

    def __init__(self, limits: dict[str, RateLimit] | None = None, addresses: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.stats = Stats()
        self.limits = limits if limits is not None else {}
        # More loopback addresses on the same port stand for distinct provider hosts (the Exim lab
        # routes each provider to its own, as MX records would: Exim keeps retry state per host).
        self.addresses = addresses
        self._servers: list[_Server] = []
        self.port = 0

    def start(self) -> ProviderSMTP:
        for address in self.addresses:
            server = _Server((address, self.port), _Handler)
            server.stats = self.stats  # type: ignore[attr-defined]
            server.limits = self.limits  # type: ignore[attr-defined]
            self.port = server.server_address[1]
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True, name="provider-smtp").start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


def submit(port: int, sender: str, recipients: Iterable[str], subject: str, text: str) -> None:
    """Submit one message over SMTP to an MTA of the lab listening on loopback ``port``."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(text)
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.send_message(message, from_addr=sender, to_addrs=list(recipients))
