"""Span copies keep what the SDK counted as dropped, which the OTLP encoder reports."""

from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link

from opik_otel.spans import changed_attributes, copy_span


def finished_span_over_its_limits():
    memory = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_events=1, max_links=1, max_span_attributes=1))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.spans")
    with tracer.start_as_current_span("linked") as other:
        pass
    links = [Link(other.get_span_context()), Link(other.get_span_context())]
    with tracer.start_as_current_span("busy", links=links, attributes={"a": 1, "b": 2}) as span:
        span.add_event("first")
        span.add_event("second")
    return [s for s in memory.get_finished_spans() if s.name == "busy"][0]


def test_copy_keeps_dropped_counts_of_attributes_events_and_links():
    span = finished_span_over_its_limits()
    assert (span.dropped_attributes, span.dropped_events, span.dropped_links) == (1, 1, 1)
    copy = copy_span(span, attributes=changed_attributes(span.attributes, {"c": 3}), name="renamed")
    assert (copy.dropped_attributes, copy.dropped_events, copy.dropped_links) == (1, 1, 1)
    assert copy.name == "renamed" and dict(copy.attributes) == {**dict(span.attributes), "c": 3}


def test_changed_attributes_removes_keys_set_to_none():
    assert changed_attributes({"a": 1, "b": 2}, {"a": None, "c": 3}) == {"b": 2, "c": 3}
