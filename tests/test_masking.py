"""Masking at export over real pipelines: credentials scrubbed in span, event and link
attributes, usage tokens intact, a user mask, a raising mask, Opik SDK anonymizers."""

import gzip
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import Link

from opik_otel import ConfigurationError
from opik_otel.exporter import OpikExporter
from opik_otel.masking import MASK_FAILED, REDACTED

SECRET = "sk-live-1234567890"


@pytest.fixture
def otlp_capture():
    """A loopback OTLP/HTTP endpoint keeping every decoded request."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append((body, request))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    server.shutdown()
    server.server_close()


def _traced_secrets(tracer):
    with tracer.start_as_current_span("other") as other:
        pass
    with tracer.start_as_current_span(
        "call",
        attributes={
            "http.request.header.authorization": ("Bearer " + SECRET,),
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
            "opik.metadata.max_tokens": 5,
            "input.value": "hello",
        },
        links=[Link(other.get_span_context(), {"cookie": "session=" + SECRET})],
    ) as span:
        span.add_event("request", {"x-api-key": SECRET, "note": "kept"})


def test_default_scrubbing_redacts_credentials_and_keeps_usage_tokens(opik, pipelines, otlp_capture):
    endpoint, received = otlp_capture
    tracer, tracing = pipelines(url=opik.url)
    _traced_secrets(tracer)
    assert tracing.force_flush(10_000)
    span = next(s for s in opik.spans() if s.name == "call")
    assert span.input["http.request.header.authorization"] == REDACTED
    assert span.input["input.value"] == "hello"
    assert span.usage == {"prompt_tokens": 12, "completion_tokens": 3}
    assert span.metadata["opik.metadata.max_tokens"] == 5
    event = span.metadata["opentelemetry.events"][0]["attributes"]
    assert event == {"x-api-key": REDACTED, "note": "kept"}

    # Links are not stored by Opik: check the wire itself, through an OTLP endpoint.
    tracer, tracing = pipelines("wire", url=opik.url, otlp_endpoint=endpoint)
    _traced_secrets(tracer)
    assert tracing.force_flush(10_000)
    assert received and all(SECRET.encode() not in body for body, _ in received)
    spans = [s for _, r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    link = next(s for s in spans if s.name == "call").links[0]
    assert {kv.key: kv.value.string_value for kv in link.attributes} == {"cookie": REDACTED}


def test_scrub_false_and_extra_patterns(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, scrub=False)
    with tracer.start_as_current_span("plain", attributes={"password": "p", "ssn": "1"}):
        pass
    tracer, tracing_extra = pipelines("extra", url=opik.url, scrub=[r"\bssn\b"], project_name="extra")
    with tracer.start_as_current_span("extended", attributes={"password": "p", "ssn": "1"}):
        pass
    assert tracing.force_flush(10_000) and tracing_extra.force_flush(10_000)
    plain = next(s for s in opik.spans() if s.name == "plain")
    extended = next(s for s in opik.spans() if s.name == "extended")
    assert plain.input == {"password": "p", "ssn": "1"}
    assert extended.input == {"password": REDACTED, "ssn": REDACTED}


def test_mask_sees_every_non_opik_value_and_a_raising_mask_withholds(opik, pipelines, caplog):
    seen = []

    def mask(key, value):
        seen.append(key)
        if key == "boom":
            raise ValueError("mask bug")
        return value.upper() if isinstance(value, str) else value

    tracer, tracing = pipelines(url=opik.url, mask=mask, thread_id="t-1")
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        with tracer.start_as_current_span(
            "root", attributes={"input.value": "hi", "boom": "secret", "gen_ai.usage.input_tokens": 1}
        ) as span:
            span.add_event("e", {"detail": "x"})
    assert tracing.force_flush(10_000)
    stored = opik.spans()[0]
    assert stored.input["input.value"] == "HI"
    assert stored.input["boom"] == MASK_FAILED
    assert stored.metadata["opentelemetry.events"][0]["attributes"] == {"detail": "X"}
    assert stored.thread_id == "t-1"
    assert opik.orphans() == [] and opik.trace(stored.trace_id) is not None
    assert not [key for key in seen if key.startswith(("opik.", "gen_ai.usage.", "opik_otel.")) or key == "thread_id"]
    assert sum("mask raised" in r.getMessage() for r in caplog.records) == 1


def test_opik_sdk_anonymizers_apply_to_io_attributes(opik, pipelines):
    hooks = pytest.importorskip("opik.hooks")
    from opik.anonymizer import create_anonymizer

    anonymizer = create_anonymizer((r"\d{3}-\d{2}-\d{4}", "<SSN>"))
    hooks.add_anonymizer(anonymizer)
    try:
        tracer, tracing = pipelines(url=opik.url)
        with tracer.start_as_current_span(
            "llm", attributes={"input.value": "my ssn is 123-45-6789", "output.value": "ok 123-45-6789"}
        ):
            pass
        assert tracing.force_flush(10_000)
    finally:
        hooks.get_anonymizers().remove(anonymizer)
    stored = opik.spans()[0]
    assert stored.input["input.value"] == "my ssn is <SSN>"
    assert stored.output["output.value"] == "ok <SSN>"
    row = opik.trace(stored.trace_id)
    assert row is not None and "123-45-6789" not in str(row.input) + str(row.output)


@pytest.mark.parametrize("options", [{"mask": "upper"}, {"scrub": "token"}, {"scrub": ["("]}])
def test_bad_masking_options_are_configuration_errors(options, isolated_opik_settings, tmp_path):
    with pytest.raises(ConfigurationError):
        OpikExporter(url="http://127.0.0.1:9/api", spool_directory=False, **options)


def test_event_and_link_keys_that_are_not_text_are_masked_by_their_text(otlp_capture, isolated_opik_settings, caplog):
    """Others' ``ReadableSpan`` built from plain dicts: a key that is not a string is
    judged (and sent) by its text, so a credential under it is still scrubbed."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.trace import SpanContext, TraceFlags

    endpoint, received = otlp_capture

    def context(span_id):
        return SpanContext(0xABC, span_id, is_remote=False, trace_flags=TraceFlags(1))

    odd = {None: "kept", b"authorization": "Bearer " + SECRET}
    span = ReadableSpan(
        name="plain",
        context=context(7),
        attributes={"input.value": "hi"},
        events=[Event("e", odd, 1)],
        links=[Link(context(8), odd)],
        start_time=1_700_000_000_000_000_000,
        end_time=1_700_000_000_100_000_000,
    )
    exporter = OpikExporter(url="http://127.0.0.1:9/api", otlp_endpoint=endpoint, spool_directory=False)
    try:
        with caplog.at_level(logging.WARNING, logger="opik_otel"):
            assert exporter.export([span]) is SpanExportResult.SUCCESS
            assert exporter.force_flush(10_000)
    finally:
        exporter.shutdown(0)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert received and all(SECRET.encode() not in body for body, _ in received)
    sent = received[0][1].resource_spans[0].scope_spans[0].spans[0]
    assert sent.name == "plain" and len(sent.events) == 1 and len(sent.links) == 1
