"""showq protocol and postqueue -j decoding (collectors/showq.py) on real captured output."""

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.postfix.showq import ShowqProtocolError, decode_postqueue_json, decode_showq

FIXTURES = Path(__file__).parent / "fixtures" / "postfix_queue"
RAW = (FIXTURES / "showq.bin").read_bytes()
REFERENCE = list(decode_postqueue_json((FIXTURES / "postqueue.jsonl").read_text().splitlines()))


def test_showq_equals_postqueue_json() -> None:
    decoded = list(decode_showq([RAW]))
    assert len(decoded) == 12
    assert sorted(decoded, key=lambda m: m.queue_id) == sorted(REFERENCE, key=lambda m: m.queue_id)
    assert sum(m.queue == "hold" for m in decoded) == 1
    assert all(r.reason for m in decoded if m.queue == "deferred" for r in m.recipients)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(RAW) - 1), max_size=40))
def test_any_chunking_decodes_the_same(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(RAW)]
    chunks = [RAW[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(decode_showq(chunks)) == list(decode_showq([RAW]))


@pytest.mark.parametrize("cut", [0, 10, len(RAW) // 2, len(RAW) - 1])
def test_truncated_stream_is_an_error_not_a_smaller_queue(cut: int) -> None:
    with pytest.raises(ShowqProtocolError, match="ended before"):
        list(decode_showq([RAW[:cut]]))


def test_pre_36_stream_without_protocol_record() -> None:
    fields = ["queue_name", "active", "queue_id", "ABC", "time", "100", "size", "5", "sender", "s@x",
              "recipient", "a@gmail.com", "recipient", "b@yahoo.com", "reason", "slow", "", ""]
    stream = "\0".join(fields).encode() + b"\0"
    (message,) = decode_showq([stream])
    assert (message.queue, message.queue_id, message.arrival, message.size) == ("active", "ABC", 100.0, 5)
    assert [(r.address, r.reason) for r in message.recipients] == [("a@gmail.com", ""), ("b@yahoo.com", "slow")]


def test_malformed_record_is_a_protocol_error() -> None:
    with pytest.raises(ShowqProtocolError, match="malformed"):
        list(decode_showq(["\0".join(["queue_name", "active", "time", "notanumber", "", ""]).encode() + b"\0"]))


def test_postqueue_json_311_reasons_and_unknown_members() -> None:
    line = ('{"queue_name": "deferred", "queue_id": "X", "arrival_time": 5, "message_size": 9, '
            '"forced_expire": true, "sender": "", "new_member": 1, "recipients": ['
            '{"address": "a@b", "orig_address": "", "bounce_reason": "550 gone"}, {"address": "c@d"}]}')
    (message,) = decode_postqueue_json([line, ""])
    assert message.forced_expire
    assert [r.reason for r in message.recipients] == ["550 gone", ""]
