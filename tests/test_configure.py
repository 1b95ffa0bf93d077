"""configure() end to end against LocalOpik: minted Opik ids, trace rows, run-time ids,
distributed headers, derivation for remote OTel parents, long traces, flush/shutdown,
OPIK_TRACK_DISABLE, and the global tracer provider (in subprocesses).
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from opik_otel import (
    OpikTracing,
    attach_to_parent,
    configure,
    generate_id,
    get_distributed_trace_headers,
    get_opik_trace_id,
)
from opik_otel.attributes import MINTED_TRACE, OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID
from opik_otel.testing import LocalOpik

pytestmark = pytest.mark.usefixtures("isolated_opik_settings")

TRACES_PATH = "/api/v1/private/traces/batch"
OPIK_KEYS = (OPIK_TRACE_ID, OPIK_SPAN_ID, OPIK_PARENT_SPAN_ID, MINTED_TRACE)


def by_name(spans):
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


# ------------------------------------------------------------------ basic wiring


def test_configure_attaches_to_the_given_provider_and_returns_handles(opik, tmp_path):
    provider = TracerProvider()
    before = trace.get_tracer_provider()
    tracing = configure(url=opik.url, tracer_provider=provider, spool_directory=tmp_path / "spool")
    try:
        assert isinstance(tracing, OpikTracing)
        assert tracing.tracer_provider is provider
        assert trace.get_tracer_provider() is before  # the global provider is untouched
        assert tracing.exporter is not None and tracing.exporter.config.url == opik.url
        with provider.get_tracer("t").start_as_current_span("root"):
            pass
        assert tracing.force_flush() is True
        assert [s.name for s in opik.spans()] == ["root"]
    finally:
        tracing.shutdown()
        provider.shutdown()


# ---------------------------------------------------------------- minted traces


def test_local_root_gets_a_trace_row_with_the_root_span_data(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, project_name="rows", tags=["configured"], metadata={"team": "search"})
    with pytest.raises(ValueError, match="no answer"):
        with tracer.start_as_current_span("answer-question") as root:
            root.set_attribute("input.question", "what is opik?")
            root.set_attribute("output.answer", '{"text": "partial"}')
            root.set_attribute("opik.tags", "span-tag")
            root.set_attribute("opik.metadata.model_version", "v3")
            root.set_attribute("gen_ai.conversation.id", "conv-9")
            with tracer.start_as_current_span("retrieve"):
                pass
            raise ValueError("no answer found")
    assert tracing.force_flush()

    spans = by_name(opik.spans())
    (row,) = opik.traces()
    root_span = spans["answer-question"]
    assert row.id == root_span.trace_id == spans["retrieve"].trace_id
    assert row.project_name == root_span.project_name == spans["retrieve"].project_name == "rows"
    assert row.source == "rest"  # written by the exporter through traces/batch
    assert row.name == "answer-question"
    assert row.start_time == root_span.start_time and row.end_time == root_span.end_time
    assert row.start_time < row.end_time
    assert row.input == {"input.question": "what is opik?"}
    assert row.output == {"output.answer": {"text": "partial"}}
    assert set(row.tags) == {"configured", "span-tag"}
    assert row.metadata["team"] == "search" and row.metadata["opik.metadata.model_version"] == "v3"
    assert row.thread_id == "conv-9"
    assert row.error_info["exception_type"] == "ValueError"
    assert row.error_info["message"] == "no answer found"
    assert "ValueError: no answer found" in row.error_info["traceback"]
    assert root_span.error_info["exception_type"] == "ValueError"
    assert opik.orphans() == []
    assert [r.path for r in opik.requests].count(TRACES_PATH) == 1


def test_no_trace_row_for_a_trace_that_came_from_headers(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, project_name="joined")
    upstream_trace, upstream_span = generate_id(), generate_id()
    with tracer.start_as_current_span("server-handle") as boundary:
        assert attach_to_parent(boundary, {"opik_trace_id": upstream_trace, "opik_parent_span_id": upstream_span})
        assert get_opik_trace_id() == upstream_trace
        with tracer.start_as_current_span("server-child"):
            pass
    assert tracing.force_flush()

    spans = by_name(opik.spans())
    assert spans["server-handle"].trace_id == spans["server-child"].trace_id == upstream_trace
    assert spans["server-handle"].parent_span_id == upstream_span
    assert spans["server-child"].parent_span_id == spans["server-handle"].id
    assert opik.traces() == []  # the upstream service owns the row
    assert TRACES_PATH not in [r.path for r in opik.requests]
    assert MINTED_TRACE not in spans["server-handle"].attributes
    # Until the upstream service writes its row and span, these spans are orphans ...
    assert {s.name for s in opik.orphans()} == {"server-handle", "server-child"}
    now = "2030-01-01T00:00:00Z"
    upstream_rows = {
        "traces": [{"id": upstream_trace, "name": "upstream", "start_time": now, "project_name": "joined"}]
    }
    upstream_spans = {
        "spans": [{"id": upstream_span, "trace_id": upstream_trace, "name": "upstream-call", "start_time": now, "project_name": "joined"}]
    }
    assert requests.post(opik.url + "/v1/private/traces/batch", json=upstream_rows, timeout=5).ok
    assert requests.post(opik.url + "/v1/private/spans/batch", json=upstream_spans, timeout=5).ok
    # ... and then they hang under the upstream span in its trace.
    assert opik.orphans() == []


def test_no_trace_row_for_a_trace_that_came_from_baggage(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, project_name="baggage")
    upstream_trace, upstream_span = generate_id(), generate_id()
    context = baggage.set_baggage(OPIK_TRACE_ID, upstream_trace)
    context = baggage.set_baggage(OPIK_SPAN_ID, upstream_span, context)
    with tracer.start_as_current_span("from-baggage", context=context):
        assert get_opik_trace_id() == upstream_trace
        with tracer.start_as_current_span("nested"):
            pass
    assert tracing.force_flush()

    spans = by_name(opik.spans())
    assert spans["from-baggage"].trace_id == spans["nested"].trace_id == upstream_trace
    assert spans["from-baggage"].parent_span_id == upstream_span
    assert spans["nested"].parent_span_id == spans["from-baggage"].id
    assert opik.traces() == []
    assert TRACES_PATH not in [r.path for r in opik.requests]


def test_run_time_trace_id_and_distributed_headers_match_what_opik_stores(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, project_name="ids")
    assert get_opik_trace_id() is None and get_distributed_trace_headers() is None  # no span
    with tracer.start_as_current_span("root"):
        trace_id = get_opik_trace_id()
        root_headers = get_distributed_trace_headers()
        with tracer.start_as_current_span("outgoing-call"):
            assert get_opik_trace_id() == trace_id
            call_headers = get_distributed_trace_headers()
    assert tracing.force_flush()

    spans = by_name(opik.spans())
    assert opik.trace(trace_id) is not None and opik.trace(trace_id).name == "root"
    # The project travels too, so an opik_otel callee writes into this trace's project.
    assert root_headers == {
        "opik_trace_id": trace_id, "opik_parent_span_id": spans["root"].id, "opik_project_name": "ids"
    }
    assert call_headers == {
        "opik_trace_id": trace_id, "opik_parent_span_id": spans["outgoing-call"].id, "opik_project_name": "ids"
    }
    assert spans["outgoing-call"].parent_span_id == spans["root"].id
    assert opik.orphans() == []


def test_remote_otel_parent_without_opik_linkage_is_left_to_opik_derivation(opik, pipelines):
    # Upstream: a plain OTel service exporting straight to Opik (ids derived by the backend).
    upstream = TracerProvider()
    upstream.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=opik.otlp_traces_endpoint, timeout=5)))
    carrier = {}
    with upstream.get_tracer("upstream").start_as_current_span("upstream-request"):
        TraceContextTextMapPropagator().inject(carrier)
    upstream.shutdown()

    tracer, tracing = pipelines(url=opik.url)  # same (default) project as the upstream
    remote = TraceContextTextMapPropagator().extract(carrier)
    with tracer.start_as_current_span("downstream-handle", context=remote) as span:
        assert not any(key in span.attributes for key in OPIK_KEYS)
        assert get_opik_trace_id() is None and get_distributed_trace_headers() is None
        with tracer.start_as_current_span("downstream-child") as child:
            assert not any(key in child.attributes for key in OPIK_KEYS)
    assert tracing.force_flush()

    spans = by_name(opik.spans())
    for name in ("downstream-handle", "downstream-child"):
        assert not any(key in spans[name].attributes for key in OPIK_KEYS), spans[name].attributes
    (row,) = opik.traces()
    assert row.name == "upstream-request" and row.source == "otel-root"  # derived by Opik
    assert {s.trace_id for s in spans.values()} == {row.id}
    assert spans["downstream-handle"].parent_span_id == spans["upstream-request"].id
    assert spans["downstream-child"].parent_span_id == spans["downstream-handle"].id
    assert TRACES_PATH not in [r.path for r in opik.requests]
    assert opik.orphans() == []


def test_long_trace_never_splits_although_derived_ids_expire(pipelines):
    with LocalOpik(trace_id_ttl_seconds=0.5) as server:
        tracer, tracing = pipelines(url=server.url, project_name="long")
        # Control: the same shape through a plain OTLP exporter does split after the TTL.
        plain = TracerProvider()
        plain_processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=server.otlp_traces_endpoint, timeout=5, headers={"projectName": "control"})
        )
        plain.add_span_processor(plain_processor)
        plain_tracer = plain.get_tracer("control")

        # Explicit contexts keep the two pipelines' spans apart (no cross-parenting).
        roots = {
            "long": tracer.start_span("long-root", context=Context()),
            "control": plain_tracer.start_span("control-root", context=Context()),
        }
        tracers = {"long": tracer, "control": plain_tracer}

        def child(kind, name):
            # Children start at least 10 ms after their root, as in any long-running trace, so
            # a batch without the root derives a different id from its own earliest start.
            start = max(time.time_ns(), roots[kind].start_time + 10_000_000)
            parent = trace.set_span_in_context(roots[kind], Context())
            tracers[kind].start_span(name, context=parent, start_time=start).end(end_time=start + 1_000_000)

        child("long", "early-child")
        child("control", "control-early")
        assert tracing.force_flush() and plain_processor.force_flush()
        time.sleep(1.1)  # longer than the id TTL: the backend forgets derived ids
        child("long", "late-child")
        child("control", "control-late")
        for root in roots.values():
            root.end()
        assert tracing.force_flush() and plain_processor.force_flush()
        plain.shutdown()

        long_spans = by_name(server.spans(project="long"))
        assert set(long_spans) == {"long-root", "early-child", "late-child"}
        (row,) = server.traces(project="long")
        assert {s.trace_id for s in long_spans.values()} == {row.id}
        assert server.orphans(project="long") == []
        control = server.spans(project="control")
        assert len({s.trace_id for s in control}) == 2, "the TTL did not split the control trace"
        assert server.orphans(project="control")


def test_force_flush_and_shutdown_return_even_when_opik_is_down(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, project_name="flush")
    with tracer.start_as_current_span("first"):
        pass
    started = time.monotonic()
    assert tracing.force_flush() is True
    with opik.down():
        with tracer.start_as_current_span("while-down"):
            pass
        assert tracing.force_flush(timeout_millis=200) is False  # kept queued, not lost
        assert tracing.shutdown() is None
    assert time.monotonic() - started < 5
    assert tracing.shutdown() is None  # idempotent
    assert isinstance(tracing.force_flush(timeout_millis=100), bool)  # no raise after shutdown
    assert [s.name for s in opik.spans()] == ["first"]


def test_track_disable_sends_nothing(opik, pipelines, monkeypatch):
    monkeypatch.setenv("OPIK_TRACK_DISABLE", "true")
    tracer, tracing = pipelines(url=opik.url)
    with tracer.start_as_current_span("not-sent") as span:
        assert get_opik_trace_id() is None
        assert OPIK_TRACE_ID not in span.attributes
    assert tracing.force_flush() is True
    tracing.shutdown()
    assert opik.requests == [] and opik.spans() == []
    # Disabled tracking needs no key even for the cloud URL (CI runs without secrets).
    _, disabled_cloud = pipelines("cloud", url="https://www.comet.com/opik/api")
    assert disabled_cloud.linkage_processor is None  # nothing attached to the provider
    assert disabled_cloud.force_flush(1000) is True and disabled_cloud.stats["requests_sent"] == 0
    # The stats are there (not None) and count nothing sent.
    assert disabled_cloud.span_processor.stats["exported"] == 0
    assert not any(disabled_cloud.exporter.stats.values())


def test_track_disable_from_the_config_file(opik, pipelines, isolated_opik_settings):
    (isolated_opik_settings / ".opik.config").write_text(f"[opik]\nurl_override = {opik.url}\ntrack_disable = true\n")
    tracer, tracing = pipelines()
    with tracer.start_as_current_span("not-sent"):
        pass
    assert tracing.force_flush() is True
    assert opik.requests == []


# ------------------------------------------------------- global provider (subprocess)

_GLOBAL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import opik_otel

    mode = sys.argv[1]
    existing = memory = None
    if mode == "existing":
        existing = TracerProvider()
        memory = InMemorySpanExporter()
        existing.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(existing)

    tracing = opik_otel.configure(spool_directory=sys.argv[2])  # settings from OPIK_* env
    provider = trace.get_tracer_provider()
    with trace.get_tracer("global-test").start_as_current_span(mode + "-root"):
        trace_id = opik_otel.get_opik_trace_id()
    print(json.dumps({
        "provider_is_sdk": isinstance(provider, TracerProvider),
        "tracing_uses_global": tracing.tracer_provider is provider,
        "kept_existing": existing is None or provider is existing,
        "existing_processor_still_runs": memory is None or [s.name for s in memory.get_finished_spans()] == [mode + "-root"],
        "trace_id": trace_id,
    }))
    # No flush here on purpose: configure() must flush at exit.
    """
)


@pytest.mark.parametrize("mode", ["fresh", "existing"])
def test_configure_without_provider_uses_the_global_sdk_provider(opik, mode, tmp_path, isolated_opik_settings):
    env = {**os.environ, "OPIK_URL_OVERRIDE": opik.url, "OPIK_PROJECT_NAME": "global", "HOME": str(isolated_opik_settings)}
    result = subprocess.run(
        [sys.executable, "-c", _GLOBAL_SCRIPT, mode, str(tmp_path / "spool")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["provider_is_sdk"] and report["tracing_uses_global"], report
    assert report["kept_existing"] and report["existing_processor_still_runs"], report
    assert report["trace_id"]
    assert opik.wait_for_traces(1, timeout=5)
    (span,) = opik.spans(project="global")
    assert span.name == f"{mode}-root" and span.trace_id == report["trace_id"]
    assert opik.trace(report["trace_id"]).name == f"{mode}-root"
    assert opik.orphans() == []


def test_after_shutdown_no_trace_ids_are_minted_whose_rows_nobody_would_write(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url)
    with tracer.start_as_current_span("before") as before:
        pass
    assert before.attributes.get(OPIK_TRACE_ID)
    tracing.shutdown()
    with tracer.start_as_current_span("after") as after:
        pass
    assert OPIK_TRACE_ID not in after.attributes
    assert MINTED_TRACE not in after.attributes
