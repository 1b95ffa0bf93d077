import base64
import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from opik_otel.attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from opik_otel.ids import generate_id
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from opik_otel.payloads import SPANS, Payload
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opik_otel.shrinking import fit
from opik_otel.sizing import PROTECTED_ATTRIBUTES, truncate_spans_request, truncation_marker

MARKER_TAIL = " bytes by opik_otel]"


@pytest.fixture
def tracing():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sizing-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("sizing.test", "1.2.3"), exporter
    provider.shutdown()


def finished(exporter, name):
    return next(s for s in exporter.get_finished_spans() if s.name == name)


def base64_blob(n_bytes: int, seed: int = 0) -> str:
    raw = random.Random(seed).randbytes(n_bytes * 3 // 4)
    return base64.b64encode(raw).decode("ascii")


def any_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


class Cut:
    """One span as the truncation left it in its OTLP request."""

    def __init__(self, request):
        self.request = request
        self.span = request.resource_spans[0].scope_spans[0].spans[0]
        self.attributes = {kv.key: any_value(kv.value) for kv in self.span.attributes}
        self.events = [(e.name, e.time_unix_nano, {kv.key: any_value(kv.value) for kv in e.attributes}) for e in self.span.events]

    @property
    def size(self):
        return self.request.ByteSize()


def encoded_size(spans):
    return encode_spans(list(spans)).ByteSize()


def truncate(span, limit):
    """The product's truncation of one span's request; None when nothing was cut."""
    result = truncate_spans_request(encode_spans([span]), limit)
    return None if result is None else Cut(result)


# --- fit: splitting before truncating ----------------------------------------------------------


def test_fit_splits_a_batch_before_truncating_anything(tracing):
    tracer, exporter = tracing
    for index in range(16):
        with tracer.start_as_current_span(f"s{index}") as span:
            span.set_attribute("input.value", "v" * 2_000)
    spans = list(exporter.get_finished_spans())
    fitted = fit(Payload(SPANS, body=encode_spans(spans).SerializeToString()), 5_000)
    assert fitted.truncated == 0 and fitted.splits >= 7
    assert all(len(piece.body) <= 5_000 for piece in fitted.pieces)
    names = [s.name for piece in fitted.pieces for s in Cut(ExportTraceServiceRequest.FromString(piece.body)).request.resource_spans[0].scope_spans[0].spans]
    assert names == [s.name for s in spans]  # in order, none lost or repeated


def test_five_megabyte_base64_attribute(tracing):
    tracer, exporter = tracing
    trace_id, span_id, parent_id = generate_id(), generate_id(), generate_id()
    blob = base64_blob(5 * 1024 * 1024)
    with tracer.start_as_current_span("root"):
        with tracer.start_as_current_span("llm call", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("input.image", blob)
            span.set_attribute("output.value", "a cat")
            span.set_attribute("gen_ai.usage.input_tokens", 1234)
            span.set_attribute(OPIK_TRACE_ID, trace_id)
            span.set_attribute(OPIK_SPAN_ID, span_id)
            span.set_attribute(OPIK_PARENT_SPAN_ID, parent_id)
            span.set_status(Status(StatusCode.ERROR, "boom"))
    original = finished(exporter, "llm call")
    assert encoded_size([original]) > 5 * 1024 * 1024

    limit = 64 * 1024
    result = truncate(original, limit)

    size = result.size
    assert size <= limit
    # Cut just enough: only the marker and varint slack separate it from the limit.
    assert size > limit - 100
    image = result.attributes["input.image"]
    assert image.startswith(blob[:1000])
    assert image.endswith(MARKER_TAIL)
    dropped = len(blob) - image.index("…")
    assert image.endswith(truncation_marker(dropped))
    # Everything else is untouched.
    assert result.attributes["output.value"] == "a cat"
    assert result.attributes["gen_ai.usage.input_tokens"] == 1234
    assert result.attributes[OPIK_TRACE_ID] == trace_id
    assert result.attributes[OPIK_SPAN_ID] == span_id
    assert result.attributes[OPIK_PARENT_SPAN_ID] == parent_id
    whole = encode_spans([original])
    before = whole.resource_spans[0].scope_spans[0].spans[0]
    after = result.span
    assert after.name == before.name == original.name
    assert (after.trace_id, after.span_id, after.parent_span_id) == (before.trace_id, before.span_id, before.parent_span_id)
    assert after.kind == before.kind
    assert after.status == before.status and after.status.message == "boom"
    assert (after.start_time_unix_nano, after.end_time_unix_nano) == (before.start_time_unix_nano, before.end_time_unix_nano)
    assert result.request.resource_spans[0].resource == whole.resource_spans[0].resource
    assert result.request.resource_spans[0].scope_spans[0].scope == whole.resource_spans[0].scope_spans[0].scope
    # The original span is not modified.
    assert original.attributes["input.image"] == blob


def test_largest_value_is_cut_first(tracing):
    tracer, exporter = tracing
    with tracer.start_as_current_span("two") as span:
        span.set_attribute("input.document", "d" * 50_000)
        span.set_attribute("output.value", "o" * 20_000)
    original = finished(exporter, "two")
    result = truncate(original, encoded_size([original]) - 10_000)
    assert result.attributes["output.value"] == "o" * 20_000
    assert result.attributes["input.document"].endswith(MARKER_TAIL)
    assert len(result.attributes["input.document"]) > 39_000


def test_several_values_cut_when_largest_is_not_enough(tracing):
    tracer, exporter = tracing
    with tracer.start_as_current_span("many") as span:
        span.set_attribute("input.a", "a" * 30_000)
        span.set_attribute("input.b", "b" * 20_000)
        span.set_attribute("input.c", "c" * 10_000)
    original = finished(exporter, "many")
    result = truncate(original, 15_000)
    assert result.size <= 15_000
    attributes = result.attributes
    assert attributes["input.a"] == truncation_marker(30_000)
    assert attributes["input.b"].endswith(MARKER_TAIL)
    assert attributes["input.c"] == "c" * 10_000


def test_sequence_of_strings(tracing):
    tracer, exporter = tracing
    documents = [f"doc{i}:" + "z" * (5_000 * (i + 1)) for i in range(4)]
    with tracer.start_as_current_span("retrieval") as span:
        span.set_attribute("output.documents", documents)
        span.set_attribute("opik.tags", ["rag", "prod"])
    original = finished(exporter, "retrieval")
    result = truncate(original, 35_000)
    assert result.size <= 35_000
    cut = result.attributes["output.documents"]
    assert isinstance(cut, tuple) and len(cut) == 4
    assert cut[3].startswith("doc3:") and cut[3].endswith(MARKER_TAIL)
    assert cut[:3] == tuple(documents[:3])
    assert tuple(result.attributes["opik.tags"]) == ("rag", "prod")


def test_bytes_and_mapping_values(tracing):
    tracer, exporter = tracing
    payload = bytes(range(256)) * 400
    with tracer.start_as_current_span("mixed") as span:
        span.set_attribute("input.raw", payload)
        span.set_attribute("input.nested", {"text": "n" * 40_000, "count": 3})
    original = finished(exporter, "mixed")
    result = truncate(original, 30_000)
    assert result.size <= 30_000
    nested = result.attributes["input.nested"]
    assert nested["count"] == 3
    assert nested["text"].endswith(MARKER_TAIL)
    raw = result.attributes["input.raw"]
    assert isinstance(raw, bytes)
    assert raw == payload or raw.endswith(MARKER_TAIL.encode())


def test_event_attribute_values_are_truncated(tracing):
    tracer, exporter = tracing
    with tracer.start_as_current_span("with events") as span:
        span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "p" * 60_000})
        span.add_event("note", {"ok": "small"})
        try:
            raise ValueError("bad")
        except ValueError as error:
            span.record_exception(error)
    original = finished(exporter, "with events")
    result = truncate(original, 8_000)
    assert result.size <= 8_000
    assert [e[0] for e in result.events] == [e.name for e in original.events]
    assert result.events[0][2]["gen_ai.prompt"].endswith(MARKER_TAIL)
    assert result.events[0][1] == original.events[0].timestamp
    assert result.events[1][2]["ok"] == "small"
    assert result.events[2][2]["exception.type"] == "ValueError"


def test_utf8_boundary_is_respected(tracing):
    tracer, exporter = tracing
    text = "é漢🙂" * 20_000
    with tracer.start_as_current_span("unicode") as span:
        span.set_attribute("input.value", text)
    original = finished(exporter, "unicode")
    for limit in (1_000, 1_001, 1_002, 1_003, 50_000):
        result = truncate(original, limit)
        value = result.attributes["input.value"]
        assert result.size <= limit
        head = value[: value.index("…")]
        assert text.startswith(head)
        value.encode("utf-8")


def test_protected_values_and_name_survive_impossible_limit(tracing):
    tracer, exporter = tracing
    trace_id = generate_id()
    with tracer.start_as_current_span("n" * 500) as span:
        span.set_attribute(OPIK_TRACE_ID, trace_id)
        span.set_attribute("input.value", "v" * 10_000)
    original = finished(exporter, "n" * 500)
    result = truncate(original, 10)
    assert result.span.name == "n" * 500
    assert result.attributes[OPIK_TRACE_ID] == trace_id
    assert result.attributes["input.value"] == truncation_marker(10_000)
    # As small as truncation can make it.
    assert result.size < 1_500
    assert PROTECTED_ATTRIBUTES == {OPIK_TRACE_ID, "opik.span_id", "opik.parent_span_id"}


def test_nothing_to_truncate_returns_original(tracing):
    tracer, exporter = tracing
    with tracer.start_as_current_span("numbers") as span:
        span.set_attribute("count", 1)
        span.set_attribute("short", "tiny")
    original = finished(exporter, "numbers")
    assert truncate(original, 1) is None  # nothing worth cutting: numbers and a tiny string


def test_dropped_counts_and_links_are_preserved(tracing):
    tracer, exporter = tracing
    limited = TracerProvider(
        span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1)
    )
    limited_exporter = InMemorySpanExporter()
    limited.add_span_processor(SimpleSpanProcessor(limited_exporter))
    other = tracer.start_span("other")
    other.end()
    links = [Link(other.get_span_context(), {"why": "x"}), Link(other.get_span_context())]
    span = limited.get_tracer("t").start_span("limited", links=links)
    span.set_attribute("input.a", "a" * 5_000)
    span.set_attribute("input.b", "b" * 5_000)
    span.set_attribute("input.c", "c" * 5_000)
    span.add_event("e1")
    span.add_event("e2", {"x": "y" * 5_000})
    span.end()
    original = limited_exporter.get_finished_spans()[0]
    assert original.dropped_attributes == 1 and original.dropped_events == 1
    assert original.dropped_links == 1

    result = truncate(original, 3_000)
    assert result.size <= 3_000
    whole = encode_spans([original]).resource_spans[0].scope_spans[0].spans[0]
    assert result.span.dropped_attributes_count == 1
    assert result.span.dropped_events_count == 1
    assert result.span.dropped_links_count == 1
    assert list(result.span.links) == list(whole.links)
    limited.shutdown()


def test_truncated_spans_encode_in_a_batch(tracing):
    tracer, exporter = tracing
    for i in range(3):
        with tracer.start_as_current_span(f"s{i}") as span:
            span.set_attribute("input.value", "q" * 100_000)
    cuts = [truncate(s, 20_000) for s in exporter.get_finished_spans()]
    assert all(cut.size <= 20_000 for cut in cuts)
    merged = ExportTraceServiceRequest()
    for cut in cuts:
        merged.MergeFrom(cut.request)
    assert merged.ByteSize() <= 60_000


@pytest.mark.parametrize(
    "value",
    [tuple(float(i) for i in range(20_000)), tuple(f"w{i}" for i in range(20_000)), tuple(range(20_000))],
    ids=["floats", "many-short-strings", "ints"],
)
def test_values_of_any_type_are_replaced_by_a_marker_when_cutting_strings_is_not_enough(tracing, value):
    tracer, exporter = tracing
    trace_id = generate_id()
    with tracer.start_as_current_span("arrays") as span:
        span.set_attribute(OPIK_TRACE_ID, trace_id)
        span.set_attribute("input.values", value)
        span.set_attribute("input.small", (1, 2, 3))
    original = finished(exporter, "arrays")
    assert encoded_size([original]) > 50_000
    result = truncate(original, 4_000)
    assert result.size <= 4_000
    assert result.attributes["input.values"].startswith("…[truncated ")
    assert result.attributes["input.values"].endswith(MARKER_TAIL)
    assert result.attributes["input.small"] == (1, 2, 3)  # only what had to go
    assert result.attributes[OPIK_TRACE_ID] == trace_id
    assert result.span.name == "arrays"
