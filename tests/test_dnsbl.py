"""DNS blocklist checker, collector, config and CLI against a loopback DNS server (real packets).

The scenario served by ``tests.dnsbl_server.standard_world`` is described next to its constants.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from collectors.dnsbl import DnsblCollector
from collectors.dnsbl_catalogue import DnsblSettings, default_specs, load_catalogue
from collectors.dnsbl_check import CheckResult, Failure, RunResult, Status, check, classify, query_name
from collectors.dnsbl_report import definitive_answers, impact_score, results_dict
from exporter.commands.blocklists import main as cli
from exporter.registry import build_registry
from tests.lab.dnsbl_server import (
    BAD_DOMAIN,
    CLEAN_DOMAIN,
    CLEAN_IP,
    DOMAIN_LISTS,
    DOMAINS,
    GREY_DOMAIN,
    IP4_TARGETS,
    IP_LISTS,
    LISTED_IP,
    LISTED_IP6,
    ODD_IP,
    REFUSED_IP,
    Entry,
    FakeDnsbl,
    ip4_name,
    settings_for,
    standard_world,
)

ZEN, SPAMCOP, PSBL, BARRACUDA = IP_LISTS
DBL, SURBL, URIBL = DOMAIN_LISTS
NOW = 1_700_000_000.0
LISTED, NOT_LISTED, UNKNOWN = Status.LISTED, Status.NOT_LISTED, Status.UNKNOWN


def run_check(settings: DnsblSettings) -> RunResult:
    return asyncio.run(check(settings.target_names(), load_catalogue(settings), settings))


def find(run: RunResult, target: str, zone: str) -> CheckResult:
    return next(r for r in run.results if r.target == target and r.list == zone)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeDnsbl]:
    with FakeDnsbl() as srv:
        standard_world(srv)
        yield srv


@pytest.fixture(scope="module")
def standard(server: FakeDnsbl) -> tuple[RunResult, list[tuple[str, str]]]:
    """One run over the standard scenario and the queries the server saw during it."""
    server.reset_stats()
    run = run_check(settings_for(server))
    return run, list(server.queries)


# --- classification of every answer class, over real packets ---------------------------------------

CASES = [
    # target, list, status, raw answer, failure
    (LISTED_IP, ZEN, LISTED, "127.0.0.2, 127.0.0.4", None),
    (LISTED_IP, SPAMCOP, LISTED, "127.0.0.2", None),
    (LISTED_IP, PSBL, LISTED, "127.0.0.2", None),
    (REFUSED_IP, ZEN, UNKNOWN, "127.255.255.254", Failure.LIST_REFUSED),
    (REFUSED_IP, SPAMCOP, UNKNOWN, None, Failure.SERVFAIL),
    (REFUSED_IP, PSBL, UNKNOWN, None, Failure.REFUSED),
    (CLEAN_IP, ZEN, NOT_LISTED, "NXDOMAIN", None),
    (CLEAN_IP, SPAMCOP, NOT_LISTED, "NODATA", None),
    (CLEAN_IP, PSBL, UNKNOWN, None, Failure.TIMEOUT),
    (ODD_IP, ZEN, UNKNOWN, "127.0.0.99", Failure.UNDOCUMENTED),
    (ODD_IP, SPAMCOP, UNKNOWN, "10.0.0.1", Failure.RESOLVER_REWRITE),
    (ODD_IP, PSBL, NOT_LISTED, "NXDOMAIN", None),
    (LISTED_IP6, ZEN, LISTED, "127.0.0.11", None),
    (BAD_DOMAIN, DBL, LISTED, "127.0.1.2", None),
    (BAD_DOMAIN, SURBL, LISTED, "127.0.0.88", None),
    (BAD_DOMAIN, URIBL, LISTED, "127.0.0.10", None),
    (GREY_DOMAIN, DBL, NOT_LISTED, "NXDOMAIN", None),
    (GREY_DOMAIN, SURBL, UNKNOWN, "127.0.0.1", Failure.LIST_REFUSED),
    (GREY_DOMAIN, URIBL, LISTED, "127.0.0.4", None),
    *[(CLEAN_DOMAIN, zone, NOT_LISTED, "NXDOMAIN", None) for zone in DOMAIN_LISTS],
    *[(ip, BARRACUDA, UNKNOWN, None, Failure.LIST_UNHEALTHY) for ip in IP4_TARGETS],
]


@pytest.mark.parametrize(("target", "zone", "status", "answer", "failure"), CASES,
                         ids=[f"{c[0]}@{c[1]}" for c in CASES])
def test_each_answer_class(standard, target, zone, status, answer, failure) -> None:
    """Each (target, list) answer lands in exactly the class SPEC §9 and reference §3.2 give it."""
    result = find(standard[0], target, zone)
    assert (result.status, result.answer, result.failure) == (status, answer, failure)
    assert (result.error is None) == (status is not UNKNOWN)


def test_one_result_per_applicable_pair(standard) -> None:
    """IPv4 targets meet every IP list, IPv6 only the IPv6-capable ZEN, domains the domain lists."""
    pairs = [(r.target, r.list) for r in standard[0].results]
    expected = [(ip, zone) for ip in IP4_TARGETS for zone in IP_LISTS]
    expected += [(LISTED_IP6, ZEN)] + [(d, zone) for d in DOMAINS for zone in DOMAIN_LISTS]
    assert sorted(pairs) == sorted(expected)


def test_listing_meanings_weights_and_txt(standard) -> None:
    run = standard[0]
    zen = find(run, LISTED_IP, ZEN)
    assert [(x.code, x.meaning, x.weight) for x in zen.listings] == [
        ("127.0.0.2", "SBL: spam source or spam operation", 100),
        ("127.0.0.4", "XBL: exploited or infected host", 90),
    ]
    assert zen.weight == 100
    assert zen.txt == ("Listed by SBL, see https://check.spamhaus.org/sbl/query/SBL1",)
    pbl = find(run, LISTED_IP6, ZEN)
    assert [(x.meaning, x.weight) for x in pbl.listings] == [
        ("PBL: end-user range, Spamhaus says no direct-to-MX mail", 70)]
    assert find(run, REFUSED_IP, ZEN).error == (
        "Spamhaus refuses public, open or unattributable resolvers (127.255.255.254)")
    assert find(run, REFUSED_IP, SPAMCOP).error.endswith("answered SERVFAIL")
    assert find(run, CLEAN_IP, PSBL).error == "no answer within 0.3 s"


def test_bitmask_answers_are_decoded(standard) -> None:
    """URIBL 10 = black + red, SURBL 88 = PH + MW + ABUSE; the heaviest bit is the weight."""
    run = standard[0]
    uribl, surbl = find(run, BAD_DOMAIN, URIBL), find(run, BAD_DOMAIN, SURBL)
    assert [(x.meaning, x.weight) for x in uribl.listings] == [
        ("black: domain seen in spam + red: newly seen in spam, under review", 70)]
    assert [(x.meaning, x.weight) for x in surbl.listings] == [
        ("PH: phishing + MW: malware + ABUSE: spam and abuse", 80)]
    assert [(x.meaning, x.weight) for x in find(run, GREY_DOMAIN, URIBL).listings] == [
        ("grey: bulk sender domain", 15)]


def test_bitmask_unknown_bits() -> None:
    """Known bits decide; only-unknown bits fall back to the list's undocumented-code rule."""
    lists = {spec.zone: spec.build(None) for spec in default_specs()}
    full = classify(lists[SURBL], ["127.0.0.254"])  # bit 2 is retired; six current bits
    assert full.status is LISTED
    assert full.listings[0].meaning.count(" + ") == 5
    assert full.listings[0].weight == 80
    assert classify(lists[SURBL], ["127.0.0.2"]).listings[0].meaning == "unclassified"
    assert classify(lists[URIBL], ["127.0.0.14"]).listings[0].weight == 70


def test_txt_fetched_only_for_a_record_answers(standard) -> None:
    run, queries = standard
    txt_names = sorted(name for name, qtype in queries if qtype == "TXT")
    expected = sorted(query_name(r.target, r.list).rstrip(".") for r in run.results
                      if r.answer and r.answer[0].isdigit())
    assert txt_names == expected
    assert len(expected) == 12


def test_query_names() -> None:
    """Reversed octets, 32 reversed nibbles for IPv6 (also IPv4-mapped), domains prepended."""
    assert query_name("192.0.2.10", ZEN) == "10.2.0.192.zen.spamhaus.org."
    assert query_name("2001:db8::25", ZEN) == (
        "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org.")
    assert query_name("::ffff:7f00:2", "z.test") == (
        "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.z.test.")
    assert query_name("bad.example", URIBL) == "bad.example.multi.uribl.com."


def test_ipv6_target_queried_by_nibbles(standard) -> None:
    nibble_names = [name for name, _ in standard[1] if name.count(".") > 30]
    assert nibble_names == [query_name(LISTED_IP6, ZEN).rstrip(".")] * 2  # A, then TXT for the hit


def test_list_health_from_test_points(standard) -> None:
    """Barracuda lists its negative canary: unhealthy, and its targets are not even asked."""
    run, queries = standard
    health = {h.list: (h.healthy, h.error) for h in run.health}
    assert health.pop(BARRACUDA) == (False, "test point 127.0.0.1 must be NXDOMAIN, got 127.0.0.2")
    assert health == {zone: (True, None) for zone in (ZEN, SPAMCOP, PSBL, *DOMAIN_LISTS)}
    asked = sorted(name for name, _ in queries if name.endswith(BARRACUDA))
    assert asked == [f"1.0.0.127.{BARRACUDA}", f"2.0.0.127.{BARRACUDA}"]
    assert find(run, LISTED_IP, BARRACUDA).error.startswith("list failed its test points: ")


def test_refusal_codes_are_unknown_over_dns() -> None:
    """Spamhaus 127.255.255.x and 127.0.1.255, URIBL/SURBL and RFC 5782 127.0.0.1: never listed or
    clean, also when mixed with a listing code."""
    ips = {"192.0.2.50": ("127.255.255.250",), "192.0.2.52": ("127.255.255.252",),
           "192.0.2.55": ("127.255.255.255",), "192.0.2.60": ("127.0.0.2", "127.255.255.254")}
    with FakeDnsbl() as srv:
        srv.listed(f"2.0.0.127.{ZEN}", "127.0.0.2")
        srv.canaries(SPAMCOP)
        srv.listed(f"dbltest.com.{DBL}", "127.0.1.2")
        srv.listed(f"test.uribl.com.{URIBL}", "127.0.0.2")
        for ip, codes in ips.items():
            srv.listed(ip4_name(ip, ZEN), *codes)
        srv.listed(ip4_name("192.0.2.61", SPAMCOP), "127.0.0.1")
        srv.listed(f"{BAD_DOMAIN}.{DBL}", "127.0.1.255")
        srv.listed(f"{BAD_DOMAIN}.{URIBL}", "127.0.0.1")
        settings = settings_for(srv, targets={"ips": [*ips, "192.0.2.61"], "domains": [BAD_DOMAIN]},
                                lists={"enable_only": [ZEN, SPAMCOP, DBL, URIBL]})
        run = run_check(settings)
    outcomes = {(r.target, r.list): (r.status, r.failure) for r in run.results}
    refused = (UNKNOWN, Failure.LIST_REFUSED)
    assert outcomes == {
        **{(ip, ZEN): refused for ip in ips},
        **{(ip, SPAMCOP): (NOT_LISTED, None) for ip in ips},
        ("192.0.2.61", ZEN): (NOT_LISTED, None),
        ("192.0.2.61", SPAMCOP): refused,
        (BAD_DOMAIN, DBL): refused,
        (BAD_DOMAIN, URIBL): refused,
    }
    assert find(run, BAD_DOMAIN, DBL).error == "DBL was queried with an IP address (domains only) (127.0.1.255)"


def test_concurrency_is_bounded() -> None:
    targets = [f"198.51.100.{i}" for i in range(1, 21)]
    with FakeDnsbl(delay=0.05) as srv:
        srv.canaries(SPAMCOP)
        settings = settings_for(srv, targets={"ips": targets}, concurrency=4,
                                lists={"enable_only": [SPAMCOP]})
        run = run_check(settings)
        assert srv.peak_in_flight == 4
    assert run.peak_concurrency == 4
    assert run.queries == 22
    assert {r.status for r in run.results} == {NOT_LISTED}


def test_deadline_turns_the_rest_unknown() -> None:
    with FakeDnsbl() as srv:
        srv.set_zone(SPAMCOP, Entry(drop=True))
        settings = settings_for(srv, targets={"ips": [LISTED_IP]}, timeout=2, deadline=0.3,
                                lists={"enable_only": [SPAMCOP]})
        start = time.monotonic()
        run = run_check(settings)
        assert time.monotonic() - start < 1.5
    assert run.health[0].healthy is False
    assert run.health[0].error == "test points not answered: run deadline (0.3 s) reached first"
    assert (run.results[0].status, run.results[0].failure) == (UNKNOWN, Failure.DEADLINE)


# --- impact score ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("weights", "score"), [
    ([], 0.0), ([0], 0.0), ([100], 100.0), ([100, 25], 100.0), ([60, 25], 70.0), ([40, 40, 40], 78.4),
])
def test_impact_score_arithmetic(weights: list[int], score: float) -> None:
    """100 * (1 - prod(1 - w/100)) over the lists the target is on."""
    assert impact_score(weights) == score


@given(st.lists(st.integers(min_value=0, max_value=100), max_size=12))
def test_impact_score_bounds(weights: list[int]) -> None:
    """Never below the heaviest listing, never above the capped sum."""
    score = impact_score(weights)
    assert max(weights, default=0) - 0.05 <= score <= min(100, sum(weights)) + 0.05


def test_impact_score_per_target(standard) -> None:
    run = standard[0]
    report = results_dict(run, definitive_answers(run))
    scores = {target: entry["impact_score"] for target, entry in report["targets"].items()}
    # LISTED: ZEN SBL 100; IPv6: PBL 70; bad: DBL 100; grey: URIBL grey 15 (SURBL refused).
    assert scores == {LISTED_IP: 100.0, REFUSED_IP: 0.0, CLEAN_IP: 0.0, ODD_IP: 0.0, LISTED_IP6: 70.0,
                      BAD_DOMAIN: 100.0, GREY_DOMAIN: 15.0, CLEAN_DOMAIN: 0.0}


# --- collector: state across runs, metrics, last_results -------------------------------------------------


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def registry_for(collector: DnsblCollector) -> CollectorRegistry:
    return build_registry([collector])


def test_collector_keeps_last_definitive_state_across_runs() -> None:
    """Run 1: listed on SpamCop + PSBL. Run 2: SpamCop refuses (127.0.0.1), PSBL delisted, ZEN
    loses its canary. Unknown answers keep the run-1 state; definitive ones replace it."""
    with FakeDnsbl() as srv:
        srv.listed(f"2.0.0.127.{ZEN}", "127.0.0.2")
        srv.canaries(SPAMCOP)
        srv.canaries(PSBL)
        srv.listed(ip4_name(LISTED_IP, SPAMCOP), "127.0.0.2", txt="spamcop says")
        srv.listed(ip4_name(LISTED_IP, PSBL), "127.0.0.2")
        srv.set(ip4_name(CLEAN_IP, PSBL), Entry(drop=True))  # never definitive
        settings = settings_for(srv, targets={"ips": [LISTED_IP, CLEAN_IP]},
                                lists={"enable_only": [ZEN, SPAMCOP, PSBL]})
        collector = DnsblCollector(settings, clock=lambda: NOW)
        registry = registry_for(collector)
        assert {m.name for m in registry.collect() if m.name.startswith("mtaq_dnsbl_")} == {
            "mtaq_dnsbl_listed", "mtaq_dnsbl_check_success", "mtaq_dnsbl_listing_info",
            "mtaq_dnsbl_impact_score", "mtaq_dnsbl_list_healthy", "mtaq_dnsbl_last_run_timestamp_seconds",
            "mtaq_dnsbl_run_duration_seconds"}
        assert sample(registry, "mtaq_dnsbl_last_run_timestamp_seconds") is None

        worker = threading.Thread(target=collector.run_refresh)  # as the scheduler calls it
        worker.start()
        worker.join()
        assert collector.health.view().success

        spamcop_info = {"target": LISTED_IP, "list": SPAMCOP, "code": "127.0.0.2",
                        "meaning": "reported by SpamCop users (auto-delists 24 h after the last report)",
                        "delist_url": f"https://www.spamcop.net/bl.shtml?{LISTED_IP}"}
        psbl_info = {"target": LISTED_IP, "list": PSBL, "code": "127.0.0.2",
                     "meaning": "sent mail to PSBL spam traps",
                     "delist_url": f"https://psbl.org/listing?ip={LISTED_IP}"}
        run1 = {
            ("mtaq_dnsbl_listed", LISTED_IP, SPAMCOP): 1.0, ("mtaq_dnsbl_listed", LISTED_IP, PSBL): 1.0,
            ("mtaq_dnsbl_listed", LISTED_IP, ZEN): 0.0, ("mtaq_dnsbl_listed", CLEAN_IP, ZEN): 0.0,
            ("mtaq_dnsbl_listed", CLEAN_IP, SPAMCOP): 0.0, ("mtaq_dnsbl_listed", CLEAN_IP, PSBL): None,
            ("mtaq_dnsbl_check_success", CLEAN_IP, PSBL): 0.0,
            ("mtaq_dnsbl_check_success", LISTED_IP, SPAMCOP): 1.0,
            ("mtaq_dnsbl_check_success", LISTED_IP, ZEN): 1.0,
        }
        for (name, target, zone), value in run1.items():
            assert sample(registry, name, target=target, list=zone) == value, (name, target, zone)
        assert sample(registry, "mtaq_dnsbl_listing_info", **spamcop_info) == 1.0
        assert sample(registry, "mtaq_dnsbl_listing_info", **psbl_info) == 1.0
        assert sample(registry, "mtaq_dnsbl_impact_score", target=LISTED_IP) == 70.0
        assert sample(registry, "mtaq_dnsbl_impact_score", target=CLEAN_IP) == 0.0
        assert sample(registry, "mtaq_dnsbl_list_healthy", list=ZEN) == 1.0
        assert sample(registry, "mtaq_dnsbl_last_run_timestamp_seconds") == NOW
        assert 0 < sample(registry, "mtaq_dnsbl_run_duration_seconds") < 5

        srv.listed(ip4_name(LISTED_IP, SPAMCOP), "127.0.0.1")
        srv.remove(ip4_name(LISTED_IP, PSBL))
        srv.remove(f"2.0.0.127.{ZEN}")
        assert collector.run_refresh()

    run2 = {
        ("mtaq_dnsbl_listed", LISTED_IP, SPAMCOP): 1.0, ("mtaq_dnsbl_check_success", LISTED_IP, SPAMCOP): 0.0,
        ("mtaq_dnsbl_listed", LISTED_IP, PSBL): 0.0, ("mtaq_dnsbl_check_success", LISTED_IP, PSBL): 1.0,
        ("mtaq_dnsbl_listed", LISTED_IP, ZEN): 0.0, ("mtaq_dnsbl_check_success", LISTED_IP, ZEN): 0.0,
        ("mtaq_dnsbl_listed", CLEAN_IP, PSBL): None,
    }
    for (name, target, zone), value in run2.items():
        assert sample(registry, name, target=target, list=zone) == value, (name, target, zone)
    assert sample(registry, "mtaq_dnsbl_listing_info", **spamcop_info) == 1.0
    assert sample(registry, "mtaq_dnsbl_listing_info", **psbl_info) is None
    assert sample(registry, "mtaq_dnsbl_impact_score", target=LISTED_IP) == 60.0
    assert sample(registry, "mtaq_dnsbl_list_healthy", list=ZEN) == 0.0
    assert sample(registry, "mtaq_dnsbl_list_healthy", list=SPAMCOP) == 1.0

    report = collector.last_results()
    json.dumps(report)
    spamcop = report["targets"][LISTED_IP]["lists"][SPAMCOP]
    assert spamcop["status"] == "unknown"
    assert spamcop["error_kind"] == "list_refused"
    assert spamcop["answer"] == "127.0.0.1"
    assert spamcop["last_definitive"] == {"status": "listed", "codes": ["127.0.0.2"], "at": NOW}
    assert report["targets"][LISTED_IP]["impact_score"] == 60.0
    assert report["targets"][CLEAN_IP]["lists"][PSBL]["last_definitive"] is None
    assert report["lists"][ZEN] == {
        "name": "Spamhaus ZEN (SBL, CSS, XBL, PBL)", "weight": 90, "healthy": False,
        "error": "test point 127.0.0.2 must be listed, got NXDOMAIN"}
    assert report["run"]["started"] == report["run"]["finished"] == NOW
    assert report["run"]["peak_concurrency"] >= 1
    assert isinstance(report["targets"][LISTED_IP]["lists"][PSBL]["query_ms"], float)


def test_last_results_txt_and_delist_url(standard) -> None:
    run = standard[0]
    entry = results_dict(run, definitive_answers(run))["targets"][LISTED_IP]["lists"][ZEN]
    assert entry["codes"] == ["127.0.0.2", "127.0.0.4"]
    assert entry["meanings"] == ["SBL: spam source or spam operation", "XBL: exploited or infected host"]
    assert entry["txt"] == ["Listed by SBL, see https://check.spamhaus.org/sbl/query/SBL1"]
    assert entry["delist_url"] == "https://check.spamhaus.org/"
    assert entry["weight"] == 100


def test_collector_run_without_any_definitive_answer_fails() -> None:
    with FakeDnsbl() as srv:  # no canaries at all: every list unhealthy
        collector = DnsblCollector(settings_for(srv, targets={"ips": [LISTED_IP]},
                                                lists={"enable_only": [SPAMCOP]}))
        assert collector.run_refresh() is False
    assert collector.health.view().last_error.startswith("DnsblRunError: no definitive answer in 1 checks")
    registry = registry_for(collector)
    assert sample(registry, "mtaq_dnsbl_check_success", target=LISTED_IP, list=SPAMCOP) == 0.0
    assert sample(registry, "mtaq_dnsbl_listed", target=LISTED_IP, list=SPAMCOP) is None
    assert sample(registry, "mtaq_dnsbl_impact_score", target=LISTED_IP) == 0.0


def test_last_results_before_first_run() -> None:
    collector = DnsblCollector(DnsblSettings())
    assert collector.last_results() == {"run": None, "lists": {}, "targets": {}}
    assert (collector.interval, collector.jitter) == (10800, 300)


def test_keyed_zone_is_queried_but_the_key_never_shows() -> None:
    with FakeDnsbl() as srv:
        keyed = "s3cretkey.zen.dq.spamhaus.net"
        srv.listed(f"2.0.0.127.{keyed}", "127.0.0.2")
        srv.listed(ip4_name(LISTED_IP, keyed), "127.0.0.3", txt="CSS listing")
        settings = settings_for(srv, targets={"ips": [LISTED_IP]}, keys={"spamhaus_dqs": "s3cretkey"},
                                lists={"enable_only": [ZEN]})
        collector = DnsblCollector(settings, clock=lambda: NOW)
        assert collector.run_refresh()
    exposed = generate_latest(registry_for(collector)).decode()
    assert f'mtaq_dnsbl_listed{{list="{ZEN}",target="{LISTED_IP}"}} 1.0' in exposed
    for text in (exposed, json.dumps(collector.last_results()), repr(collector.lists), repr(settings)):
        assert "s3cret" not in text


def test_keyed_lists_need_their_key() -> None:
    plain = {bl.zone for bl in load_catalogue(DnsblSettings())}
    keyed = {bl.zone: bl for bl in load_catalogue(DnsblSettings(keys={"spamhaus_dqs": "k1", "abusix": "k2"}))}
    assert set(keyed) - plain == {"zrd.dq.spamhaus.net", "combined.mail.abusix.zone", "dblack.mail.abusix.zone"}
    assert keyed["zrd.dq.spamhaus.net"].query_zone == "k1.zrd.dq.spamhaus.net"
    assert keyed["dblack.mail.abusix.zone"].query_zone == "k2.dblack.mail.abusix.zone"
    assert keyed[ZEN].query_zone == "k1.zen.dq.spamhaus.net"


# --- catalogue and configuration ----------------------------------------------------------------------


def test_catalogue_has_the_live_default_lists() -> None:
    """Reference §2.2 defaults minus shut-down (SORBS, NiX Spam) and redundant (CBL) lists."""
    assert {spec.zone for spec in default_specs()} == {
        ZEN, DBL, "zrd.dq.spamhaus.net", BARRACUDA, SPAMCOP, "bl.mailspike.net", PSBL,
        "dnsbl-1.uceprotect.net", "dnsbl-2.uceprotect.net", "dnsbl-3.uceprotect.net", "all.s5h.net",
        "bl.0spam.org", "nbl.0spam.org", "combined.mail.abusix.zone", "dblack.mail.abusix.zone", SURBL, URIBL}


def test_lists_add_defines_and_overrides() -> None:
    settings = DnsblSettings(lists={"add": [
        {"zone": "bl.example.net", "kinds": ["ip4"], "weight": 20},
        {"zone": SPAMCOP, "kinds": ["ip4"], "weight": 10, "codes": {"127.0.0.2": {"meaning": "x"}}},
    ], "enable_only": ["bl.example.net", SPAMCOP]})
    lists = {bl.zone: bl for bl in load_catalogue(settings)}
    assert lists["bl.example.net"].listed_test_points == ("127.0.0.2",)  # RFC 5782 defaults
    assert lists["bl.example.net"].not_listed_test_points == ("127.0.0.1",)
    assert lists[SPAMCOP].weight == 10


BAD_SETTINGS = [
    ({"targets": {"ips": ["192.0.2.300"]}}, ("targets", "ips", 0), "ip_any_address"),
    ({"targets": {"domains": ["bad..example"]}}, ("targets", "domains", 0), "value_error"),
    ({"interval": 60}, ("interval",), "greater_than_equal"),
    ({"interval": 90000}, ("interval",), "less_than_equal"),
    ({"concurrency": 0}, ("concurrency",), "greater_than_equal"),
    ({"concurrency": 257}, ("concurrency",), "less_than_equal"),
    ({"intervall": 3600}, ("intervall",), "extra_forbidden"),
    ({"lists": {"disabled": [ZEN]}}, ("lists", "disabled"), "extra_forbidden"),
    ({"lists": {"disable": ["dnsbl.sorbs.net"]}}, ("lists", "disable"), "value_error"),
    ({"nameservers": ["resolver.example"]}, ("nameservers", 0), "value_error"),
    ({"nameservers": ["127.0.0.1:70000"]}, ("nameservers", 0), "value_error"),
    ({"keys": {"spamhaus": "abc"}}, ("keys",), "value_error"),
    ({"keys": {"abusix": "not one label"}}, ("keys", "abusix"), "value_error"),
    ({"lists": {"enable_only": ["zrd.dq.spamhaus.net"]}}, ("keys",), "value_error"),
    ({"enabled": True}, ("targets",), "value_error"),
    ({"lists": {"add": [{"zone": "x.example", "kinds": ["ip4"], "weight": 5,
                         "codes": {"10.0.0.2": {"meaning": "x"}}}]}}, ("lists", "add", 0), "value_error"),
    ({"lists": {"add": [{"zone": "x.example", "kinds": ["ip4", "domain"], "weight": 5}]}},
     ("lists", "add", 0), "value_error"),
    ({"lists": {"add": [{"zone": "x.example", "kinds": ["ip4"], "weight": 101}]}},
     ("lists", "add", 0, "weight"), "less_than_equal"),
]


@pytest.mark.parametrize(("values", "loc", "kind"), BAD_SETTINGS, ids=[str(b[1]) for b in BAD_SETTINGS])
def test_config_errors_name_the_setting(values: dict, loc: tuple, kind: str) -> None:
    with pytest.raises(ValidationError) as info:
        DnsblSettings.model_validate(values)
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(loc, kind)]


def test_config_error_messages() -> None:
    for keys, message in [({"spamhus_dqs": "s3cret"}, "no list uses the key 'spamhus_dqs'; known keys: "
                            "abusix, spamhaus_dqs"),
                          ({"abusix": "s3 cret"}, "an access key must be one DNS label")]:
        with pytest.raises(ValidationError) as info:
            DnsblSettings.model_validate({"keys": keys})
        shown = str(info.value) + repr(info.value.errors())
        assert message in shown
        assert "s3" not in shown  # access keys never appear in an error
    with pytest.raises(ValidationError, match=r"unknown zone dnsbl\.sorbs\.net; known: all\.s5h\.net"):
        DnsblSettings(lists={"disable": ["dnsbl.sorbs.net"]})


def test_config_normalises_values() -> None:
    settings = DnsblSettings(targets={"ips": ["2001:DB8::1", "192.0.2.1"], "domains": ["Example.COM."]},
                             nameservers=["192.0.2.53", "[2001:db8::53]:5353"])
    assert settings.target_names() == ("2001:db8::1", "192.0.2.1", "example.com")
    assert settings.endpoints() == (("192.0.2.53", 53), ("2001:db8::53", 5353))


# --- CLI --------------------------------------------------------------------------------------------------


def run_cli(server: FakeDnsbl, *args: str) -> int:
    return cli(["check", "--nameserver", server.nameserver, "--timeout", "0.3", *args])


def test_cli_clean_exits_0(server, capsys) -> None:
    assert run_cli(server, "--ip", CLEAN_IP, "--list", ZEN, "--domain", CLEAN_DOMAIN, "--list", DBL) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["TARGET", "LIST", "STATUS", "CODE", "MEANING", "/", "ERROR", "DELIST"]
    assert [CLEAN_IP, ZEN, "not_listed", "NXDOMAIN"] in [line.split() for line in out.splitlines()]
    assert f"{ZEN}  healthy" in out
    assert "0 listed, 2 not listed, 0 unknown" in out


def test_cli_listed_exits_1(server, capsys) -> None:
    assert run_cli(server, "--ip", LISTED_IP, "--ip", REFUSED_IP, "--list", SPAMCOP) == 1
    out = capsys.readouterr().out
    assert f"https://www.spamcop.net/bl.shtml?{LISTED_IP}" in out
    assert f"{LISTED_IP} on {SPAMCOP}: Blocked - see spamcop" in out
    assert "answered SERVFAIL" in out


def test_cli_unknown_exits_2(server, capsys) -> None:
    assert run_cli(server, "--ip", REFUSED_IP, "--ip", CLEAN_IP, "--list", ZEN) == 2
    assert "Spamhaus refuses public, open or unattributable resolvers" in capsys.readouterr().out


def test_cli_json(server, capsys) -> None:
    assert run_cli(server, "--json", "--ip", LISTED_IP, "--list", SPAMCOP) == 1
    report = json.loads(capsys.readouterr().out)
    entry = report["targets"][LISTED_IP]["lists"][SPAMCOP]
    assert (entry["status"], entry["codes"], entry["txt"]) == ("listed", ["127.0.0.2"], ["Blocked - see spamcop"])
    assert report["lists"][SPAMCOP]["healthy"] is True
    assert report["targets"][LISTED_IP]["impact_score"] == 60.0


@pytest.mark.parametrize(("args", "message"), [
    ([], "nothing to check: give at least one --ip or --domain"),
    (["--ip", "192.0.2.300"], "--ip: value is not a valid IPv4 or IPv6 address (got '192.0.2.300')"),
    (["--ip", CLEAN_IP, "--list", "dnsbl.sorbs.net"], "--list: unknown zone dnsbl.sorbs.net"),
    (["--ip", LISTED_IP6, "--list", SPAMCOP], "no selected list applies to these targets"),
    (["--ip", CLEAN_IP, "--bogus"], "unrecognized arguments: --bogus"),
])
def test_cli_usage_errors_exit_2(server, capsys, args: list[str], message: str) -> None:
    assert run_cli(server, *args) == 2
    assert message in capsys.readouterr().err


MALFORMED = [
    pytest.param(Entry(a=("127.0.0.2",), owner="another.example"), id="A record for another name"),
    pytest.param(Entry(txt_for_a=True), id="TXT where A was asked"),
    pytest.param(Entry(cname="nowhere.bl.spamcop.net"), id="dangling CNAME"),
    pytest.param(Entry(cname="listed.elsewhere.example"), id="CNAME out of the zone"),
]


@pytest.mark.parametrize("entry", MALFORMED)
def test_malformed_answers_are_unknown_and_keep_a_listing(entry: Entry) -> None:
    with FakeDnsbl() as srv:
        srv.canaries(SPAMCOP)
        srv.listed(ip4_name(LISTED_IP, SPAMCOP), "127.0.0.2")
        srv.listed("listed.elsewhere.example", "127.0.0.2")
        collector = DnsblCollector(settings_for(srv, targets={"ips": [LISTED_IP]},
                                                lists={"enable_only": [SPAMCOP]}), clock=lambda: NOW)
        registry = registry_for(collector)
        assert collector.run_refresh()
        assert sample(registry, "mtaq_dnsbl_listed", target=LISTED_IP, list=SPAMCOP) == 1
        srv.set(ip4_name(LISTED_IP, SPAMCOP), entry)
        collector.run_refresh()
        result, = collector.last_results()["targets"][LISTED_IP]["lists"].values()
        assert (result["status"], result["error_kind"]) == ("unknown", "malformed_answer"), result
        assert sample(registry, "mtaq_dnsbl_check_success", target=LISTED_IP, list=SPAMCOP) == 0
        assert sample(registry, "mtaq_dnsbl_listed", target=LISTED_IP, list=SPAMCOP) == 1  # still listed
        assert sample(registry, "mtaq_dnsbl_impact_score", target=LISTED_IP) == 60.0


def test_an_in_zone_cname_chain_is_followed() -> None:
    with FakeDnsbl() as srv:
        srv.canaries(SPAMCOP)
        srv.listed(f"alias-target.{SPAMCOP}", "127.0.0.2")
        srv.set(ip4_name(LISTED_IP, SPAMCOP), Entry(cname=f"alias-target.{SPAMCOP}"))
        run = run_check(settings_for(srv, targets={"ips": [LISTED_IP]}, lists={"enable_only": [SPAMCOP]}))
        assert [r.status for r in run.results] == [LISTED]
