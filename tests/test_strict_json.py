"""NaN and Infinity: LocalOpik rejects them where Opik's strict JSON parser does, and the
exporter never sends them, whichever path they come in by (contract §1, §10)."""

import json
import math

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from opik_otel import OpikExporter, RetryPolicy, configure
from opik_otel.testing import LocalOpik

CONSTANTS = ("NaN", "Infinity", "-Infinity")
TRACE_BODY = '{"traces": [{"id": "0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a", "start_time": "2024-01-01T00:00:00Z", "metadata": {"x": %s}}]}'


@pytest.fixture(scope="module")
def opik():
    with LocalOpik() as server:
        yield server


# --- LocalOpik refuses what Opik refuses -------------------------------------------------


@pytest.mark.parametrize("constant", CONSTANTS)
def test_a_rest_body_with_a_non_finite_number_is_answered_400(opik, constant):
    opik.clear()
    response = requests.post(
        opik.url + "/v1/private/traces/batch", data=TRACE_BODY % constant, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert not opik.traces()
    finite = requests.post(
        opik.url + "/v1/private/traces/batch", data=TRACE_BODY % "1.5", headers={"Content-Type": "application/json"}
    )
    assert finite.status_code < 300


def _otlp_status(opik, attributes):
    """Status LocalOpik answers for one span with ``attributes``, sent raw (no exporter repairs)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("raw").start_span("raw", attributes=attributes).end()
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    provider.shutdown()
    return requests.post(
        opik.otlp_traces_endpoint, data=body, headers={"Content-Type": "application/x-protobuf"}
    ).status_code


@pytest.mark.parametrize("constant", CONSTANTS)
@pytest.mark.parametrize(
    "key, template",
    [
        ("gen_ai.usage.input_tokens", "%s"),
        ("opik.metadata", '{"score": %s}'),
        ("opik.tags", '["a", %s]'),
    ],
)
def test_json_valued_attributes_with_a_non_finite_number_are_answered_400(opik, key, template, constant):
    assert _otlp_status(opik, {key: template % constant}) == 400
    assert _otlp_status(opik, {key: template % "2"}) == 200


# --- the exporter never sends them ---------------------------------------------------------

finite_or_not = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]), st.floats(), st.integers(-5, 5))


def _json_with(value):
    """What Python's json.dumps writes for a structure holding ``value``: NaN and all."""
    return json.dumps({"v": value, "list": [value, "x"]})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=finite_or_not, where=st.sampled_from(["usage", "metadata", "tags", "input", "output", "root-float"]))
def test_non_finite_numbers_on_every_path_never_reach_opik(opik, tmp_path_factory, value, where):
    """Root spans of a trace this exporter mints: their attributes go out over OTLP and
    become the trace row sent over REST; LocalOpik answers 400 to anything non-strict."""
    opik.clear()
    provider = TracerProvider()
    tracing = configure(
        url=opik.url, tracer_provider=provider, spool_directory=False,
        retry_policy=RetryPolicy(max_attempts=1), metadata={"team": "a", "ratio": math.nan},
    )
    attributes = {
        "usage": {"gen_ai.usage.input_tokens": json.dumps(value)},
        "metadata": {"opik.metadata": _json_with(value)},
        "tags": {"opik.tags": json.dumps(["a", value])},
        "input": {"input.value": _json_with(value)},
        "output": {"output": _json_with(value)},
        "root-float": {"input.score": value if isinstance(value, float) else float(value)},
    }[where]
    tracer = provider.get_tracer("tests.strict_json")
    with tracer.start_as_current_span("root", attributes=attributes):
        with tracer.start_as_current_span("child", attributes=attributes):
            pass
    assert tracing.force_flush(5000)
    tracing.shutdown(2000)
    provider.shutdown()
    statuses = [(r.path, r.status, r.error) for r in opik.requests]
    assert statuses and all(status < 300 for _, status, _ in statuses), statuses
    spans = opik.spans()
    assert len(spans) == 2
    assert len(opik.traces()) == 1


def test_exporter_rewrites_non_strict_metadata_and_tags_keeping_the_rest(opik, tmp_path):
    opik.clear()
    exporter = OpikExporter(url=opik.url, spool_directory=False, retry_policy=RetryPolicy(max_attempts=1))
    provider = TracerProvider()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.strict_json")
    with tracer.start_as_current_span("root"):
        with tracer.start_as_current_span(
            "child", attributes={"opik.metadata": '{"score": NaN, "n": 1}', "opik.tags": '["a", Infinity]'}
        ):
            pass
    provider.shutdown()
    child = next(span for span in opik.spans() if span.name == "child")
    assert child.metadata["score"] == "NaN" and child.metadata["n"] == 1
    assert child.tags == ["a", "Infinity"]
