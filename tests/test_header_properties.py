"""Property tests: header parsing never raises and never lets an invalid id through."""

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from opik_otel import (
    OPIK_PARENT_SPAN_ID,
    OPIK_SPAN_ID,
    OPIK_TRACE_ID,
    attach_to_parent,
    extract_opik_distributed_trace_attributes,
)
from opik_otel.ids import uuid_v7_int
from helpers import is_canonical_v7

TRACER = TracerProvider().get_tracer("tests.header_properties")
PROPERTY_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])




def spell(value, style):
    return {
        "canonical": value,
        "upper": value.upper(),
        "hex": value.replace("-", ""),
        "braces": "{" + value + "}",
        "urn": "urn:uuid:" + value,
        "padded": "  " + value + "\t",
        "inner-space": "{ " + value + " }",
        "truncated": value[:-1],
        "joined": value + "," + value,
    }[style]


v7_ids = st.builds(
    lambda t, r: str(uuid.UUID(int=uuid_v7_int(t, r))),
    st.integers(0, 0xFFFF_FFFF_FFFF),
    st.integers(0, (1 << 74) - 1),
)
other_uuids = st.uuids().map(str)  # mostly version 4
id_spellings = st.builds(
    spell,
    st.one_of(v7_ids, other_uuids),
    st.sampled_from(["canonical", "upper", "hex", "braces", "urn", "padded", "inner-space", "truncated", "joined"]),
)
scalar_values = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=50),
    st.binary(max_size=50),
    id_spellings,
    id_spellings.map(lambda s: s.encode("latin-1")),
    st.lists(st.text(max_size=40), max_size=3).map(",".join),
)
values = st.one_of(
    scalar_values,
    st.lists(scalar_values, max_size=3),
    st.lists(scalar_values, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=5), scalar_values, max_size=2),
)
header_names = st.builds(
    lambda base, style: {
        "as-is": base,
        "upper": base.upper(),
        "hyphen": base.replace("_", "-"),
        "title": base.replace("_", "-").title(),
        "wsgi": "HTTP_" + base.upper(),
        "bytes": base.encode(),
    }[style],
    st.sampled_from(["opik_trace_id", "opik_parent_span_id", "opik_span_id", "opik_trace"]),
    st.sampled_from(["as-is", "upper", "hyphen", "title", "wsgi", "bytes"]),
)
keys = st.one_of(header_names, st.text(max_size=20), st.binary(max_size=20), st.integers(), st.none())
pairs = st.tuples(keys, values)
items = st.one_of(pairs, pairs, pairs, st.none(), st.integers(), st.text(max_size=3), st.tuples(keys), st.tuples(keys, values, values))
headers_inputs = st.one_of(
    st.dictionaries(keys, values, max_size=6),
    st.lists(items, max_size=6),
    st.lists(pairs, max_size=6).map(tuple),
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.binary(max_size=20),
)


@PROPERTY_SETTINGS
@given(headers_inputs)
def test_extract_never_raises_and_returns_only_canonical_v7(headers):
    result = extract_opik_distributed_trace_attributes(headers)
    if result is not None:
        assert is_canonical_v7(result.opik_trace_id)
        assert result.opik_parent_span_id is None or is_canonical_v7(result.opik_parent_span_id)
        for value in result.as_attributes().values():
            assert is_canonical_v7(value)


@PROPERTY_SETTINGS
@given(headers_inputs)
def test_attach_never_raises_and_writes_only_canonical_v7(headers):
    span = TRACER.start_span("boundary", attributes={"k": "v"})
    try:
        attached = attach_to_parent(span, headers)
        expected = extract_opik_distributed_trace_attributes(headers)
        assert attached is (expected is not None)
        attributes = dict(span.attributes)
        if attached:
            assert attributes[OPIK_TRACE_ID] == expected.opik_trace_id
            assert attributes.get(OPIK_PARENT_SPAN_ID) == expected.opik_parent_span_id
            for key in (OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID):
                if key in attributes:
                    assert is_canonical_v7(attributes[key])
        else:
            assert attributes == {"k": "v"}
    finally:
        span.end()


@PROPERTY_SETTINGS
@given(
    st.lists(pairs, max_size=4),
    st.lists(pairs, max_size=4),
    v7_ids,
    st.sampled_from(["canonical", "upper", "hex", "braces", "urn", "padded", "joined"]),
    st.sampled_from(["opik_trace_id", "OPIK_TRACE_ID", "opik-trace-id", "Opik-Trace-Id", "HTTP_OPIK_TRACE_ID"]),
    st.booleans(),
)
def test_a_valid_trace_id_in_any_spelling_is_found_and_canonicalised(before, after, trace_id, style, name, as_bytes):
    def is_trace_header(key):
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if not isinstance(key, str):
            return False
        key = key.lower().replace("-", "_")
        return key in ("opik_trace_id", "http_opik_trace_id")

    # Drop generated pairs that would themselves be the first trace-id header.
    before = [(k, v) for k, v in before if not is_trace_header(k)]
    value = spell(trace_id, style)
    header = (name.encode(), value.encode()) if as_bytes else (name, value)
    result = extract_opik_distributed_trace_attributes(before + [header] + after)
    assert result is not None
    assert result.opik_trace_id == trace_id
    assert result.opik_parent_span_id is None or is_canonical_v7(result.opik_parent_span_id)
