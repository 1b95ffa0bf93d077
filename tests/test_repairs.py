"""The encoder predicates and repairs: whatever goes in, what comes out encodes, and
what was sendable comes out untouched."""

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._internal import _encode_value

from opik_otel.repairs import (
    INT64_MAX,
    MAX_DEPTH,
    is_sendable_text,
    is_sendable_value,
    repaired_attribute_value,
    repaired_attributes,
    repaired_text,
)
from helpers import needs_current_otel_encoder

surrogate_text = st.text(alphabet=st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)), max_size=10)
leaves = st.one_of(
    surrogate_text, st.integers(), st.floats(), st.booleans(), st.binary(max_size=5), st.none(),
    st.sampled_from([object(), {1, 2}, 3j, bytearray(b"x"), range(3)]),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3)
    | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.one_of(surrogate_text, st.integers()), inner, max_size=3),
    max_leaves=12,
)


@needs_current_otel_encoder
@settings(max_examples=300, deadline=None)
@given(value=values)
def test_a_repaired_value_is_sendable_and_encodes(value):
    repaired = repaired_attribute_value(value)
    assert is_sendable_value(repaired)
    _encode_value(repaired)  # raises on anything the encoder cannot take


@needs_current_otel_encoder
@settings(max_examples=300, deadline=None)
@given(value=values)
def test_a_sendable_value_is_returned_as_is_and_encodes(value):
    if is_sendable_value(value):
        assert repaired_attribute_value(value) is value
        _encode_value(value)


def test_the_usual_repairs():
    assert repaired_attribute_value(INT64_MAX + 1) == str(INT64_MAX + 1)
    assert repaired_attribute_value("a\ud800") == "a\ufffd"
    assert repaired_text("\ud83d\ude00") == "\U0001f600"  # a valid pair is joined, not replaced
    assert repaired_attribute_value({1: {2}}) == {"1": (2,)}
    assert repaired_text(None) == "None"
    nested = [1]
    nested.append(nested)
    repaired = repaired_attribute_value(nested)
    depth = 0
    while isinstance(repaired, tuple):
        repaired, depth = repaired[1], depth + 1
    assert depth == MAX_DEPTH and isinstance(repaired, str)


def test_repaired_attributes_keep_a_valid_key_over_a_repaired_one():
    assert repaired_attributes({"a": 1}) is None
    assert repaired_attributes({"a\ud800": 1, "a\ufffd": 2}) == {"a\ufffd": 2}
    assert repaired_attributes({None: 1, "x": 1 << 70}) == {"x": str(1 << 70), "None": 1}
    assert not is_sendable_text(b"bytes") and is_sendable_text("é")
