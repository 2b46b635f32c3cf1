"""Lane rules, provider table and reason table (collectors/classify.py)."""

import pytest
from pydantic import ValidationError

from collectors.classify import ClassificationConfig, Classifier, relay_host

RULES = {
    "lanes": {
        "rules": [
            {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
            {"lane": "low", "match": {"instance": "postfix-bulk"}},
            {"lane": "low", "match": {"sender_domain": r"re:^news\."}},
            {"lane": "high", "match": {"recipient_domain": ["vip.example", "*.vip.example"], "service": "smtp"}},
        ]
    },
    "providers": {"acme": {"domains": ["acme.test"], "mx_suffixes": [".mx.acme.test"]}},
    "reasons": [{"reason": "content", "patterns": [r"custom content marker"]}],
}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(ClassificationConfig.model_validate(RULES))


@pytest.mark.parametrize(("args", "lane"), [
    (("ops@alerts.example.com",), "high"),
    (("OPS@ALERTS.EXAMPLE.COM",), "high"),
    (("x@alerts.example.com.evil",), "normal"),
    (("x@news.example.com",), "low"),
    (("x@example.com", None, "postfix-bulk"), "low"),
    (("x@example.com", "vip.example", None, "smtp"), "high"),
    (("x@example.com", "a.vip.example", None, "smtp"), "high"),
    (("x@example.com", "vip.example", None, None), "normal"),  # unknown service never matches
    (("", None, None, None), "normal"),
    ((None,), "normal"),
])
def test_lanes_first_match_wins(classifier: Classifier, args: tuple, lane: str) -> None:
    assert classifier.lane(*args) == lane


@pytest.mark.parametrize(("domain", "host", "provider"), [
    ("gmail.com", None, "google"),
    ("GMAIL.COM", None, "google"),
    ("corp.example", "corp-example.mail.protection.outlook.com", "microsoft"),
    ("hosted.example", "aspmx.l.google.com", "google"),
    ("aol.com", None, "yahoo"),
    ("sub.yahoodns.net", None, "yahoo"),
    ("web.de", None, "gmx"),
    ("acme.test", None, "acme"),
    ("x.example", "in1.mx.acme.test", "acme"),
    ("x.example", "127.0.0.1", "other"),
    ("x.example", None, "other"),
    ("", None, "other"),
])
def test_providers(classifier: Classifier, domain: str, host: str | None, provider: str) -> None:
    assert classifier.provider(domain, host) == provider


def test_provider_names_are_bounded(classifier: Classifier) -> None:
    assert classifier.provider_names[-1] == "other"
    assert {"google", "microsoft", "yahoo", "apple", "gmx", "comcast", "orange", "acme"} <= set(
        classifier.provider_names)


@pytest.mark.parametrize(("dsn", "text", "reason"), [
    ("4.7.28", "host x[1.2.3.4] said: 421-4.7.28 Our system has detected an unusual rate of unsolicited mail",
     "rate_limited"),
    ("4.7.0", "421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume or user "
     "complaints", "rate_limited"),
    ("4.7.650", "451 4.7.650 The mail server [1.2.3.4] has been temporarily rate limited due to IP reputation",
     "rate_limited"),
    ("4.7.0", "421 4.7.1 [TS03] All messages from 1.2.3.4 will be permanently deferred", "reputation"),
    ("4.7.0", "421-4.7.0 this message is suspicious due to the very low reputation of the sending domain",
     "reputation"),
    ("5.7.1", "550 5.7.1 Unfortunately, messages from [1.2.3.4] weren't sent ... on our block list (S3150)",
     "blocklisted"),
    ("5.7.1", "554 5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org",
     "blocklisted"),
    ("4.7.26", "421-4.7.26 This mail has been rate limited because it is unauthenticated", "auth"),
    ("5.7.26", "550-5.7.26 Unauthenticated email from example.com is not accepted due to DMARC policy", "auth"),
    ("4.7.29", "421-4.7.29 Your email has been rate limited because this message wasn't sent over a TLS", "tls"),
    ("4.2.2", "452 4.2.2 The email account that you tried to reach is over quota", "mailbox_full"),
    ("5.2.2", "552 5.2.2 Mailbox full", "mailbox_full"),
    ("5.1.1", "550 5.1.1 <x@gmx.de>: Recipient address rejected: User unknown", "user_unknown"),
    ("5.4.4", "Host or domain name not found. Name service error for name=x.invalid type=MX: Host not found",
     "domain_unknown"),
    ("4.4.3", "Host or domain name not found. Name service error for name=x type=MX: Host not found, try again",
     "dns"),
    ("4.4.1", "connect to arobor.ru[178.210.73.19]:25: Connection timed out", "connection"),
    ("4.4.2", "lost connection with mx[1.2.3.4] while sending RCPT TO", "connection"),
    ("4.4.1", "delivery temporarily suspended: connect to x[1.2.3.4]:25: Connection refused", "self"),
    ("4.3.0", "deferred transport", "self"),
    ("5.7.1", "554 5.7.1 <x@y>: Relay access denied", "policy"),
    ("5.0.0", "554 custom content marker found", "content"),
    ("4.0.0", "451 DT:SPM 163 mx13, please try again 15min later", "content"),  # NetEase's spam verdict
    # Issue 10: the words after "Recipient address rejected:" decide.
    ("4.2.0", "450 4.2.0 <x@y>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/",
     "greylisted"),
    ("4.1.2", "450 4.1.2 <x@nowhere.example>: Recipient address rejected: Domain not found", "domain_unknown"),
    ("5.4.1", "550 5.4.1 <x@y>: Recipient address rejected: Access denied", "policy"),
    ("4.7.1", "450 4.7.1 <x@y>: Recipient address rejected: retrying too fast", "rate_limited"),
    ("5.1.1", "550 5.1.1 <x@y>: Recipient address rejected: xyz", "user_unknown"),
    ("4.0.0", "450 4.0.0 <x@y>: Recipient address rejected: xyz", "user_unknown"),
])
def test_reasons(classifier: Classifier, dsn: str, text: str, reason: str) -> None:
    assert classifier.reason(dsn, text) == reason


@pytest.mark.parametrize(("relay", "text", "host"), [
    ("gmail-smtp-in.l.google.com[108.177.14.26]:25", "", "gmail-smtp-in.l.google.com"),
    ("none", "connect to mx.example[1.2.3.4]:25: Connection timed out", "mx.example"),
    (None, "host mx2.example[1.2.3.4] said: 421 try later", "mx2.example"),
    ("none", "delivery temporarily suspended: unknown", None),
])
def test_relay_host(relay: str | None, text: str, host: str | None) -> None:
    assert relay_host(relay, text) == host


@pytest.mark.parametrize(("config", "message"), [
    ({"lanes": {"rules": [{"lane": "urgent", "match": {"sender": "*"}}]}}, "is not one of names"),
    ({"lanes": {"default": "bulk"}}, "default lane 'bulk'"),
    ({"lanes": {"names": ["High"]}}, "must match"),
    ({"lanes": {"rules": [{"lane": "high", "match": {"sender": "re:("}}]}}, "bad regular expression"),
    ({"lanes": {"rules": [{"lane": "high", "match": {"from": "x"}}]}}, "Extra inputs"),
    ({"providers": {"other": {"domains": ["x"]}}}, "not be 'other'"),
    ({"providers": {"local": {"domains": ["x"]}}}, "or 'local'"),
    ({"local_delivery": {"content_filters": ["amavis 10024"]}}, "must be host, ip"),
    ({"local_delivery": {"loopback": "sometimes"}}, "valid boolean"),
    ({"reasons": [{"reason": "weird", "patterns": ["x"]}]}, "is not one of"),
])
def test_bad_classification_config(config: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ClassificationConfig.model_validate(config)


@pytest.mark.parametrize(("relay", "service", "local"), [
    ("local", "local", True),
    ("virtual", "virtual", True),
    ("dovecot", "pipe", True),  # pipe(8) runs a command on the host
    ("none", "discard", True),
    ("mail.example.com[private/dovecot-lmtp]", "lmtp", True),  # unix socket
    ("127.0.0.1[127.0.0.1]:10024", "smtp", True),  # amavis
    ("localhost[::1]:10026", "amavis/smtp", True),
    ("127.0.0.1[127.0.0.1]:24", "lmtp", True),
    ("mailstore.example[192.0.2.7]:24", "lmtp", False),  # LMTP to another machine
    ("gmail-smtp-in.l.google.com[142.250.1.27]:25", "smtp", False),
    ("none", "error", False),
    (None, "smtp", False),
    ("amavis[172.18.0.5]:10024", "content-filter/smtp", True),  # configured below, by name
    ("filter.example[192.0.2.9]:10024", "smtp", True),  # configured below, by [ip]:port
    ("filter.example[192.0.2.9]:25", "smtp", False),
])
def test_hops_that_stay_on_the_host(relay: str | None, service: str, local: bool) -> None:
    config = ClassificationConfig.model_validate(
        {"local_delivery": {"content_filters": ["AMAVIS", "[192.0.2.9]:10024"]}})
    assert Classifier(config).local_hop(relay, service) is local


def test_loopback_is_not_local_when_it_stands_in_for_the_destinations() -> None:
    """A test lab (or a local relay agent) on loopback: the recipient's provider counts."""
    classifier = Classifier(ClassificationConfig.model_validate({"local_delivery": {"loopback": False}}))
    assert not classifier.local_hop("127.0.0.1[127.0.0.1]:40409", "smtp")
    assert classifier.local_hop("mail.example.com[private/dovecot-lmtp]", "lmtp")
    assert classifier.local_hop("local", "local")


def test_local_is_a_bounded_provider_name(classifier: Classifier) -> None:
    assert classifier.provider_names[-2:] == ("local", "other")
