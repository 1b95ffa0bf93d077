"""Warnings are rate-limited per cause (call site), whatever the values, and show values escaped."""

import logging
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.baggage import set_baggage

from opik_otel import extract_opik_distributed_trace_attributes
from opik_otel._logging import RATE_LIMIT_KEY, RateLimitFilter, escaped, get_logger, reset_rate_limits
from opik_otel.linkage import baggage_linkage, parent_span_linkage, resolve_linkage

TRACE = "0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a"


def record(msg, *args, level=logging.WARNING, name="opik_otel.x", **extra):
    result = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    result.__dict__.update(extra)
    return result


def test_a_repeated_bad_header_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="opik_otel")
    for _ in range(50):
        assert extract_opik_distributed_trace_attributes({"opik_trace_id": "not-an-id"}) is None
    assert len(caplog.records) == 1
    assert "opik_trace_id" in caplog.records[0].getMessage()


def test_distinct_bad_values_of_one_cause_give_one_line_with_the_first_example(caplog):
    caplog.set_level(logging.WARNING, logger="opik_otel")
    for i in range(500):
        extract_opik_distributed_trace_attributes({"opik_trace_id": f"bad-{i}"})
    assert len(caplog.records) == 1
    assert "'bad-0'" in caplog.records[0].getMessage()


def test_different_causes_are_not_merged(caplog):
    caplog.set_level(logging.WARNING, logger="opik_otel")
    extract_opik_distributed_trace_attributes({"opik_trace_id": "not-an-id"})
    extract_opik_distributed_trace_attributes({"opik_trace_id": TRACE, "opik_parent_span_id": "not-an-id"})
    baggage_linkage({"opik.trace_id": "not-an-id"})
    assert len(caplog.records) == 3


def test_after_the_interval_the_cause_returns_with_its_held_back_count():
    limiter = RateLimitFilter(interval_seconds=0.0)
    assert limiter.filter(record("bad %s", "a"))
    limiter.interval_seconds = 3600.0
    assert not any(limiter.filter(record("bad %s", value)) for value in ("b", "c", "d"))
    limiter.interval_seconds = 0.0
    again = record("bad %s", "e")
    assert limiter.filter(again)
    assert again.getMessage() == "bad e (3 more like this held back in the last 0 s)"


def test_an_explicit_key_separates_causes_sharing_a_template():
    limiter = RateLimitFilter()
    assert limiter.filter(record("%s", "refused: 401", **{RATE_LIMIT_KEY: ("refused", 401)}))
    assert limiter.filter(record("%s", "unreachable", **{RATE_LIMIT_KEY: ("retry", None)}))
    assert not limiter.filter(record("%s", "refused again", **{RATE_LIMIT_KEY: ("refused", 401)}))


def test_levels_and_loggers_are_separate_causes():
    limiter = RateLimitFilter()
    assert limiter.filter(record("bad %s", "a"))
    assert limiter.filter(record("bad %s", "a", level=logging.ERROR))
    assert limiter.filter(record("bad %s", "a", name="opik_otel.y"))


def test_debug_and_info_are_never_held_back():
    limiter = RateLimitFilter()
    assert all(limiter.filter(record("note", level=logging.INFO)) for _ in range(3))


def test_values_are_shown_escaped_and_cut_short():
    limiter = RateLimitFilter()
    hostile = record("a %s, b %r, c %.30r", "x\nFAKE LINE\x1b[2J\ud800", "\r\n" + "y" * 5000, "z\x07" * 100)
    assert limiter.filter(hostile)
    message = hostile.getMessage()
    assert message.isprintable()
    assert "x\\nFAKE LINE\\x1b[2J\\ud800" in message
    assert len(message) < 1200
    assert "…" in message


def test_an_argument_whose_str_raises_does_not_break_the_line():
    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

        __repr__ = __str__

    limiter = RateLimitFilter()
    line = record("value %s and %r", Hostile(), Hostile())
    assert limiter.filter(line)
    assert line.getMessage() == "value <unprintable Hostile> and <unprintable Hostile>"


def test_numbers_and_short_names_are_passed_through_unwrapped():
    limiter = RateLimitFilter()
    line = record("%d spans, %.1f s, header %s", 3, 1.5, "opik_trace_id")
    assert limiter.filter(line)
    assert line.args == (3, 1.5, "opik_trace_id")
    assert line.getMessage() == "3 spans, 1.5 s, header opik_trace_id"


def test_number_like_arguments_still_format_as_numbers():
    import enum
    from decimal import Decimal

    class Level(enum.IntEnum):
        HIGH = 3

    limiter = RateLimitFilter()
    line = record("%d items, %.1f s", Level.HIGH, Decimal("1.25"))
    assert limiter.filter(line)
    assert line.getMessage() == "3 items, 1.2 s"


def test_escaped_is_identity_on_printable_text():
    assert escaped("plain text") == "plain text"
    assert escaped("é ü 中") == "é ü 中"
    assert escaped("a\tb") == "a\\tb"


bad_ids = st.text(min_size=1, max_size=40).filter(lambda v: v.strip() and "," not in v)


@settings(max_examples=25, deadline=None)
@given(values=st.lists(bad_ids, min_size=50, max_size=200, unique=True))
def test_distinct_bad_values_at_volume_give_one_line_per_cause(values):
    reset_rate_limits()
    lines = []

    class Collect(logging.Handler):
        def emit(self, rec):
            lines.append(self.format(rec))

    handler = Collect(logging.WARNING)
    package = logging.getLogger("opik_otel")
    package.addHandler(handler)
    previous = package.level
    package.setLevel(logging.WARNING)
    try:
        for value in values:
            if _is_v7(value):
                continue
            extract_opik_distributed_trace_attributes({"opik_trace_id": value})
            extract_opik_distributed_trace_attributes({"opik_trace_id": TRACE, "opik_parent_span_id": value})
            baggage_linkage({"opik.trace_id": value})
            baggage_linkage({"opik.trace_id": TRACE, "opik.span_id": value})
            parent_span_linkage({"opik.trace_id": value, "opik.span_id": TRACE})
            resolve_linkage(set_baggage("opik.trace_id", value))
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)
    # Five causes (resolve_linkage's baggage check is baggage_linkage's cause).
    assert len(lines) <= 5, lines
    assert all(line.isprintable() for line in lines)


def _is_v7(value):
    try:
        return uuid.UUID(value).version == 7
    except ValueError:
        return False


def test_get_logger_installs_one_filter():
    logger = get_logger("opik_otel.tests_logging_once")
    get_logger("opik_otel.tests_logging_once")
    assert sum(isinstance(f, RateLimitFilter) for f in logger.filters) == 1
