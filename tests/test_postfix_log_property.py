"""Property tests: no input can make the Postfix log path raise, and every line is counted once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.classify import Classifier
from collectors.log_collector import LogCollector
from collectors.log_pipeline import LogProcessor
from collectors.postfix.log_events import POSTFIX_LOG
from collectors.postfix.log_parse import (
    BounceNotice,
    Delivery,
    Expired,
    Ignored,
    MessageQueued,
    PostfixLineParser,
    Removed,
    Submitted,
    Unparsed,
)
from tests.helpers import FakeTailer

SAMPLES = Path(__file__).parent / "fixtures" / "postfix_log" / "samples.log"
REAL = [line for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
RESULTS = (MessageQueued, Submitted, Delivery, Expired, Removed, BounceNotice, Ignored, Unparsed)
CLASSIFIER = Classifier()

real_line = st.sampled_from(REAL)
# Real lines cut anywhere, spliced together, or with a random fragment inserted: near-misses of
# the formats are where parsers break.
mangled = st.one_of(
    st.tuples(real_line, st.integers(0, 400)).map(lambda t: t[0][:t[1]]),
    st.tuples(real_line, st.integers(0, 400)).map(lambda t: t[0][t[1]:]),
    st.tuples(real_line, real_line, st.integers(0, 400)).map(lambda t: t[0][:t[2]] + t[1][t[2]:]),
    st.tuples(real_line, st.integers(0, 400), st.text(max_size=20)).map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:]),
)
any_line = st.one_of(
    st.text(), mangled, real_line,
    st.binary().map(lambda b: b.decode("utf-8", "replace")),
    st.text(alphabet=st.sampled_from(" :[]<>=,/.-0123456789ABCDEFabcdefnotqu\t\r"), max_size=200),
)


@settings(max_examples=600, deadline=None)
@given(any_line)
def test_parse_never_raises(line: str) -> None:
    assert isinstance(PostfixLineParser(clock=lambda: 1.8e9).parse(line), RESULTS)


@settings(max_examples=200, deadline=None)
@given(real_line, st.integers(0, 600))
def test_truncated_real_lines_never_raise(line: str, cut: int) -> None:
    parser = PostfixLineParser(clock=lambda: 1.8e9)
    for prefix in (line[:cut], line[:cut] + "\n"):
        assert isinstance(parser.parse(prefix), RESULTS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_line, max_size=40))
def test_every_line_is_counted_exactly_once(lines: list[str]) -> None:
    processor = LogProcessor(POSTFIX_LOG, CLASSIFIER, clock=lambda: 1.8e9)
    processor.process_lines("src", lines)
    assert sum(processor.line_counts()["src"].values()) == len(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=30))
def test_raw_bytes_through_the_sink_are_counted_once(raw: list[bytes]) -> None:
    tailers: list[FakeTailer] = []

    def factory(*args: Any, **kwargs: Any) -> FakeTailer:
        tailers.append(FakeTailer(*args, **kwargs))
        return tailers[-1]

    collector = LogCollector("postfix_log", POSTFIX_LOG, ["src"], CLASSIFIER, checkpoint_path=None, clock=lambda: 1.8e9,
                                    tailer_factory=factory)
    tailers[0].sink("src", raw)
    lines = {metric.name: metric for metric in collector.families()}["mtaq_log_lines"]
    assert sum(sample.value for sample in lines.samples if sample.labels["source"] == "src") == len(raw)


def test_very_long_and_invalid_lines_are_unparsed() -> None:
    processor = LogProcessor(POSTFIX_LOG, CLASSIFIER, clock=lambda: 1.8e9)
    long_delivery = REAL[0] + " " + "x" * 1_048_576
    processor.process_lines("src", [long_delivery, "\ufffd" * 5000, "\x00" * 100, REAL[0]])
    assert processor.line_counts()["src"] == {"parsed": 1, "ignored": 0, "unparsed": 3}
