"""The direct OTLP encoder writes what OTel's own encoder writes from the exporter's repaired span copies.

Spans are generated over every field the OTLP encoder reads; the reference is
``encode_spans`` applied to the copies the exporter's copy path (``spans.sendable_span``
with ``value_fixes``) makes. Both the decoded messages and the bytes must be equal.
"""

import logging
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

from opik_otel.linkage import span_attributes
from opik_otel.otlp_wire import WireEncoder, official_request
from opik_otel.spans import sendable_span, sendable_surroundings, value_fixes
from helpers import needs_current_otel_encoder

HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=HEALTH)

# --- values -------------------------------------------------------------------------------

INT64 = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.sampled_from([0, 1, -1, 127, 128, 16383, 16384, (1 << 63) - 1, -(1 << 63), 1 << 32]),
)
FLOATS = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324]))
TEXT = st.one_of(
    st.text(max_size=20),
    st.just(""),
    st.text(alphabet="aé€😀\u0000\n", max_size=10),
    # Past the small-length table and across one-/two-/three-byte varints.
    st.sampled_from([127, 128, 16383, 16384, 20000]).map(lambda n: "ü" * (n // 2) + "x" * (n % 2)),
)
BAD_TEXT = st.builds(lambda head, tail: head + "\ud800" + tail, st.text(max_size=5), st.text(max_size=5))
HUGE_INT = st.one_of(st.integers(min_value=1 << 63), st.integers(max_value=-(1 << 63) - 1))
SCALAR = st.one_of(TEXT, st.booleans(), INT64, FLOATS)
# The SDK keeps homogeneous sequences of one type, None allowed among them.
SDK_ARRAY = st.one_of(
    *[st.lists(st.one_of(kind, st.none()), max_size=4).map(tuple) for kind in (TEXT, st.booleans(), INT64, FLOATS)]
)
SDK_VALUE = st.one_of(SCALAR, SDK_ARRAY)
BAD_VALUE = st.one_of(BAD_TEXT, HUGE_INT, st.lists(st.one_of(BAD_TEXT, HUGE_INT, TEXT), min_size=1, max_size=3).map(tuple))
class Text(str):
    """A str subclass, as enums and wrappers in user code produce."""


class Number(int):
    """An int subclass (IntEnum-like)."""


# A ReadableSpan built by hand may carry anything OTLP has a field for (and things it has none for).
RAW_VALUE = st.recursive(
    st.one_of(SCALAR, st.none(), st.binary(max_size=10), st.builds(Text, TEXT), st.builds(Number, INT64)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 9)), children, max_size=3),
    ),
    max_leaves=8,
) | st.just(object())
KEY = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(["opik.trace_id", "http.method", "input.value"]))


def bounded(values, dropped=0):
    store = BoundedAttributes(attributes=values, immutable=True)
    store.dropped = dropped
    return store


SDK_ATTRIBUTES = st.builds(
    bounded,
    st.dictionaries(KEY, st.one_of(SDK_VALUE, SDK_VALUE, BAD_VALUE), max_size=6)
    | st.dictionaries(st.one_of(KEY, BAD_TEXT), SDK_VALUE, max_size=4),
    st.integers(0, 3),
)
CLEAN_ATTRIBUTES = st.builds(bounded, st.dictionaries(KEY, SDK_VALUE, max_size=4), st.integers(0, 3))
RAW_ATTRIBUTES = st.dictionaries(st.one_of(KEY, st.just(""), st.builds(Text, KEY)), RAW_VALUE, max_size=5)

# --- span parts ---------------------------------------------------------------------------

TRACE_STATE = st.lists(
    st.tuples(
        st.builds(str.__add__, st.sampled_from("abz"), st.text("abcdefz0123456789_-*/", max_size=5)),
        st.text("ABCxyz09!~", min_size=1, max_size=6),
    ),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(TraceState)


def span_context(trace_id, span_id, remote, state):
    return SpanContext(trace_id, span_id, is_remote=remote, trace_state=state)


CONTEXT = st.builds(span_context, st.integers(0, (1 << 128) - 1), st.integers(0, (1 << 64) - 1), st.booleans(), TRACE_STATE)
TIME = st.one_of(st.none(), st.just(0), st.integers(1, (1 << 64) - 1))
EVENT = st.builds(
    Event,
    st.one_of(TEXT, BAD_TEXT),
    st.one_of(SDK_ATTRIBUTES, st.none(), RAW_ATTRIBUTES),
    st.integers(0, (1 << 64) - 1),
)
LINK = st.builds(Link, CONTEXT, st.one_of(st.none(), CLEAN_ATTRIBUTES))
STATUS = st.one_of(
    st.none(),
    st.builds(Status, st.sampled_from(list(StatusCode)), st.one_of(st.none(), TEXT, BAD_TEXT)),
)
RESOURCES = [
    Resource({"service.name": "a", "n": 1}),
    Resource({"n": 1, "service.name": "a"}),  # equal to the first: one group, the first one's order
    Resource({"service.name": "b", "list": ("x", "y")}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
    Resource({}),
]
SCOPES = [
    None,
    InstrumentationScope("lib"),
    InstrumentationScope("lib", "1.2.3"),
    InstrumentationScope("lib", "1.2.3", "https://schema/1", {"scope.flag": True, "tags": ("a", "b")}),
    InstrumentationScope("", None, None, {"ü": 1.5}),
]
RESOURCE = st.one_of(
    st.sampled_from(RESOURCES),
    st.builds(Resource, st.dictionaries(KEY, SDK_VALUE, max_size=3), st.sampled_from(["", "https://s/2"])),
)
SCOPE = st.one_of(
    st.sampled_from(SCOPES),
    st.builds(InstrumentationScope, TEXT, st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT), st.dictionaries(KEY, SDK_VALUE, max_size=2)),
)


def with_dropped(items, dropped):
    if not dropped:
        return items
    bounded_list = BoundedList.from_seq(None, items)
    bounded_list.dropped = dropped
    return bounded_list


@st.composite
def spans_with_changes(draw):
    """A span, and the attribute changes the exporter might make to it (None: no changes)."""
    raw = draw(st.booleans())
    # Changes and repairs make copies whose attributes the SDK re-validates, so hand-built
    # spans with values the SDK never keeps are compared unchanged.
    attributes = draw(RAW_ATTRIBUTES if raw else st.one_of(SDK_ATTRIBUTES, st.none()))
    span = ReadableSpan(
        name=draw(st.one_of(TEXT, BAD_TEXT)),
        context=draw(CONTEXT),
        parent=draw(st.one_of(st.none(), CONTEXT)),
        resource=draw(RESOURCE),
        attributes=attributes,
        events=with_dropped(draw(st.lists(EVENT, max_size=3)), draw(st.integers(0, 2))),
        links=with_dropped(draw(st.lists(LINK, max_size=3)), draw(st.integers(0, 2))),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=draw(STATUS),
        start_time=draw(TIME),
        end_time=draw(TIME),
        instrumentation_scope=draw(SCOPE),
    )
    changes = None
    if not raw and draw(st.booleans()):
        existing = sorted(attributes or {}, key=repr)
        keys = st.sampled_from(existing) | KEY if existing else KEY
        changes = draw(st.dictionaries(keys, st.one_of(st.none(), SDK_VALUE), max_size=4))
    return span, changes


def reference(spans, changes):
    """OTel's encoder on the copies the exporter's copy path makes."""
    copies = []
    for span, span_changes in zip(spans, changes):
        fixes = dict(span_changes or {})
        value_fixes(span_attributes(span), fixes)
        copies.append(sendable_span(span, fixes))
    return encode_spans(sendable_surroundings(copies))


@needs_current_otel_encoder
@EXAMPLES
@given(st.lists(spans_with_changes(), min_size=1, max_size=6))
def test_bytes_decode_to_what_the_otel_encoder_builds_from_the_repaired_copies(batch):
    logging.disable(logging.CRITICAL)  # both encoders log what they leave out
    try:
        spans = [span for span, _ in batch]
        changes = [span_changes for _, span_changes in batch]
        expected = reference(spans, changes)
        encoded = WireEncoder().encode(spans, changes)
    finally:
        logging.disable(logging.NOTSET)
    assert encoded.unencodable == []
    assert ExportTraceServiceRequest.FromString(encoded.body) == expected
    assert encoded.body == expected.SerializeToString()


@needs_current_otel_encoder
@settings(max_examples=30, deadline=None, suppress_health_check=HEALTH)
@given(st.lists(spans_with_changes(), min_size=1, max_size=4))
def test_fallback_switch_gives_the_same_request(batch):
    spans = [span for span, _ in batch]
    changes = [span_changes for _, span_changes in batch]
    logging.disable(logging.CRITICAL)
    try:
        ours, official = WireEncoder().encode(spans, changes), official_request(spans, changes)
    finally:
        logging.disable(logging.NOTSET)
    assert ExportTraceServiceRequest.FromString(ours.body) == ExportTraceServiceRequest.FromString(official.body)


def sdk_batch():
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("lib", "1.0")
    other = provider.get_tracer("other")
    for index in range(40):
        with tracer.start_as_current_span("root", attributes={"i": index, "s": "x" * index}) as root:
            root.add_event("e", {"k": [1, 2]})
            with other.start_as_current_span("child", links=[Link(root.get_span_context(), {"l": True})]) as child:
                child.set_status(Status(StatusCode.ERROR, "boom"))
    return list(memory.get_finished_spans())


def test_one_encoder_serves_many_batches_with_the_caches_warm():
    spans = sdk_batch()
    encoder = WireEncoder()
    for start in range(0, len(spans), 7):
        batch = spans[start : start + 7]
        assert encoder.encode(batch).body == encode_spans(batch).SerializeToString()


def test_a_span_that_cannot_be_encoded_is_left_out_and_returned():
    good = sdk_batch()[:2]
    broken = ReadableSpan(name=123, context=good[0].context, resource=good[0].resource)  # a name must be text
    encoded = WireEncoder().encode([good[0], broken, good[1]])
    assert encoded.unencodable == [broken]
    assert encoded.body == encode_spans(good).SerializeToString()


def test_unencodable_link_resource_and_scope_values_are_repaired_not_dropped(caplog):
    base = sdk_batch()[0]
    span = ReadableSpan(
        name="s",
        context=base.context,
        resource=Resource({"service.name": "svc\ud800", "big": 1 << 70}),
        links=[Link(base.context, {"l\ud800": 1, "n": -(1 << 64)})],
        instrumentation_scope=InstrumentationScope("lib", "1", None, {"a": "\udcff"}),
    )
    message = ExportTraceServiceRequest.FromString(WireEncoder().encode([span]).body)
    resource_spans = message.resource_spans[0]
    assert {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes} == {
        "service.name": "svc\ufffd",
        "big": str(1 << 70),
    }
    link = resource_spans.scope_spans[0].spans[0].links[0]
    values = {kv.key: kv.value for kv in link.attributes}
    assert list(values) == ["n", "l\ufffd"]  # repaired keys go after the intact ones
    assert values["l\ufffd"].int_value == 1 and values["n"].string_value == str(-(1 << 64))
    assert resource_spans.scope_spans[0].scope.attributes[0].value.string_value == "\ufffd"
    assert "Traceback" not in caplog.text


def test_a_resource_whose_hash_fails_still_groups_its_spans(caplog):
    """A custom Resource holding keys of mixed types: the SDK's hash (sorted JSON) raises."""
    base = sdk_batch()[0]
    resource = Resource({})
    resource._attributes = {1: "one", None: "none"}
    spans = [ReadableSpan(name=name, context=base.context, resource=resource) for name in ("a", "b")]
    encoded = WireEncoder().encode(spans)
    assert encoded.unencodable == []
    message = ExportTraceServiceRequest.FromString(encoded.body)
    assert [span.name for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans] == ["a", "b"]
    assert len(message.resource_spans) == 1
    assert sorted(kv.key for kv in message.resource_spans[0].resource.attributes) == ["1", "None"]


def exported_through_opik(opik, pipelines, name):
    """Spans needing every exporter change (marker, root options, ids, usage, repairs), as LocalOpik stores them."""
    tracer, tracing = pipelines(name=name, url=opik.url, project_name=name, tags=["t"], metadata={"m": 1}, thread_id="th")
    with tracer.start_as_current_span("root\ud800", attributes={"gen_ai.usage.input_tokens": "NaN", "big": 1 << 70}) as root:
        root.add_event("exception", {"exception.type": "E\udcff", "n": 3})
        with tracer.start_as_current_span("child", attributes={"opik.tags": ["own"], "k\ud800": "v"}):
            pass
    assert tracing.force_flush()
    return sorted(
        ((span.name, sorted((k, repr(v)) for k, v in span.attributes.items() if k not in ("opik.trace_id", "opik.span_id", "opik.parent_span_id")))
         for span in opik.spans(project=name)),
    )


def test_the_exporter_sends_the_same_spans_with_either_encoder(opik, pipelines, monkeypatch):
    wire = exported_through_opik(opik, pipelines, "wire")
    monkeypatch.setenv("OPIK_OTEL_ENCODER", "otel")
    official = exported_through_opik(opik, pipelines, "official")
    assert len(wire) == 2
    assert wire == official
    root_attributes = dict(dict(wire)["root\ufffd"])
    assert "opik_otel.minted_trace" not in root_attributes and "gen_ai.usage.input_tokens" not in root_attributes
    assert root_attributes["big"] == repr(str(1 << 70)) and "thread_id" in root_attributes
