"""Every span in the project of its trace (contract §9), in real processes over loopback.

A library's OTel spans inside ``@opik.track(project_name=...)`` or
``opik.project_context(...)`` belong to that trace, so to its project: written anywhere
else they are orphans there, and the trace shows without them. ``LocalOpik`` keys trace
rows and spans by project, so a span sent to the wrong project is an orphan here too.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from helpers import SERVICE_PROJECT, app_env, running_service
from opik_otel import OpikSpanProcessor, attach_to_parent, get_distributed_trace_headers
from opik_otel.attributes import PROJECT_NAME
from opik_otel.projects import first_of_joined_project, group_by_project, usable_project_name

SERVICES = Path(__file__).parent / "services"
def run_app(opik, tmp_path, mode):
    completed = subprocess.run(
        [sys.executable, str(SERVICES / "project_app.py"), mode],
        env=app_env(opik, tmp_path, mode),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    (line,) = [line for line in completed.stdout.splitlines() if line.startswith("DONE ")]
    return json.loads(line.split(" ", 1)[1])


def spans_of(opik, trace_id):
    return {span.name: span for span in opik.spans(trace_id=trace_id)}


def assert_nested_in(opik, trace_id, project):
    spans = spans_of(opik, trace_id)
    tree = opik.trees()
    assert set(spans) >= {"agent", "library-call", "library-inner"}, tree
    assert {span.project_name for span in spans.values()} == {project}, tree
    assert spans["library-call"].parent_span_id == spans["agent"].id, tree
    assert spans["library-inner"].parent_span_id == spans["library-call"].id, tree
    assert opik.trace(trace_id).project_name == project, tree


def assert_no_orphans_anywhere(opik):
    for project in opik.projects():
        assert opik.orphans(project) == [], (project, opik.trees())


def test_library_spans_inside_track_with_a_project_land_in_that_project(opik, tmp_path):
    pytest.importorskip("opik")
    result = run_app(opik, tmp_path, "track")
    assert_nested_in(opik, result["trace"], "agent-project")
    assert opik.spans(project=SERVICE_PROJECT) == []
    assert len(opik.traces()) == 1
    assert_no_orphans_anywhere(opik)


def test_project_context_routes_sdk_traces_and_minted_otel_roots(opik, tmp_path):
    pytest.importorskip("opik")
    result = run_app(opik, tmp_path, "context")
    assert_nested_in(opik, result["trace"], "context-project")
    # A plain OTel root under project_context is a trace of that project too (Opik's rule).
    otel_root = opik.trace(result["otel_root"])
    assert otel_root is not None and otel_root.project_name == "context-project", opik.trees()
    assert {s.project_name for s in opik.spans(trace_id=result["otel_root"])} == {"context-project"}
    assert [t.project_name for t in opik.traces()] == ["context-project", "context-project"]
    assert_no_orphans_anywhere(opik)


def test_track_without_a_project_uses_the_configured_project_on_both_sides(opik, tmp_path):
    pytest.importorskip("opik")
    result = run_app(opik, tmp_path, "default")
    assert_nested_in(opik, result["trace"], SERVICE_PROJECT)
    assert opik.projects() == [SERVICE_PROJECT]
    assert_no_orphans_anywhere(opik)


def test_opik_otel_chain_keeps_the_callers_project(opik, tmp_path):
    """Client in project 'client-project', server configured for 'server-project': the
    server's spans join the client's trace, so they go to the client's project."""
    server_env = app_env(opik, tmp_path, "server", project="server-project")
    with running_service(SERVICES / "otel_first_server.py", server_env) as url:
        completed = subprocess.run(
            [sys.executable, str(SERVICES / "otel_first_client.py"), url],
            env=app_env(opik, tmp_path, "client", project="client-project"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["headers"]["opik_project_name"] == "client-project"
    trace_id = report["trace_id"]
    assert opik.wait_for_spans(5, project="client-project"), opik.trees()
    spans = spans_of(opik, trace_id)
    assert {"client-job", "call-server", "server-handle", "server-step", "server-leaf"} <= set(spans)
    assert {s.project_name for s in spans.values()} == {"client-project"}, opik.trees()
    assert opik.spans(project="server-project") == []
    assert [t.project_name for t in opik.traces()] == ["client-project"]
    assert_no_orphans_anywhere(opik)


# --- in process: the linkage carries the project -------------------------------------------


@pytest.fixture
def recorded():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(OpikSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests.projects"), exporter
    provider.shutdown()


TRACE = "01932b8e-7a6c-7d1e-9c2b-3f4a5b6c7d8e"
PARENT = "01932b8e-7a6c-7d1e-9c2b-3f4a5b6c7d8f"


@pytest.mark.parametrize(
    "headers",
    [
        {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT, "opik_project_name": "upstream"},
        {"OPIK-TRACE-ID": TRACE, "opik-parent-span-id": PARENT, "Opik-Project-Name": " upstream "},
        # wsgiref keeps both spellings and joins them
        {"HTTP_OPIK_TRACE_ID": f"{TRACE},{TRACE}", "HTTP_OPIK_PROJECT_NAME": "upstream,upstream"},
    ],
)
def test_attach_to_parent_carries_the_callers_project_to_descendants(recorded, headers):
    tracer, exporter = recorded
    with tracer.start_as_current_span("server") as server:
        attach_to_parent(server, headers)
        with tracer.start_as_current_span("child"):
            with tracer.start_as_current_span("grandchild"):
                passed_on = get_distributed_trace_headers(hyphenated=True)
    assert {s.attributes.get(PROJECT_NAME) for s in exporter.get_finished_spans()} == {"upstream"}
    assert passed_on["opik_project_name"] == passed_on["opik-project-name"] == "upstream"


def test_sdk_headers_without_a_project_leave_the_configured_project(recorded):
    tracer, exporter = recorded
    with tracer.start_as_current_span("server") as server:
        server.set_attribute(PROJECT_NAME, "stale")
        attach_to_parent(server, {"opik_trace_id": TRACE, "opik_parent_span_id": PARENT})
        with tracer.start_as_current_span("child"):
            headers = get_distributed_trace_headers()
    assert all(PROJECT_NAME not in s.attributes for s in exporter.get_finished_spans())
    assert headers == {"opik_trace_id": TRACE, "opik_parent_span_id": headers["opik_parent_span_id"]}


def test_an_unusable_project_header_is_dropped_with_a_warning(recorded, caplog):
    tracer, exporter = recorded
    with tracer.start_as_current_span("server") as server:
        assert attach_to_parent(server, {"opik_trace_id": TRACE, "opik_project_name": "bad\x00name"})
    (span,) = exporter.get_finished_spans()
    assert span.attributes["opik.trace_id"] == TRACE and PROJECT_NAME not in span.attributes
    assert "opik_project_name" in caplog.text


@pytest.mark.parametrize(
    "value, expected",
    [
        ("agent", "agent"),
        ("  agent ", "agent"),
        (b"agent", "agent"),
        ("", None),
        ("   ", None),
        ("a\r\nX-Injected: 1", None),
        ("проект", None),  # outside Latin-1: cannot go in a projectName header
        ("x" * 257, None),
        (42, None),
        (None, None),
    ],
)
def test_usable_project_name(value, expected):
    assert usable_project_name(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [("p,p", "p"), ("a,b,a,b", "a,b"), ("a,b", "a,b"), ("p", "p"), (",", ",")],
)
def test_first_of_joined_project(value, expected):
    assert first_of_joined_project(value) == expected


def test_group_by_project_keeps_order_and_defaults():
    items = [("a", 1), (None, 2), ("b", 3), ("a", 4), (None, 5)]
    groups = group_by_project(items, "default", lambda item: item[0])
    assert list(groups) == ["a", "default", "b"]
    assert [v for _, v in groups["a"]] == [1, 4] and [v for _, v in groups["default"]] == [2, 5]


def _row_in(opik, project, trace_id):
    import requests

    response = requests.post(
        f"{opik.url}/v1/private/traces/batch",
        json={"traces": [{"id": trace_id, "project_name": project, "name": "upstream",
                          "start_time": "2026-01-01T00:00:00.000000Z"}]},
        timeout=10,
    )
    assert response.status_code == 204 or response.ok


@pytest.mark.parametrize("caller_names_project", [False, True])
def test_a_span_whose_trace_row_is_in_another_project_is_an_orphan_there(opik, tmp_path, caller_names_project):
    """What the routing is for, as LocalOpik (like Opik) sees it."""
    from opik_otel import OpikExporter

    _row_in(opik, "caller-project", TRACE)
    exporter = OpikExporter(opik.url, project_name="callee-project", spool_directory=tmp_path / "spool")
    provider = TracerProvider()
    provider.add_span_processor(OpikSpanProcessor(exporter=exporter))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    headers = {"opik_trace_id": TRACE}
    if caller_names_project:
        headers["opik_project_name"] = "caller-project"
    try:
        with provider.get_tracer("t").start_as_current_span("server") as server:
            attach_to_parent(server, headers)
            with provider.get_tracer("t").start_as_current_span("child"):
                pass
    finally:
        provider.shutdown()
    # The root minted at start and then attached upstream leaves no trace row of its own.
    assert [t.project_name for t in opik.traces()] == ["caller-project"], opik.trees()
    if caller_names_project:
        assert {s.project_name for s in opik.spans()} == {"caller-project"}
        assert opik.orphans("caller-project") == [] and opik.orphans() == []
    else:
        # The Opik SDK's headers carry no project: the documented trade-off.
        assert sorted(s.name for s in opik.orphans("callee-project")) == ["child", "server"]
        assert opik.orphans("caller-project") == []
