"""span_filter over real pipelines into LocalOpik: dropped spans gone, kept ones chained
to their nearest kept ancestor, rows present, no orphans, no private attribute exported."""

import json
import logging
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from werkzeug.serving import make_server

from opik_otel import OpikPropagator, OpikSpanProcessor, attach_to_parent, generate_id, get_distributed_trace_headers
from opik_otel import ConfigurationError


class _FakeLlmApi(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"choices": [{"text": "hi"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_llm_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLlmApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/completions"
    server.shutdown()
    server.server_close()


def _no_private_attributes(spans):
    return [key for span in spans for key in span.attributes if key.startswith("opik_otel.")]


def test_llm_filter_on_instrumented_flask_and_requests(opik, pipelines, fake_llm_api):
    tracer, tracing = pipelines(url=opik.url, span_filter="llm")
    provider = tracing.tracer_provider
    app = Flask(__name__)
    seen = {}

    @app.route("/chat")
    def chat():
        with tracer.start_as_current_span("SELECT docs", attributes={"db.system": "sqlite", "db.statement": "SELECT 1"}):
            seen["headers_in_db_span"] = get_distributed_trace_headers()
            with tracer.start_as_current_span("chat gpt-x", attributes={"gen_ai.system": "openai"}):
                requests.get(fake_llm_api, timeout=5)
                with tracer.start_as_current_span("POST /tool", attributes={"http.request.method": "POST"}):
                    with tracer.start_as_current_span("execute_tool", attributes={"gen_ai.operation.name": "tool"}):
                        pass
        return "ok"

    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/chat", timeout=10) as response:
            assert response.read() == b"ok"
    finally:
        server.shutdown()
        RequestsInstrumentor().uninstrument()
        FlaskInstrumentor().uninstrument_app(app)
    assert tracing.force_flush(10_000)

    spans = {span.name: span for span in opik.spans()}
    assert sorted(spans) == ["GET /chat", "chat gpt-x", "execute_tool"], opik.trees()
    server_span, llm, tool = spans["GET /chat"], spans["chat gpt-x"], spans["execute_tool"]
    assert llm.parent_span_id == server_span.id  # past the dropped DB span
    assert tool.parent_span_id == llm.id  # past the dropped HTTP spans
    assert opik.trace(server_span.trace_id) is not None
    assert opik.orphans() == []
    assert _no_private_attributes(spans.values()) == []
    # Downstream services called from inside the dropped DB span hang under the server span.
    assert seen["headers_in_db_span"]["opik_parent_span_id"] == server_span.id


def test_filter_dropping_the_root_keeps_its_row_and_children_top_level(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, span_filter=lambda span: span.name != "root")
    carrier = {}
    with tracer.start_as_current_span("root") as root:
        headers = get_distributed_trace_headers()
        OpikPropagator().inject(carrier)
        with tracer.start_as_current_span("a"):
            with tracer.start_as_current_span("b"):
                pass
    assert tracing.force_flush(10_000)

    spans = {span.name: span for span in opik.spans()}
    assert sorted(spans) == ["a", "b"]
    trace_id = spans["a"].trace_id
    row = opik.trace(trace_id)
    assert row is not None and row.name == "root"
    assert spans["a"].parent_span_id is None
    assert spans["b"].parent_span_id == spans["a"].id
    assert opik.orphans() == []
    assert headers == {"opik_trace_id": trace_id, "opik_project_name": "Default Project"}
    assert carrier["opik_trace_id"] == trace_id and "opik_parent_span_id" not in carrier
    assert root.attributes.get("opik.trace_id") == trace_id


def test_raising_filter_keeps_spans_and_warns_once(opik, pipelines, caplog):
    def broken(span):
        raise RuntimeError("bad filter")

    tracer, tracing = pipelines(url=opik.url, span_filter=broken)
    with caplog.at_level(logging.WARNING, logger="opik_otel"):
        with tracer.start_as_current_span("root"):
            for index in range(3):
                with tracer.start_as_current_span(f"child-{index}"):
                    pass
    assert tracing.force_flush(10_000)
    assert len(opik.spans()) == 4
    assert opik.orphans() == []
    assert len([r for r in caplog.records if "span_filter" in r.getMessage()]) == 1


def test_span_linked_by_attach_to_parent_after_start_is_kept(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, span_filter=lambda span: span.name.startswith("keep"))
    upstream_trace, upstream_span = generate_id(), generate_id()
    with tracer.start_as_current_span("server") as server:
        assert attach_to_parent(server, {"opik_trace_id": upstream_trace, "opik_parent_span_id": upstream_span})
        with tracer.start_as_current_span("middleware"):
            with tracer.start_as_current_span("keep-llm"):
                pass
    assert tracing.force_flush(10_000)
    spans = {span.name: span for span in opik.spans()}
    assert sorted(spans) == ["keep-llm", "server"]
    assert spans["server"].trace_id == upstream_trace
    assert spans["server"].parent_span_id == upstream_span
    assert spans["keep-llm"].parent_span_id == spans["server"].id
    assert _no_private_attributes(spans.values()) == []


def test_llm_filter_keeps_opik_boundaries_and_sdk_children(opik, pipelines):
    tracer, _ = pipelines(url=opik.url, span_filter="llm")
    processor = OpikSpanProcessor(span_filter="llm")
    assert processor is not None
    trace_id, parent = generate_id(), generate_id()
    from opentelemetry import context as otel_context

    ctx = OpikPropagator().extract({"opik_trace_id": trace_id, "opik_parent_span_id": parent})
    token = otel_context.attach(ctx)
    try:
        with tracer.start_as_current_span("GET /handler") as boundary:
            with tracer.start_as_current_span("plain work") as plain:
                pass
    finally:
        otel_context.detach(token)
    assert boundary.attributes["opik.parent_span_id"] == parent
    assert boundary.attributes.get("opik_otel.dropped") is None
    assert plain.attributes.get("opik_otel.dropped") is True


@pytest.mark.parametrize("bad", ["all", 3, ["llm"]])
def test_bad_span_filter_is_a_configuration_error(bad):
    with pytest.raises(ConfigurationError, match="span_filter"):
        OpikSpanProcessor(span_filter=bad)


@pytest.mark.parametrize(
    "scope, attributes, kept",
    [
        ("openinference.instrumentation.openai", {}, True),
        ("opentelemetry.instrumentation.openai_v2", {}, True),
        ("opentelemetry.instrumentation.anthropic", {}, True),
        ("traceloop.tracer", {}, True),
        ("pydantic-ai", {}, True),
        ("litellm", {}, True),
        ("opentelemetry.instrumentation.flask", {}, False),
        ("opentelemetry.instrumentation.openairline", {}, False),
        ("my-app", {"llm.model_name": "x"}, True),
        ("my-app", {"input.value": "x"}, True),
        ("my-app", {"gen_ai.request.model": "x"}, True),
        ("my-app", {"db.system": "sqlite", "http.route": "/"}, False),
    ],
)
def test_llm_filter_by_scope_and_attributes_at_start(opik, pipelines, scope, attributes, kept):
    _, tracing = pipelines(url=opik.url, span_filter="llm")
    tracer = tracing.tracer_provider.get_tracer(scope)
    with tracer.start_as_current_span("root"):
        with tracer.start_as_current_span("child", attributes=attributes) as child:
            pass
    assert (child.attributes.get("opik_otel.dropped") is None) is kept
