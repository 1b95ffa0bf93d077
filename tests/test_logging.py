"""Warnings are rate-limited per distinct message, with a count of what was held back."""

import logging

from opik_otel import extract_opik_distributed_trace_attributes
from opik_otel._logging import RateLimitFilter


def test_a_repeated_bad_header_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="opik_otel")
    for _ in range(50):
        assert extract_opik_distributed_trace_attributes({"opik_trace_id": "not-an-id"}) is None
    assert len(caplog.records) == 1
    assert "opik_trace_id" in caplog.records[0].getMessage()


def test_distinct_messages_are_not_held_back(caplog):
    caplog.set_level(logging.WARNING, logger="opik_otel")
    extract_opik_distributed_trace_attributes({"opik_trace_id": "not-an-id"})
    extract_opik_distributed_trace_attributes({"opik_trace_id": "another-bad-id"})
    assert len(caplog.records) == 2


def test_after_the_interval_the_message_returns_with_its_repeat_count():
    limiter = RateLimitFilter(interval_seconds=0.0)
    first = logging.LogRecord("opik_otel.x", logging.WARNING, __file__, 1, "bad %s", ("a",), None)
    assert limiter.filter(first)
    limiter.interval_seconds = 3600.0
    repeats = [logging.LogRecord("opik_otel.x", logging.WARNING, __file__, 1, "bad %s", ("a",), None) for _ in range(3)]
    assert not any(limiter.filter(record) for record in repeats)
    limiter.interval_seconds = 0.0
    again = logging.LogRecord("opik_otel.x", logging.WARNING, __file__, 1, "bad %s", ("a",), None)
    assert limiter.filter(again)
    assert again.getMessage() == "bad a (repeated 3 more times in the last interval)"


def test_debug_and_info_are_never_held_back():
    limiter = RateLimitFilter()
    records = [logging.LogRecord("opik_otel.x", logging.INFO, __file__, 1, "note", (), None) for _ in range(3)]
    assert all(limiter.filter(record) for record in records)
