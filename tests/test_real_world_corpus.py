"""Classification against real-world Postfix lines and provider replies (issue 10).

``tests/fixtures/postfix_log/real_world.yaml`` holds verbatim delivery lines from public logs, bug
reports and exporter test suites, each with the status, reason and provider it must be counted
under; ``reason_replies.yaml`` holds verbatim replies of the big mailbox providers and common
MTAs and filters, each with its reason class. Sources: the README beside them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collectors.classify import REASONS, ClassificationConfig, Classifier
from collectors.delivery_accounting import SELF, merge_snapshots
from collectors.exim.log_events import EXIM_LOG
from collectors.log_pipeline import LogFormat, LogProcessor
from collectors.postfix.log_events import POSTFIX_LOG
from collectors.postfix.log_parse import Delivery, PostfixLineParser
from exporter.config import load_config

FIXTURES = Path(__file__).parent / "fixtures" / "postfix_log"
LINES = yaml.safe_load((FIXTURES / "real_world.yaml").read_text(encoding="utf-8"))
REPLIES = yaml.safe_load((FIXTURES / "reason_replies.yaml").read_text(encoding="utf-8"))
EXAMPLE = Path(__file__).parent.parent / "examples" / "mtaq.yml"
#: The same for Exim main log lines (``tests/fixtures/exim_log/real_world.yaml``, sources in it).
EXIM_LINES = yaml.safe_load((FIXTURES.parent / "exim_log" / "real_world.yaml").read_text(encoding="utf-8"))
#: The providers issue 10 names; each needs real replies for several classes.
BIG_PROVIDERS = ("google", "microsoft", "yahoo", "apple", "gmx", "orange")


def counted(line: str, config: dict | None = None, log_format: LogFormat = POSTFIX_LOG) -> tuple[str, str | None, str]:
    """(status, reason, provider) under which the accounting counts one delivery line."""
    processor = LogProcessor(log_format, Classifier(ClassificationConfig.model_validate(config or {})))
    processor.process_lines("corpus", [line])
    snap = merge_snapshots(processor.accounts.snapshots().values())
    assert processor.line_counts()["corpus"]["parsed"] == 1
    if snap.self_deferrals:
        ((cause,),) = snap.self_deferrals
        assert cause in REASONS
        return "deferred", SELF, ""
    ((_, provider, status),) = snap.delivery_attempts
    reasons = [reason for (_, reason) in snap.deferrals] + [reason for (*_, reason) in snap.bounces]
    return status, (reasons[0] if reasons else None), provider


@pytest.mark.parametrize("entry", LINES, ids=[f"{i}-{e['status']}-{e['provider']}" for i, e in enumerate(LINES)])
def test_real_lines(entry: dict) -> None:
    status, reason, provider = counted(entry["line"])
    if entry["reason"] == SELF:  # the MTA's own deferral: no provider attempt at all
        assert (status, reason) == ("deferred", SELF)
    else:
        assert (status, reason, provider) == (entry["status"], entry["reason"], entry["provider"])


@pytest.mark.parametrize("entry", EXIM_LINES,
                         ids=[f"{i}-{e['status']}-{e['provider'] or 'self'}" for i, e in enumerate(EXIM_LINES)])
def test_real_exim_lines(entry: dict) -> None:
    """Exim lines of both deferral layouts, folded multi-line replies, +pid/+millisec/zone prefixes."""
    assert counted(entry["line"], log_format=EXIM_LOG) == (entry["status"], entry["reason"], entry["provider"])
    if "type" in entry:
        processor = LogProcessor(EXIM_LOG, Classifier())
        processor.process_lines("corpus", [entry["line"]])
        ((_, _, kind, _),) = merge_snapshots(processor.accounts.snapshots().values()).bounces
        assert kind == entry["type"]


@pytest.mark.parametrize("entry", REPLIES, ids=[f"{i}-{e['provider']}-{e['reason']}" for i, e in enumerate(REPLIES)])
def test_real_replies(entry: dict) -> None:
    assert Classifier().reason(None, entry["reply"]) == entry["reason"]


def test_the_corpus_covers_every_class_and_the_big_providers() -> None:
    classes = {e["reason"] for e in REPLIES} | {e["reason"] for e in LINES}
    assert classes >= set(REASONS)
    for provider in BIG_PROVIDERS:
        provider_classes = {e["reason"] for e in REPLIES if e["provider"] == provider}
        assert len(provider_classes) >= 3, (provider, provider_classes)
    generic = {e["reason"] for e in REPLIES if e["provider"] == "other"}
    assert generic >= {"greylisted", "user_unknown", "policy", "content", "connection", "blocklisted"}
    assert all(e["source"] for e in (*LINES, *REPLIES))


def test_reply_cache_keeps_codes_that_differ_only_in_digits_apart() -> None:
    """The reason cache blanks digits; Yahoo's TSS04 (rate limit) and TSS06 (reputation) replies also
    differ in words, so each keeps its own class whatever came first."""
    classifier = Classifier()
    tss04, tss06 = (next(e["reply"] for e in REPLIES if code in e["reply"]) for code in ("[TSS04]", "[TSS06]"))
    assert [classifier.reason(None, r) for r in (tss04, tss06, tss04, tss06)] == [
        "rate_limited", "reputation", "rate_limited", "reputation"]


def test_softbounce_lines_are_deferrals() -> None:
    """status=SOFTBOUNCE: the reply is kept, the status is a deferral, the message stays queued."""
    line = next(e["line"] for e in LINES if "user unknown" in e["line"].lower() or "unknown user" in e["line"])
    record = PostfixLineParser().parse(line.replace("status=bounced", "status=SOFTBOUNCE"))
    assert isinstance(record, Delivery)
    assert (record.status, record.soft_bounce) == ("deferred", True)


def test_a_configured_content_filter_is_local() -> None:
    """kumina/postfix_exporter#76: a content filter on another address, declared in the config."""
    line = next(e["line"] for e in LINES if "content-filter/smtp" in e["line"])
    assert counted(line)[2] == "other"
    for nexthop in ("[192.168.1.1]:20202", "192.168.1.1", "192.168.1.1:20202"):
        assert counted(line, {"local_delivery": {"content_filters": [nexthop]}})[2] == "local"
    assert counted(line, {"local_delivery": {"content_filters": ["[192.168.1.1]:10024"]}})[2] == "other"


def test_readme_service_example_matches_the_real_relay_line() -> None:
    """The example configuration's rule ``service: relay/smtp`` (README "Lanes") matches the real
    ``postfix/relay/smtp`` line of Hsn723/postfix_exporter#249, and only it."""
    classifier = Classifier(load_config(str(EXAMPLE), environ={}))
    parser = PostfixLineParser()
    relay = parser.parse(next(e["line"] for e in LINES if "postfix/relay/smtp" in e["line"]))
    plain = parser.parse(next(e["line"] for e in LINES if "hebj@telia.com" in e["line"]))
    assert isinstance(relay, Delivery) and isinstance(plain, Delivery)
    assert relay.service == "relay/smtp" and plain.service == "smtp"
    assert classifier.lane("app@example.com", "eu.vip-customer.example", relay.instance, relay.service) == "high"
    assert classifier.lane("app@example.com", "eu.vip-customer.example", plain.instance, plain.service) == "normal"
