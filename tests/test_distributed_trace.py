"""Contract §6: reading Opik's distributed-trace headers, attaching them, and the client side."""

import logging
import uuid
from collections.abc import Mapping

import flask
import pytest
import requests
from opentelemetry import baggage, context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from werkzeug.datastructures import EnvironHeaders, Headers, MultiDict

from opik_otel import (
    OPIK_PARENT_SPAN_ID,
    OPIK_SPAN_ID,
    OPIK_TRACE_ID,
    OpikDistributedTraceAttributes,
    OpikSpanProcessor,
    attach_to_parent,
    context_with_opik_baggage,
    extract_opik_distributed_trace_attributes,
    generate_id,
    get_distributed_trace_headers,
    get_opik_trace_id,
)
from opik_otel import distributed_trace

TRACE = "0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a"
PARENT = "0192f5e0-7b3d-7aaa-9bbb-cccccccccccc"
OTHER_TRACE = "0192f5e0-7b3e-7000-a000-000000000001"
OTHER_PARENT = "0192f5e0-7b3f-7000-b000-000000000002"
V4 = "9b2f7a52-1c3e-4d5f-8a6b-7c8d9e0f1a2b"
# TRACE without its leading zero: Python's uuid.UUID pads "{ " + SHORT + "}" back into TRACE.
SHORT_TRACE = TRACE.replace("-", "")[1:]

TRACE_HEADER = "opik_trace_id"
PARENT_HEADER = "opik_parent_span_id"

extract = extract_opik_distributed_trace_attributes


@pytest.fixture
def warnings_(caplog):
    """The warnings opik_otel.distributed_trace.LOGGER emitted during the test."""
    caplog.set_level(logging.WARNING)

    def records():
        return [
            r
            for r in caplog.records
            if r.name == distributed_trace.LOGGER.name and r.levelno >= logging.WARNING
        ]

    return records


def names_header(record, header):
    """The warning is a %-style call with the header name among its args."""
    return isinstance(record.args, tuple) and header in record.args


def expect(trace_id, parent_span_id=None):
    return OpikDistributedTraceAttributes(trace_id, parent_span_id)


def assert_canonical_v7(value):
    assert isinstance(value, str)
    assert uuid.UUID(value).version == 7
    assert str(uuid.UUID(value)) == value


# --- header names -------------------------------------------------------------------------


def test_reads_both_headers(warnings_):
    assert extract({TRACE_HEADER: TRACE, PARENT_HEADER: PARENT}) == expect(TRACE, PARENT)
    assert warnings_() == []


def test_trace_only(warnings_):
    result = extract({TRACE_HEADER: TRACE})
    assert result == expect(TRACE)
    assert result.as_attributes() == {OPIK_TRACE_ID: TRACE}
    assert warnings_() == []


@pytest.mark.parametrize(
    "trace_name, parent_name",
    [
        ("OPIK_TRACE_ID", "OPIK_PARENT_SPAN_ID"),
        ("Opik_Trace_Id", "Opik_Parent_Span_Id"),
        ("oPiK_tRaCe_Id", "OpIk_PaReNt_SpAn_Id"),
        ("opik-trace-id", "opik-parent-span-id"),
        ("Opik-Trace-Id", "Opik-Parent-Span-Id"),
        ("OPIK-TRACE-ID", "OPIK-PARENT-SPAN-ID"),
    ],
)
def test_names_match_case_insensitively_in_both_spellings(trace_name, parent_name):
    result = extract({trace_name: TRACE, parent_name: PARENT})
    assert result == expect(TRACE, PARENT)
    assert result.as_attributes() == {OPIK_TRACE_ID: TRACE, OPIK_PARENT_SPAN_ID: PARENT}


def test_unrelated_headers_are_ignored():
    headers = {"opik_trace": TRACE, "x-opik_trace_id": TRACE, "trace_id": TRACE, "opik_span_id": PARENT}
    assert extract(headers) is None


def test_first_matching_name_wins():
    assert extract({"opik_trace_id": TRACE, "OPIK_TRACE_ID": OTHER_TRACE}) == expect(TRACE)
    assert extract({"OPIK_TRACE_ID": OTHER_TRACE, "opik_trace_id": TRACE}) == expect(OTHER_TRACE)
    pairs = [
        ("opik-trace-id", TRACE),
        ("opik_parent_span_id", PARENT),
        ("opik_trace_id", OTHER_TRACE),
        ("Opik-Parent-Span-Id", OTHER_PARENT),
    ]
    assert extract(pairs) == expect(TRACE, PARENT)


def test_first_match_wins_even_when_its_value_is_not_a_string(warnings_):
    # Non-string values count as absent; a later spelling does not take over.
    assert extract([("opik_trace_id", 123), ("OPIK_TRACE_ID", TRACE)]) is None
    assert warnings_() == []


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 123, 1.5, True, object(), {"id": TRACE}])
def test_non_string_trace_id_counts_as_absent(warnings_, value):
    assert extract({TRACE_HEADER: value}) is None
    assert warnings_() == []


@pytest.mark.parametrize("value", [None, 123, object()])
def test_non_string_parent_counts_as_absent(warnings_, value):
    assert extract({TRACE_HEADER: TRACE, PARENT_HEADER: value}) == expect(TRACE)
    assert warnings_() == []


def test_values_are_trimmed(warnings_):
    headers = {TRACE_HEADER: "  " + TRACE + "\t", PARENT_HEADER: "\n" + PARENT + "  "}
    assert extract(headers) == expect(TRACE, PARENT)
    assert warnings_() == []


@pytest.mark.parametrize("headers", [{}, {TRACE_HEADER: ""}, {TRACE_HEADER: "   "}, {"other": TRACE}])
def test_missing_or_blank_trace_id_gives_nothing_silently(warnings_, headers):
    assert extract(headers) is None
    assert warnings_() == []


@pytest.mark.parametrize("trace_value", [None, "", "  "])
def test_parent_without_trace_id_warns(warnings_, trace_value):
    headers = {PARENT_HEADER: PARENT}
    if trace_value is not None:
        headers[TRACE_HEADER] = trace_value
    assert extract(headers) is None
    records = warnings_()
    assert len(records) == 1
    assert names_header(records[0], TRACE_HEADER)
    assert names_header(records[0], PARENT_HEADER)


def test_blank_parent_without_trace_is_silent(warnings_):
    assert extract({PARENT_HEADER: "  "}) is None
    assert warnings_() == []


@pytest.mark.parametrize(
    "value",
    [
        V4,
        str(uuid.uuid1()),
        str(uuid.uuid5(uuid.NAMESPACE_URL, "x")),
        "0192f5e0-7b3c-8d4e-8f5a-1b2c3d4e5f6a",  # version 8
        "0192f5e0-7b3c-7d4e-0f5a-1b2c3d4e5f6a",  # version nibble 7, wrong variant
        "00000000-0000-0000-0000-000000000000",
        "not-a-uuid",
        TRACE[:-1],
        "{ " + TRACE + " }",
        "{ " + TRACE + "}",
        "urn:uuid: " + TRACE,
        "{ " + SHORT_TRACE + "}",
        "urn:uuid: " + SHORT_TRACE,
        "{\t" + SHORT_TRACE + "}",
        TRACE.replace("-", " "),
        TRACE[:18] + " " + TRACE[18:],
    ],
)
def test_invalid_trace_id_gives_nothing_and_one_warning(warnings_, value):
    assert extract({TRACE_HEADER: value, PARENT_HEADER: PARENT}) is None
    records = warnings_()
    assert len(records) == 1
    assert names_header(records[0], TRACE_HEADER)


def test_blank_parent_is_absent(warnings_):
    assert extract({TRACE_HEADER: TRACE, PARENT_HEADER: "   "}) == expect(TRACE)
    assert extract({TRACE_HEADER: TRACE, PARENT_HEADER: ""}) == expect(TRACE)
    assert warnings_() == []


@pytest.mark.parametrize("value", [V4, "garbage", "{ " + PARENT + " }", "urn:uuid: " + PARENT, PARENT[:-2]])
def test_invalid_parent_is_dropped_with_a_warning_and_trace_kept(warnings_, value):
    assert extract({TRACE_HEADER: TRACE, PARENT_HEADER: value}) == expect(TRACE)
    records = warnings_()
    assert len(records) == 1
    assert names_header(records[0], PARENT_HEADER)
    assert not names_header(records[0], TRACE_HEADER)


@pytest.mark.parametrize(
    "spell",
    [
        str.upper,
        lambda v: v.replace("-", ""),
        lambda v: v.upper().replace("-", ""),
        lambda v: "{" + v + "}",
        lambda v: "{" + v.upper() + "}",
        lambda v: "urn:uuid:" + v,
        lambda v: "urn:uuid:" + v.upper(),
    ],
    ids=["upper", "hex", "upper-hex", "braces", "upper-braces", "urn", "upper-urn"],
)
def test_other_spellings_are_accepted_and_written_canonical(warnings_, tracer, spell):
    headers = {TRACE_HEADER: "  " + spell(TRACE) + " ", PARENT_HEADER: spell(PARENT)}
    assert extract(headers) == expect(TRACE, PARENT)
    span = tracer.start_span("boundary")
    assert attach_to_parent(span, headers) is True
    assert span.attributes[OPIK_TRACE_ID] == TRACE
    assert span.attributes[OPIK_PARENT_SPAN_ID] == PARENT
    span.end()
    assert warnings_() == []


# --- input shapes -------------------------------------------------------------------------


class PlainMapping(Mapping):
    """A read-only Mapping that is not a dict."""

    def __init__(self, data):
        self._data = list(data.items())

    def __getitem__(self, key):
        for k, v in self._data:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self):
        return iter(k for k, _ in self._data)

    def __len__(self):
        return len(self._data)


def flask_request_headers(headers):
    app = flask.Flask(__name__)
    with app.test_request_context("/", headers=headers):
        request_headers = flask.request.headers
        assert isinstance(request_headers, EnvironHeaders)
        return extract(request_headers)


def test_custom_mapping():
    assert extract(PlainMapping({"Opik_Trace_Id": TRACE, "OPIK_PARENT_SPAN_ID": PARENT})) == expect(TRACE, PARENT)


def test_requests_case_insensitive_dict():
    headers = requests.structures.CaseInsensitiveDict({"Opik-Trace-Id": TRACE, "opik_parent_span_id": PARENT})
    assert extract(headers) == expect(TRACE, PARENT)


@pytest.mark.parametrize(
    "headers",
    [
        {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT},
        {"opik-trace-id": TRACE, "opik-parent-span-id": PARENT},
        {"Opik-Trace-Id": TRACE.upper(), "OPIK_PARENT_SPAN_ID": "{" + PARENT + "}"},
    ],
)
def test_flask_request_headers(headers):
    assert flask_request_headers(headers) == expect(TRACE, PARENT)


def test_werkzeug_headers_and_multidict():
    assert extract(Headers([("Opik-Trace-Id", TRACE), ("Opik-Parent-Span-Id", PARENT)])) == expect(TRACE, PARENT)
    multi = MultiDict([("opik_trace_id", TRACE), ("opik_trace_id", OTHER_TRACE)])
    assert extract(multi) == expect(TRACE)


def test_list_of_string_pairs():
    assert extract([("Content-Type", "text/plain"), ("OPIK_TRACE_ID", TRACE), ("opik_parent_span_id", PARENT)]) == (
        expect(TRACE, PARENT)
    )


def test_asgi_scope_bytes_pairs():
    scope_headers = [
        (b"host", b"localhost"),
        (b"opik-trace-id", TRACE.encode()),
        (b"opik-parent-span-id", b" " + PARENT.upper().encode() + b" "),
    ]
    assert extract(scope_headers) == expect(TRACE, PARENT)
    assert extract([(b"opik_trace_id", TRACE.encode())]) == expect(TRACE)


@pytest.mark.parametrize("container", [list, tuple])
def test_multi_valued_headers_use_the_first_value(container):
    headers = {TRACE_HEADER: container([TRACE, OTHER_TRACE]), PARENT_HEADER: container([PARENT.encode(), OTHER_PARENT])}
    assert extract(headers) == expect(TRACE, PARENT)


def test_empty_multi_value_is_absent(warnings_):
    assert extract({TRACE_HEADER: [], PARENT_HEADER: PARENT}) is None
    assert len(warnings_()) == 1
    assert extract({TRACE_HEADER: TRACE, PARENT_HEADER: []}) == expect(TRACE)


def test_wsgi_environ():
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "wsgi.input": object(),
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "localhost",
        "HTTP_OPIK_TRACE_ID": TRACE,
        "HTTP_OPIK_PARENT_SPAN_ID": PARENT,
    }
    assert extract(environ) == expect(TRACE, PARENT)


def test_wsgi_environ_comma_joined_same_id_is_silent(warnings_):
    # wsgiref joins opik_trace_id and opik-trace-id into one variable.
    environ = {"HTTP_OPIK_TRACE_ID": f"{TRACE},{TRACE}", "HTTP_OPIK_PARENT_SPAN_ID": f"{PARENT}, {PARENT.upper()}"}
    assert extract(environ) == expect(TRACE, PARENT)
    assert warnings_() == []


def test_comma_joined_different_trace_ids_take_the_first_with_a_warning(warnings_):
    assert extract({"HTTP_OPIK_TRACE_ID": f"{TRACE},{OTHER_TRACE}"}) == expect(TRACE)
    records = warnings_()
    assert len(records) == 1
    assert names_header(records[0], TRACE_HEADER)


def test_comma_joined_different_parent_ids_take_the_first_with_a_warning(warnings_):
    assert extract({TRACE_HEADER: TRACE, PARENT_HEADER: f"{PARENT} , {OTHER_PARENT}"}) == expect(TRACE, PARENT)
    records = warnings_()
    assert len(records) == 1
    assert names_header(records[0], PARENT_HEADER)


class ExplodingMapping(Mapping):
    def __getitem__(self, key):
        raise RuntimeError("boom")

    def __iter__(self):
        raise RuntimeError("boom")

    def __len__(self):
        return 1

    def items(self):
        raise RuntimeError("boom")


class ItemsNotCallable:
    items = 5


@pytest.mark.parametrize(
    "headers",
    [
        None,
        42,
        3.5,
        "opik_trace_id",
        "opik_trace_id=" + TRACE,
        b"opik_trace_id: " + TRACE.encode(),
        object(),
        [1, 2, 3],
        [("opik_trace_id",)],
        [("opik_trace_id", TRACE, "extra")],
        [None, ("x", "y")],
        {1: 2, None: TRACE, (TRACE_HEADER,): TRACE},
        ExplodingMapping(),
        ItemsNotCallable(),
        iter([("a", "b")]),
    ],
    ids=repr,
)
def test_garbage_input_gives_none_without_raising(headers):
    assert extract(headers) is None
    span = RecordingSpan()
    assert attach_to_parent(span, headers) is False
    assert span.calls == []


def test_malformed_items_are_skipped():
    assert extract([None, ("opik_trace_id",), 7, ("opik_trace_id", TRACE)]) == expect(TRACE)


# --- attach_to_parent ---------------------------------------------------------------------


class RecordingSpan:
    """A minimal span that records every attribute call."""

    def __init__(self, attributes=None):
        self.attributes = dict(attributes or {})
        self.calls = []

    def set_attributes(self, attributes):
        self.calls.append(("set_attributes", dict(attributes)))
        self.attributes.update(attributes)

    def set_attribute(self, key, value):
        self.calls.append(("set_attribute", key, value))
        self.attributes[key] = value


def test_attach_sets_everything_in_one_call():
    span = RecordingSpan()
    assert attach_to_parent(span, {TRACE_HEADER: TRACE, PARENT_HEADER: PARENT}) is True
    assert len(span.calls) == 1
    method, attributes = span.calls[0]
    assert method == "set_attributes"
    assert set(attributes) == {OPIK_TRACE_ID, OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID}
    assert attributes[OPIK_TRACE_ID] == TRACE
    assert attributes[OPIK_PARENT_SPAN_ID] == PARENT
    assert_canonical_v7(attributes[OPIK_SPAN_ID])
    assert attributes[OPIK_SPAN_ID] not in (TRACE, PARENT)


def test_attach_without_parent_sets_trace_and_span_id_in_one_call():
    span = RecordingSpan()
    assert attach_to_parent(span, {TRACE_HEADER: TRACE}) is True
    assert len(span.calls) == 1
    method, attributes = span.calls[0]
    assert method == "set_attributes"
    assert set(attributes) == {OPIK_TRACE_ID, OPIK_SPAN_ID}
    assert_canonical_v7(attributes[OPIK_SPAN_ID])


def test_attach_mints_a_fresh_span_id_each_time(tracer):
    span_ids = set()
    for _ in range(20):
        span = tracer.start_span("boundary")
        assert attach_to_parent(span, {TRACE_HEADER: TRACE, PARENT_HEADER: PARENT})
        assert span.attributes[OPIK_TRACE_ID] == TRACE
        assert span.attributes[OPIK_PARENT_SPAN_ID] == PARENT
        span_ids.add(span.attributes[OPIK_SPAN_ID])
        assert_canonical_v7(span.attributes[OPIK_SPAN_ID])
        span.end()
    assert len(span_ids) == 20


def test_attach_on_a_real_span_is_exported(tracer, exporter):
    with tracer.start_as_current_span("boundary") as span:
        assert attach_to_parent(span, [("Opik-Trace-Id", TRACE.upper())])
    (finished,) = exporter.get_finished_spans()
    assert finished.attributes[OPIK_TRACE_ID] == TRACE
    assert OPIK_PARENT_SPAN_ID not in finished.attributes
    assert_canonical_v7(finished.attributes[OPIK_SPAN_ID])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        None,
        {TRACE_HEADER: V4, PARENT_HEADER: PARENT},
        {TRACE_HEADER: "   ", PARENT_HEADER: PARENT},
        {PARENT_HEADER: PARENT},
        {TRACE_HEADER: 5},
    ],
)
def test_attach_with_bad_headers_returns_false_and_leaves_the_span_alone(tracer, headers):
    stamped = {OPIK_TRACE_ID: OTHER_TRACE, OPIK_SPAN_ID: OTHER_PARENT, OPIK_PARENT_SPAN_ID: PARENT, "k": "v"}
    span = RecordingSpan(stamped)
    assert attach_to_parent(span, headers) is False
    assert span.calls == []
    assert span.attributes == stamped

    real = tracer.start_span("boundary", attributes=stamped)
    assert attach_to_parent(real, headers) is False
    assert dict(real.attributes) == stamped
    real.end()


def test_attach_without_parent_makes_a_stamped_span_top_level(tracer, exporter):
    # The upstream pitfall: a span linked into another trace at start (here through
    # baggage) keeps that trace's parent id unless attach removes it.
    ctx = baggage.set_baggage(OPIK_TRACE_ID, OTHER_TRACE)
    ctx = baggage.set_baggage(OPIK_SPAN_ID, OTHER_PARENT, ctx)
    span = tracer.start_span("boundary", context=ctx)
    assert span.attributes[OPIK_PARENT_SPAN_ID] == OTHER_PARENT
    old_span_id = span.attributes[OPIK_SPAN_ID]

    assert attach_to_parent(span, {TRACE_HEADER: TRACE}) is True
    assert span.attributes[OPIK_TRACE_ID] == TRACE
    assert OPIK_PARENT_SPAN_ID not in span.attributes
    assert span.attributes[OPIK_SPAN_ID] != old_span_id
    span.end()
    (finished,) = exporter.get_finished_spans()
    assert OPIK_PARENT_SPAN_ID not in finished.attributes
    assert finished.attributes[OPIK_TRACE_ID] == TRACE


def test_attach_with_parent_replaces_a_stamped_parent(tracer):
    span = tracer.start_span("boundary", attributes={OPIK_TRACE_ID: OTHER_TRACE, OPIK_PARENT_SPAN_ID: OTHER_PARENT})
    assert attach_to_parent(span, {TRACE_HEADER: TRACE, PARENT_HEADER: PARENT})
    assert span.attributes[OPIK_TRACE_ID] == TRACE
    assert span.attributes[OPIK_PARENT_SPAN_ID] == PARENT
    span.end()


def test_attach_without_parent_on_a_foreign_stamped_span_leaves_no_usable_parent():
    span = RecordingSpan({OPIK_TRACE_ID: OTHER_TRACE, OPIK_PARENT_SPAN_ID: OTHER_PARENT})
    assert attach_to_parent(span, {TRACE_HEADER: TRACE}) is True
    assert span.attributes[OPIK_TRACE_ID] == TRACE
    # A span without an attribute store cannot lose the key; it must at least not name a parent.
    assert span.attributes.get(OPIK_PARENT_SPAN_ID) in (None, "")


def test_attach_never_raises_on_a_broken_span():
    class Broken:
        attributes = {}

        def set_attributes(self, attributes):
            raise RuntimeError("broken span")

        set_attribute = set_attributes

    assert attach_to_parent(Broken(), {TRACE_HEADER: TRACE}) is False
    assert attach_to_parent(object(), {TRACE_HEADER: TRACE}) is False
    assert attach_to_parent(None, {TRACE_HEADER: TRACE}) is False


def test_attached_span_is_the_parent_of_its_descendants(tracer, exporter):
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {TRACE_HEADER: TRACE, PARENT_HEADER: PARENT})
        with tracer.start_as_current_span("child"):
            pass
    child, boundary = exporter.get_finished_spans()
    assert child.attributes[OPIK_TRACE_ID] == TRACE
    assert child.attributes[OPIK_PARENT_SPAN_ID] == boundary.attributes[OPIK_SPAN_ID]


# --- client side --------------------------------------------------------------------------


def test_get_distributed_trace_headers_for_the_current_span(tracer):
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {TRACE_HEADER: TRACE, PARENT_HEADER: PARENT})
        assert get_distributed_trace_headers() == {
            "opik_trace_id": TRACE,
            "opik_parent_span_id": boundary.attributes[OPIK_SPAN_ID],
        }
        with tracer.start_as_current_span("child") as child:
            headers = get_distributed_trace_headers()
            assert headers == {"opik_trace_id": TRACE, "opik_parent_span_id": child.attributes[OPIK_SPAN_ID]}
            # An explicit span wins over the current one.
            assert get_distributed_trace_headers(boundary)["opik_parent_span_id"] == boundary.attributes[OPIK_SPAN_ID]


def test_get_distributed_trace_headers_round_trips_into_extract(tracer):
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {TRACE_HEADER: TRACE})
        headers = get_distributed_trace_headers()
    assert extract(headers) == expect(TRACE, boundary.attributes[OPIK_SPAN_ID])


def test_get_distributed_trace_headers_writes_canonical_ids():
    span = RecordingSpan({OPIK_TRACE_ID: "{" + TRACE.upper() + "}", OPIK_SPAN_ID: PARENT.replace("-", "")})
    assert get_distributed_trace_headers(span) == {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT}


def test_get_distributed_trace_headers_outside_a_subtree(tracer):
    assert get_distributed_trace_headers() is None
    with tracer.start_as_current_span("plain") as plain:
        assert get_distributed_trace_headers() is None
        assert get_distributed_trace_headers(plain) is None
    assert get_distributed_trace_headers(RecordingSpan({OPIK_TRACE_ID: TRACE})) is None
    assert get_distributed_trace_headers(RecordingSpan({OPIK_SPAN_ID: PARENT})) is None
    assert get_distributed_trace_headers(RecordingSpan({OPIK_TRACE_ID: V4, OPIK_SPAN_ID: PARENT})) is None
    assert get_distributed_trace_headers(trace.INVALID_SPAN) is None


def test_get_opik_trace_id(tracer):
    assert get_opik_trace_id() is None
    with tracer.start_as_current_span("boundary") as boundary:
        assert get_opik_trace_id() is None
        attach_to_parent(boundary, {TRACE_HEADER: TRACE.upper()})
        assert get_opik_trace_id() == TRACE
        with tracer.start_as_current_span("child") as child:
            assert get_opik_trace_id() == TRACE
            assert get_opik_trace_id(child) == TRACE
    other = tracer.start_span("other")
    assert get_opik_trace_id(other) is None
    assert get_opik_trace_id(RecordingSpan({OPIK_TRACE_ID: "nope"})) is None
    assert get_opik_trace_id(RecordingSpan({OPIK_TRACE_ID: OTHER_TRACE.upper()})) == OTHER_TRACE
    other.end()


def test_context_with_opik_baggage_outside_a_subtree_is_unchanged(tracer):
    base = context.get_current()
    assert context_with_opik_baggage() is base
    with tracer.start_as_current_span("plain"):
        current = context.get_current()
        assert context_with_opik_baggage() is current
        assert baggage.get_all(context_with_opik_baggage()) == {}


def test_context_with_opik_baggage_entries(tracer):
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {TRACE_HEADER: TRACE})
        ctx = context_with_opik_baggage()
    assert baggage.get_baggage(OPIK_TRACE_ID, ctx) == TRACE
    assert baggage.get_baggage(OPIK_SPAN_ID, ctx) == boundary.attributes[OPIK_SPAN_ID]
    # Explicit context and span.
    base = baggage.set_baggage("tenant", "acme")
    ctx = context_with_opik_baggage(base, span=boundary)
    assert baggage.get_all(ctx) == {
        "tenant": "acme",
        OPIK_TRACE_ID: TRACE,
        OPIK_SPAN_ID: boundary.attributes[OPIK_SPAN_ID],
    }


def test_baggage_round_trip_through_w3c_propagators_links_downstream(tracer, exporter):
    with tracer.start_as_current_span("client") as client:
        attach_to_parent(client, {TRACE_HEADER: TRACE, PARENT_HEADER: PARENT})
        outgoing = context_with_opik_baggage()
        carrier = {}
        TraceContextTextMapPropagator().inject(carrier, context=outgoing)
        W3CBaggagePropagator().inject(carrier, context=outgoing)
    assert "traceparent" in carrier and "opik.trace_id" in carrier["baggage"]

    downstream_exporter = InMemorySpanExporter()
    downstream = TracerProvider()
    downstream.add_span_processor(OpikSpanProcessor())
    downstream.add_span_processor(SimpleSpanProcessor(downstream_exporter))
    try:
        incoming = TraceContextTextMapPropagator().extract(carrier)
        incoming = W3CBaggagePropagator().extract(carrier, context=incoming)
        server_tracer = downstream.get_tracer("downstream")
        with server_tracer.start_as_current_span("server", context=incoming):
            with server_tracer.start_as_current_span("server.child"):
                pass
    finally:
        downstream.shutdown()

    child, server = downstream_exporter.get_finished_spans()
    assert server.context.trace_id == client.context.trace_id  # W3C trace context came through too
    assert server.attributes[OPIK_TRACE_ID] == TRACE
    assert server.attributes[OPIK_PARENT_SPAN_ID] == client.attributes[OPIK_SPAN_ID]
    assert_canonical_v7(server.attributes[OPIK_SPAN_ID])
    assert server.attributes[OPIK_SPAN_ID] != client.attributes[OPIK_SPAN_ID]
    assert child.attributes[OPIK_TRACE_ID] == TRACE
    assert child.attributes[OPIK_PARENT_SPAN_ID] == server.attributes[OPIK_SPAN_ID]


def test_generated_ids_are_accepted_by_extract():
    trace_id, parent_id = generate_id(), generate_id()
    assert extract({TRACE_HEADER: trace_id, PARENT_HEADER: parent_id}) == expect(trace_id, parent_id)


def test_comma_joined_value_with_a_blank_element_uses_the_non_blank_one(caplog):
    trace_id = generate_id()
    for joined in (f",{trace_id}", f"{trace_id},", f" , {trace_id} ,"):
        caplog.clear()
        result = extract_opik_distributed_trace_attributes({"HTTP_OPIK_TRACE_ID": joined})
        assert result is not None and result.opik_trace_id == trace_id
        assert not caplog.records
