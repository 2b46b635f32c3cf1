"""A fake DNS blocklist server on loopback: real DNS packets over UDP, answers set by the test.

dnslib's ``DNSServer`` runs a threaded UDP server on 127.0.0.1 and a free port; ``FakeDnsbl``
holds the zone data and answers each name with A and TXT records, NXDOMAIN, NODATA, SERVFAIL,
REFUSED or silence (a dropped query, so the client times out), optionally after a delay. It
counts the queries it receives and the most it had in flight at once, so tests can check
budgets and the concurrency cap. ``standard_world()`` fills in the scenario the tests and the
benchmark share.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Self

from dnslib import CNAME, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSError, DNSHandler, DNSLogger, DNSServer

from collectors.dnsbl_catalogue import DnsblSettings


@dataclass(frozen=True)
class Entry:
    """How one name (or every name under a zone) answers.

    Malformed answers, as broken resolvers and middleboxes send them: ``owner`` puts the A
    records under another name than the one asked; ``txt_for_a`` answers TXT to an A question;
    ``cname`` answers a CNAME to that name, followed by the target's A records if it has any
    (a CNAME to a name without an entry dangles).
    """

    a: tuple[str, ...] = ()
    txt: tuple[str, ...] = ()
    rcode: str = "NOERROR"
    drop: bool = False
    owner: str | None = None
    txt_for_a: bool = False
    cname: str | None = None


class FakeDnsbl(BaseResolver):
    """Loopback DNS server with editable answers; unknown names answer NXDOMAIN."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._names: dict[str, Entry] = {}
        self._zones: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self.queries: list[tuple[str, str]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._server = DNSServer(self, address="127.0.0.1", port=0, logger=DNSLogger(logf=_quiet))

    @property
    def port(self) -> int:
        """The UDP port the server listens on."""
        return self._server.server.server_address[1]

    @property
    def nameserver(self) -> str:
        """``host:port`` for ``DnsblSettings.nameservers`` / ``--nameserver``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Serve in a daemon thread."""
        # A short poll interval: shutdown() waits for one poll, 0.5 s by default.
        self._thread = threading.Thread(
            target=self._server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.server.shutdown()
        self._server.server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- zone data (names without the trailing dot) --------------------------------------------

    def set(self, name: str, entry: Entry) -> None:
        """Make ``name`` answer as ``entry``."""
        self._names[name.lower()] = entry

    def listed(self, name: str, *codes: str, txt: str | None = None) -> None:
        """``name`` has these A records (and a TXT record when ``txt`` is given)."""
        self.set(name, Entry(a=codes, txt=(txt,) if txt else ()))

    def remove(self, name: str) -> None:
        """``name`` answers NXDOMAIN again."""
        self._names.pop(name.lower(), None)

    def set_zone(self, zone: str, entry: Entry) -> None:
        """Every name under ``zone`` without an entry of its own answers as ``entry``."""
        self._zones[zone.lower()] = entry

    def canaries(self, zone: str, code: str = "127.0.0.2") -> None:
        """Make an IP list's RFC 5782 test points correct: 127.0.0.2 listed (with ``code``);
        127.0.0.1 is NXDOMAIN as long as nothing lists it."""
        self.listed(ip4_name("127.0.0.2", zone), code, txt="RFC 5782 test point")

    def reset_stats(self) -> None:
        """Forget the query log and the in-flight peak."""
        with self._lock:
            self.queries.clear()
            self.peak_in_flight = 0

    def names_queried(self, qtype: str = "A") -> list[str]:
        """Names asked with ``qtype``, in arrival order."""
        with self._lock:
            return [name for name, kind in self.queries if kind == qtype]

    # --- dnslib resolver interface -------------------------------------------------------------

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        """Answer one query (called by dnslib in a thread per request)."""
        qname = request.q.qname
        name = str(qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self._lock:
            self.queries.append((name, qtype))
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            entry = self._lookup(name)
            if entry is not None and entry.drop:
                # dnslib sends nothing for a DNSError: the client sees a timeout.
                raise DNSError("dropped on purpose")
            reply = request.reply()
            if entry is None:
                reply.header.rcode = RCODE.NXDOMAIN
            elif entry.rcode != "NOERROR":
                reply.header.rcode = getattr(RCODE, entry.rcode)
            elif entry.cname is not None:
                reply.add_answer(RR(qname, QTYPE.CNAME, rdata=CNAME(entry.cname), ttl=60))
                target = self._lookup(entry.cname.rstrip(".").lower())
                for address in target.a if target is not None and qtype == "A" else ():
                    reply.add_answer(RR(entry.cname, QTYPE.A, rdata=A(address), ttl=60))
            elif qtype == "A" and entry.txt_for_a:
                reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT("not an address"), ttl=60))
            elif qtype == "A":
                for address in entry.a:
                    reply.add_answer(RR(entry.owner or qname, QTYPE.A, rdata=A(address), ttl=60))
            elif qtype == "TXT":
                for text in entry.txt:
                    reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(text), ttl=60))
            return reply
        finally:
            with self._lock:
                self.in_flight -= 1

    def _lookup(self, name: str) -> Entry | None:
        if name in self._names:
            return self._names[name]
        labels = name.split(".")
        for i in range(1, len(labels)):
            zone_entry = self._zones.get(".".join(labels[i:]))
            if zone_entry is not None:
                return zone_entry
        return None


def _quiet(*_args: object) -> None:
    """dnslib's logger prints every packet; the tests want silence."""


# --- the shared scenario -------------------------------------------------------------------------

LISTED_IP = "192.0.2.10"       # SBL+XBL on ZEN (TXT), SpamCop, PSBL
REFUSED_IP = "192.0.2.11"      # ZEN 127.255.255.254, SpamCop SERVFAIL, PSBL REFUSED
CLEAN_IP = "192.0.2.12"        # NXDOMAIN on ZEN, NODATA on SpamCop, never answers on PSBL
ODD_IP = "192.0.2.13"          # ZEN undocumented 127.0.0.99, SpamCop outside 127/8
LISTED_IP6 = "2001:db8::25"    # PBL on ZEN (nibble name)
BAD_DOMAIN = "bad.example"     # URIBL black+red (10), SURBL PH+MW+ABUSE (88), DBL spam
GREY_DOMAIN = "grey.example"   # URIBL grey only; SURBL refuses (127.0.0.1)
CLEAN_DOMAIN = "clean.example"  # NXDOMAIN everywhere

# Healthy lists served by standard_world(); Barracuda answers but lists the world (unhealthy).
IP_LISTS = ("zen.spamhaus.org", "bl.spamcop.net", "psbl.surriel.com", "b.barracudacentral.org")
DOMAIN_LISTS = ("dbl.spamhaus.org", "multi.surbl.org", "multi.uribl.com")


def ip4_name(ip: str, zone: str) -> str:
    """``192.0.2.10`` in ``zone`` -> ``10.2.0.192.zone`` (the server's names have no root dot)."""
    return ".".join([*reversed(ip.split(".")), zone])


def standard_world(server: FakeDnsbl) -> None:
    """Fill ``server`` with the scenario described by the constants above."""
    zen, spamcop, psbl, barracuda = IP_LISTS
    dbl, surbl, uribl = DOMAIN_LISTS
    server.listed(f"2.0.0.127.{zen}", "127.0.0.2", "127.0.0.4", "127.0.0.10")
    server.canaries(spamcop)
    server.canaries(psbl)
    server.canaries(barracuda)
    server.listed(f"1.0.0.127.{barracuda}", "127.0.0.2")  # the negative canary is listed
    server.listed(f"dbltest.com.{dbl}", "127.0.1.2")
    server.listed(f"test.surbl.org.{surbl}", "127.0.0.254")
    server.listed(f"test.uribl.com.{uribl}", "127.0.0.14")

    server.listed(ip4_name(LISTED_IP, zen), "127.0.0.2", "127.0.0.4",
                  txt="Listed by SBL, see https://check.spamhaus.org/sbl/query/SBL1")
    server.listed(ip4_name(LISTED_IP, spamcop), "127.0.0.2", txt="Blocked - see spamcop")
    server.listed(ip4_name(LISTED_IP, psbl), "127.0.0.2")
    server.listed(ip4_name(REFUSED_IP, zen), "127.255.255.254",
                  txt="Error: open resolver; https://check.spamhaus.org/returnc/pub/")
    server.set(ip4_name(REFUSED_IP, spamcop), Entry(rcode="SERVFAIL"))
    server.set(ip4_name(REFUSED_IP, psbl), Entry(rcode="REFUSED"))
    server.set(ip4_name(CLEAN_IP, spamcop), Entry(txt=("only TXT here",)))  # NODATA for A
    server.set(ip4_name(CLEAN_IP, psbl), Entry(drop=True))
    server.listed(ip4_name(ODD_IP, zen), "127.0.0.99")
    server.listed(ip4_name(ODD_IP, spamcop), "10.0.0.1")
    nibbles = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    server.listed(f"{nibbles}.{zen}", "127.0.0.11")

    server.listed(f"{BAD_DOMAIN}.{uribl}", "127.0.0.10", txt="black and red")
    server.listed(f"{BAD_DOMAIN}.{surbl}", "127.0.0.88")
    server.listed(f"{BAD_DOMAIN}.{dbl}", "127.0.1.2")
    server.listed(f"{GREY_DOMAIN}.{uribl}", "127.0.0.4")
    server.listed(f"{GREY_DOMAIN}.{surbl}", "127.0.0.1")


IP4_TARGETS = (LISTED_IP, REFUSED_IP, CLEAN_IP, ODD_IP)
DOMAINS = (BAD_DOMAIN, GREY_DOMAIN, CLEAN_DOMAIN)


def settings_for(server: FakeDnsbl, **changes: object) -> DnsblSettings:
    """Settings for the standard scenario: every target, its seven lists, 0.3 s timeout."""
    values: dict[str, object] = {
        "enabled": True,
        "targets": {"ips": [*IP4_TARGETS, LISTED_IP6], "domains": list(DOMAINS)},
        "nameservers": [server.nameserver],
        "timeout": 0.3,
        "lists": {"enable_only": [*IP_LISTS, *DOMAIN_LISTS]},
    }
    values.update(changes)
    return DnsblSettings.model_validate(values)
