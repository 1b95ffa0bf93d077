"""Tests for opik_otel.trace_rows: TraceWrite rows built from real OTel SDK spans."""

import json
import math
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from opik_otel.ids import generate_id
from opik_otel.trace_rows import format_timestamp, trace_row_from_span, trace_rows_request_body

START_NS = 1_700_000_000_123_456_789
END_NS = START_NS + 2_500_000_000


@pytest.fixture(scope="module")
def tracing():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests.trace_rows"), exporter
    provider.shutdown()


@pytest.fixture
def make_span(tracing):
    """Finish a root span with ``attributes`` and return it as the exporter saw it."""
    tracer, exporter = tracing

    def make(attributes=None, *, name="root", trace_id=None, start=START_NS, end=END_NS, body=None):
        exporter.clear()
        attrs = {"opik.trace_id": trace_id or generate_id(), **(attributes or {})}
        span = tracer.start_span(name, attributes=attrs, start_time=start)
        if body is not None:
            body(span)
        span.end(end_time=end)
        (finished,) = exporter.get_finished_spans()
        return finished

    return make


def row(span, **kwargs):
    kwargs.setdefault("project_name", "proj")
    result = trace_row_from_span(span, **kwargs)
    # Every row must survive strict JSON encoding (no NaN/Infinity, no tuples or bytes).
    json.dumps(result, allow_nan=False)
    return result


# --- basics --------------------------------------------------------------------------------


def test_minimal_row_has_only_the_known_fields(make_span):
    trace_id = generate_id()
    result = row(make_span(name="handle request", trace_id=trace_id))
    assert result == {
        "id": trace_id,
        "project_name": "proj",
        "name": "handle request",
        "start_time": "2023-11-14T22:13:20.123456Z",
        "end_time": "2023-11-14T22:13:22.623456Z",
    }


def test_trace_id_is_written_in_canonical_lower_case(make_span):
    trace_id = generate_id()
    span = make_span(trace_id=trace_id.upper().replace("-", ""))
    assert row(span)["id"] == trace_id


@pytest.mark.parametrize("bad", ["not-a-uuid", "0a5b7ac8-64d7-4c9e-8c44-4a0d3c5c0e1b"], ids=["garbage", "uuid4"])
def test_span_without_a_valid_opik_trace_id_is_refused(make_span, bad):
    with pytest.raises(ValueError, match="opik.trace_id"):
        row(make_span(trace_id=bad))


def test_project_name_none_is_omitted(make_span):
    assert "project_name" not in row(make_span(), project_name=None)


@pytest.mark.parametrize(
    "ns, text",
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1_999, "1970-01-01T00:00:00.000001Z"),
        (1_700_000_000_999_999_999, "2023-11-14T22:13:20.999999Z"),  # truncated, never rounded up
        (START_NS, "2023-11-14T22:13:20.123456Z"),
    ],
)
def test_timestamps_are_iso_utc_with_microseconds_and_z(ns, text):
    assert format_timestamp(ns) == text
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert int(parsed.timestamp()) == ns // 1_000_000_000


def test_request_body_wraps_rows(make_span):
    rows = [row(make_span()), row(make_span())]
    assert trace_rows_request_body(rows) == {"traces": rows}
    assert trace_rows_request_body(iter(rows))["traces"][1]["id"] == rows[1]["id"]


# --- input and output ---------------------------------------------------------------------------


def test_input_and_output_follow_the_backend_key_rules(make_span):
    span = make_span(
        {
            "input.value": '{"question": "hi"}',
            "input_mime_type": "application/json",
            "gen_ai.prompt.0.content": "hello",
            "gen_ai.input.messages": '[{"role": "user", "content": "hi"}]',
            "gen_ai.request.temperature": 0.2,
            "output.value": "plain answer",
            "gen_ai.completion.0.content": "hey",
            "gen_ai.output.messages": '[{"role": "assistant"}]',
            "gen_ai.response.id": "resp-1",
            "http.method": "GET",
            "gen_ai.usage.input_tokens": 3,
            "opik.tags": "a",
        }
    )
    result = row(span)
    assert result["input"] == {
        "input.value": {"question": "hi"},
        "input_mime_type": "application/json",
        "gen_ai.prompt.0.content": "hello",
        "gen_ai.input.messages": [{"role": "user", "content": "hi"}],
        "gen_ai.request.temperature": 0.2,
    }
    assert result["output"] == {
        "output.value": "plain answer",
        "gen_ai.completion.0.content": "hey",
        "gen_ai.output.messages": [{"role": "assistant"}],
        "gen_ai.response.id": "resp-1",
    }


def test_bad_json_input_is_kept_raw(make_span):
    result = row(make_span({"input.value": "{not json", "output.value": "[1, 2"}))
    assert result["input"] == {"input.value": "{not json"}
    assert result["output"] == {"output.value": "[1, 2"}


def test_sequence_attributes_become_lists(make_span):
    result = row(make_span({"input.docs": ("a", "b"), "output.scores": (1.5, 2.5)}))
    assert result["input"] == {"input.docs": ["a", "b"]}
    assert result["output"] == {"output.scores": [1.5, 2.5]}


def test_non_finite_floats_and_bytes_stay_json_safe(make_span):
    span = make_span({"input.x": float("nan"), "input.y": float("inf"), "output.raw": b"\xffok"})
    if "output.raw" not in span.attributes:
        pytest.skip("this OTel SDK (1.41, the last for Python 3.9) drops bytes it cannot decode")
    result = row(span)
    assert result["input"] == {"input.x": "nan", "input.y": "inf"}
    assert result["output"] == {"output.raw": "\ufffdok"}


def test_json_nan_and_deep_nesting_inside_strings_do_not_break_encoding(make_span):
    deep = "[" * 5000 + "]" * 5000
    result = row(make_span({"input.value": '{"x": NaN}', "output.value": deep}))
    assert result["input"] == {"input.value": {"x": "nan"}}
    assert result["output"] == {"output.value": deep}


# --- tags ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [("beta", "prod"), '["beta", "prod"]', "beta, prod", " beta,prod ,, "],
    ids=["array", "json-array-string", "comma-separated", "comma-separated-with-blanks"],
)
def test_span_tags_in_every_form(make_span, value):
    assert row(make_span({"opik.tags": value}))["tags"] == ["beta", "prod"]


def test_configured_tags_come_first_and_duplicates_are_dropped(make_span):
    span = make_span({"opik.tags": ("prod", "beta", "prod")})
    assert row(span, tags=["svc", "prod"])["tags"] == ["svc", "prod", "beta"]


def test_configured_tags_alone(make_span):
    assert row(make_span(), tags=("svc",))["tags"] == ["svc"]


def test_a_configured_tag_string_is_not_split_into_characters(make_span):
    assert row(make_span(), tags="svc")["tags"] == ["svc"]


def test_bracketed_non_json_tag_string_falls_back_to_commas(make_span):
    assert row(make_span({"opik.tags": "[beta, prod"}))["tags"] == ["[beta", "prod"]


def test_json_array_with_non_strings(make_span):
    assert row(make_span({"opik.tags": '["a", 1, null, true]'}))["tags"] == ["a", "1", "true"]


def test_no_tags_means_no_key(make_span):
    assert "tags" not in row(make_span({"opik.tags": " , "}))


# --- metadata -------------------------------------------------------------------------------------


def test_metadata_merges_configured_blob_and_prefixed_keys_span_wins(make_span):
    span = make_span(
        {
            "opik.metadata": '{"env": "staging", "version": 2, "nested": {"a": [1, 2]}}',
            "opik.metadata.team": "search",
            "opik.metadata.env": "canary",
        }
    )
    result = row(span, metadata={"env": "prod", "region": "eu", "team": "configured"})
    assert result["metadata"] == {
        "env": "staging",
        "region": "eu",
        "team": "configured",
        "version": 2,
        "nested": {"a": [1, 2]},
        # Stored under the full key, as Opik's backend does for spans.
        "opik.metadata.team": "search",
        "opik.metadata.env": "canary",
    }


@pytest.mark.parametrize("blob", ["{oops", "[1, 2]", '"just a string"'])
def test_opik_metadata_that_is_not_a_json_object_is_kept_raw(make_span, blob):
    assert row(make_span({"opik.metadata": blob}))["metadata"] == {"opik.metadata": blob}


def test_configured_metadata_is_made_json_safe(make_span):
    class Opaque:
        def __str__(self):
            return "opaque!"

    deep: list = []
    cursor = deep
    for _ in range(200):
        cursor.append([])
        cursor = cursor[0]
    metadata = {1: (1, 2), "set": {"b", "a"}, "obj": Opaque(), "nan": math.nan, "deep": deep}
    result = row(make_span(), metadata=metadata)["metadata"]
    assert result["1"] == [1, 2]
    assert result["set"] == ["a", "b"]
    assert result["obj"] == "opaque!"
    assert result["nan"] == "nan"
    assert isinstance(result["deep"], str)


def test_no_metadata_means_no_key(make_span):
    assert "metadata" not in row(make_span(), metadata={})


# --- thread id ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ({"thread_id": "t-1", "gen_ai.conversation.id": "c-1", "session.id": "s-1"}, "t-1"),
        ({"gen_ai.conversation.id": "c-1", "session.id": "s-1"}, "c-1"),
        ({"session.id": "s-1"}, "s-1"),
        ({"thread_id": 42}, "42"),
        ({"thread_id": "  ", "session.id": 7}, "7"),
        ({"thread_id": True, "session.id": "s-1"}, "s-1"),
    ],
)
def test_thread_id_from_span_attributes(make_span, attributes, expected):
    assert row(make_span(attributes))["thread_id"] == expected


def test_explicit_thread_id_wins(make_span):
    assert row(make_span({"thread_id": "t-1"}), thread_id="explicit")["thread_id"] == "explicit"


def test_no_thread_id_means_no_key(make_span):
    assert "thread_id" not in row(make_span({"thread_id": 1.5}))


# --- error info -------------------------------------------------------------------------------------


def _raise(exception):
    try:
        raise exception
    except Exception as caught:  # noqa: BLE001 - the test needs the traceback
        return caught


def test_error_info_from_recorded_exception(make_span):
    def body(span):
        span.record_exception(_raise(ValueError("bad input")))

    info = row(make_span(body=body))["error_info"]
    assert info["exception_type"] == "ValueError"
    assert info["message"] == "bad input"
    assert "Traceback" in info["traceback"] and "ValueError: bad input" in info["traceback"]


def test_last_exception_event_wins_over_earlier_ones_and_status(make_span):
    def body(span):
        span.record_exception(_raise(KeyError("first")))
        span.add_event("log", {"message": "between"})
        span.record_exception(_raise(RuntimeError("second")))
        span.set_status(Status(StatusCode.ERROR, "status text"))

    info = row(make_span(body=body))["error_info"]
    assert (info["exception_type"], info["message"]) == ("RuntimeError", "second")


def test_error_info_from_error_status(make_span):
    def body(span):
        span.set_status(Status(StatusCode.ERROR, "upstream timed out"))

    info = row(make_span(body=body))["error_info"]
    assert info == {"exception_type": "Error", "message": "upstream timed out", "traceback": ""}


def test_error_status_without_description(make_span):
    def body(span):
        span.set_status(Status(StatusCode.ERROR))

    assert row(make_span(body=body))["error_info"] == {"exception_type": "Error", "traceback": ""}


def test_exception_event_with_missing_attributes_gets_required_fields(make_span):
    def body(span):
        span.add_event("exception", {"exception.message": "only a message"})

    info = row(make_span(body=body))["error_info"]
    assert info == {"exception_type": "Exception", "message": "only a message", "traceback": ""}


def test_exception_escaping_a_current_span(tracing):
    tracer, exporter = tracing
    exporter.clear()
    with pytest.raises(ZeroDivisionError):
        with tracer.start_as_current_span("root", attributes={"opik.trace_id": generate_id()}):
            1 / 0  # noqa: B018
    (span,) = exporter.get_finished_spans()
    assert row(span)["error_info"]["exception_type"] == "ZeroDivisionError"


def test_ok_span_has_no_error_info(make_span):
    def body(span):
        span.add_event("log")
        span.set_status(Status(StatusCode.OK))

    assert "error_info" not in row(make_span(body=body))


# --- robustness property ----------------------------------------------------------------------------

_scalar = st.one_of(st.text(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans())
_value = st.one_of(
    _scalar,
    st.lists(st.text(), max_size=4).map(tuple),
    st.lists(st.floats(), max_size=4).map(tuple),
    st.sampled_from(["[", "[1,", '{"a": NaN}', "{}", "[]", "null", '"x"', ",", "[[[]]]"]),
)
_key = st.one_of(
    st.sampled_from(
        [
            "input.value",
            "output.value",
            "opik.tags",
            "opik.metadata",
            "opik.metadata.k",
            "thread_id",
            "session.id",
            "gen_ai.conversation.id",
            "gen_ai.prompt",
            "gen_ai.response.text",
        ]
    ),
    st.text(min_size=1, max_size=10),
)


@settings(max_examples=200, deadline=None)
@given(attributes=st.dictionaries(_key, _value, max_size=8), tags=st.lists(st.text(), max_size=3))
def test_any_attribute_values_give_a_strict_json_row(tracing, attributes, tags):
    tracer, exporter = tracing
    exporter.clear()
    attributes = {k: v for k, v in attributes.items() if k != "opik.trace_id"}
    span = tracer.start_span("p", attributes={**attributes, "opik.trace_id": generate_id()})
    span.end()
    (finished,) = exporter.get_finished_spans()
    result = trace_row_from_span(finished, project_name=None, tags=tags, metadata={"m": attributes})
    json.dumps(result, allow_nan=False)
    assert all(isinstance(tag, str) and tag == tag.strip() and tag for tag in result.get("tags", []))
    assert len(set(result.get("tags", []))) == len(result.get("tags", []))
