"""The distributed-tracing demo: real services, one Opik trace per request.

Starts three services as subprocesses:

- ``agent`` and ``tool``: plain Flask apps run under ``opentelemetry-instrument`` with
  only environment variables (``OTEL_TRACES_EXPORTER=opik``,
  ``OTEL_PROPAGATORS=tracecontext,baggage,opik``): no opik_otel code in them;
- ``scorer``: a Flask app instrumented with the Opik SDK's ``@opik.track``.

Then sends three requests through them: one from a client instrumented with the Opik SDK,
one from an OTel-first client set up with ``opik_otel.configure()``, and a plain one (like
``curl``) that the zero-code agent roots itself. Each request must end up as one Opik trace
with every span under the right parent. Last, a library's OTel spans run inside
``@opik.track(project_name=...)`` of another project, and must land in that project.

With no Opik configured it uses an embedded LocalOpik, prints the trace trees as Opik
would show them and exits non-zero if any span is orphaned or mis-parented. With
``OPIK_URL_OVERRIDE`` (plus ``OPIK_API_KEY`` / ``OPIK_WORKSPACE`` for Opik Cloud) the same
traces go to that Opik.

Run: ``python examples/distributed_demo.py``
"""

import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

import requests

import opik_otel
from _common import Service, opik_target
from opik_otel.testing import LocalOpik, SpanRecord

HERE = Path(__file__).resolve().parent
ZERO_CODE = HERE / "zero_code"
PROJECT = "opik-otel-demo"
LIBRARY_PROJECT = "opik-otel-demo-agents"
QUESTION = "What is Opik?"

ZERO_CODE_ENV = {
    "OTEL_TRACES_EXPORTER": "opik",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_PROPAGATORS": "tracecontext,baggage,opik",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
}

# (span, its parent) pairs every request's trace must contain; the root is the client span.
EXPECTED_EDGES = [
    ("POST /ask", "<client>"),
    ("plan", "POST /ask"),
    ("GET", "POST /ask"),
    ("GET /lookup", "GET"),
    ("search-index", "GET /lookup"),
    ("POST", "POST /ask"),
    ("score", "POST"),
]


# The plain request's trace is rooted at the agent's server span ("<client>" = the root).
EXPECTED_EDGES_BY_ROOT = {
    "POST /ask": [
        (span, "<client>" if parent == "POST /ask" else parent)
        for span, parent in EXPECTED_EDGES
        if span != "POST /ask"
    ],
    "agent: other project": [("library-call", "<client>"), ("library-inner", "library-call")],
}
EXPECTED_ROOTS = ["sdk-client: user question", "otel-client: nightly report", "POST /ask", "agent: other project"]


def opentelemetry_instrument() -> str:
    found = shutil.which("opentelemetry-instrument") or str(Path(sys.executable).parent / "opentelemetry-instrument")
    if not Path(found).exists():
        raise SystemExit("opentelemetry-instrument not found: pip install -e '.[test]' first.")
    return found


def start_services() -> Dict[str, Service]:
    print("Starting services:")
    instrument = opentelemetry_instrument()
    services: Dict[str, Service] = {}
    try:
        services["tool"] = Service(
            "tool (Flask, zero-code OTel)",
            [instrument, sys.executable, str(ZERO_CODE / "tool_app.py")],
            {**ZERO_CODE_ENV, "OTEL_SERVICE_NAME": "tool"},
        )
        services["scorer"] = Service("scorer (Flask, Opik SDK)", [sys.executable, str(ZERO_CODE / "scorer_app.py")])
        services["agent"] = Service(
            "agent (Flask, zero-code OTel)",
            [instrument, sys.executable, str(ZERO_CODE / "agent_app.py")],
            {
                **ZERO_CODE_ENV,
                "OTEL_SERVICE_NAME": "agent",
                "TOOL_URL": services["tool"].url,
                "SCORER_URL": services["scorer"].url,
            },
        )
    except Exception:
        stop_services(services)
        raise
    return services


def stop_services(services: Dict[str, Service]) -> None:
    for service in services.values():
        service.stop()


def ask_from_opik_sdk_client(agent_url: str) -> None:
    import opik
    from opik import opik_context

    @opik.track(name="sdk-client: user question")
    def user_question(question: str) -> dict:
        headers = dict(opik_context.get_distributed_trace_headers())
        # Flask's server (like gunicorn and nginx) drops underscore header names.
        headers.update({name.replace("_", "-"): value for name, value in headers.items()})
        return requests.post(f"{agent_url}/ask", json={"question": question}, headers=headers, timeout=30).json()

    print(f"  Opik SDK client   -> {user_question(QUESTION)}")
    opik.flush_tracker()


def ask_from_otel_first_client(agent_url: str) -> int:
    """Ask once from an OTel-first client; returns how many export requests Opik accepted."""
    from opentelemetry.sdk.trace import TracerProvider

    tracing = opik_otel.configure(tracer_provider=TracerProvider())
    tracer = tracing.tracer_provider.get_tracer("otel-client")
    with tracer.start_as_current_span("otel-client: nightly report", attributes={"input.question": QUESTION}):
        trace_id = opik_otel.get_opik_trace_id()  # minted when the span started
        headers = opik_otel.get_distributed_trace_headers(hyphenated=True)
        reply = requests.post(f"{agent_url}/ask", json={"question": QUESTION}, headers=headers, timeout=30).json()
    print(f"  OTel-first client -> {reply}  (Opik trace {trace_id})")
    tracing.shutdown()
    return tracing.exporter.stats["requests_sent"]


def ask_like_curl(agent_url: str) -> None:
    """No tracing headers: the zero-code agent starts the trace, mints its Opik ids and
    writes its row, and the Opik SDK scorer downstream joins it."""
    reply = requests.post(f"{agent_url}/ask", json={"question": QUESTION}, timeout=30).json()
    print(f"  plain request     -> {reply}")


def library_spans_in_another_project() -> None:
    """A library's OTel spans inside ``@opik.track(project_name=...)``: they belong to
    that trace, so they go to its project, not to the exporter's."""
    import opik
    from opentelemetry.sdk.trace import TracerProvider

    tracing = opik_otel.configure(tracer_provider=TracerProvider())
    library = tracing.tracer_provider.get_tracer("some-llm-library")

    @opik.track(name="agent: other project", project_name=LIBRARY_PROJECT)
    def agent() -> None:
        with library.start_as_current_span("library-call"):
            with library.start_as_current_span("library-inner"):
                pass

    agent()
    opik.flush_tracker()
    tracing.shutdown()
    print(f"  @opik.track(project_name={LIBRARY_PROJECT!r}) with library spans inside")


def parent_name(parent: Optional[SpanRecord]) -> str:
    if parent is None:
        return "<missing>"
    return "<client>" if parent.parent_span_id is None else parent.name


def problems_in(local: LocalOpik, expected_roots: List[str]) -> List[str]:
    """Everything that makes the traces differ from one clean tree per request."""
    problems = [f"orphaned span {span.name!r} (trace {span.trace_id})" for span in local.orphans()]
    for trace_record in local.traces():
        for span in local.spans(trace_id=trace_record.id):
            if span.project_name != trace_record.project_name:
                problems.append(f"span {span.name!r} is in project {span.project_name!r}, its trace is not")
    traces = local.traces()
    if sorted(t.name for t in traces) != sorted(expected_roots):
        problems.append(f"expected traces {sorted(expected_roots)}, got {sorted(t.name for t in traces)}")
    for trace_record in traces:
        spans = local.spans(trace_id=trace_record.id)
        by_id = {span.id: span for span in spans}
        edges = sorted(
            (span.name, parent_name(by_id.get(span.parent_span_id)))
            for span in spans
            if span.parent_span_id is not None
        )
        if edges != sorted(EXPECTED_EDGES_BY_ROOT.get(trace_record.name, EXPECTED_EDGES)):
            problems.append(f"trace {trace_record.name!r} is mis-parented: {edges}")
    return problems


def send_filtered_trace(local: Optional[LocalOpik]) -> List[str]:
    """One request traced with ``span_filter="llm"``: its DB and HTTP spans are left out,
    the LLM call hangs under the request's root (its nearest kept ancestor)."""
    from opentelemetry.sdk.trace import TracerProvider

    project = PROJECT + "-filtered"
    tracing = opik_otel.configure(tracer_provider=TracerProvider(), span_filter="llm", project_name=project)
    tracer = tracing.tracer_provider.get_tracer("filtered-client")
    with tracer.start_as_current_span("filtered: answer question"):
        with tracer.start_as_current_span("SELECT passages", attributes={"db.system": "postgresql"}):
            with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.system": "openai"}):
                with tracer.start_as_current_span("POST /v1/chat/completions", attributes={"http.request.method": "POST"}):
                    pass
    tracing.shutdown()
    if local is None:
        return []
    local.wait_for_spans(2, project=project)
    print(local.trees(project))
    names = sorted(span.name for span in local.spans(project))
    problems = [f"orphaned span {span.name!r} in the filtered trace" for span in local.orphans(project)]
    if names != ["chat gpt-4o", "filtered: answer question"]:
        problems.append(f"the filtered trace holds {names}")
    return problems


def main() -> int:
    with opik_target(PROJECT) as local:
        services = start_services()
        try:
            print("Sending requests:")
            ask_from_opik_sdk_client(services["agent"].url)
            accepted = ask_from_otel_first_client(services["agent"].url)
            ask_like_curl(services["agent"].url)
            library_spans_in_another_project()
        finally:
            print("Stopping services (they flush their spans on exit) ...")
            stop_services(services)
        if local is None:
            if not accepted:
                print(f"FAIL: Opik at {os.environ['OPIK_URL_OVERRIDE']} accepted none of the spans: check the URL, OPIK_API_KEY and OPIK_WORKSPACE.")
                return 1
            send_filtered_trace(None)
            print(f"Done: open your Opik projects {PROJECT!r} and {LIBRARY_PROJECT!r} (and the filtered trace's own) to see the traces.")
            return 0
        local.wait_for_spans(2 * (len(EXPECTED_EDGES) + 1) + len(EXPECTED_EDGES) + 3, timeout=20)
        print()
        print(local.trees())
        problems = problems_in(local, EXPECTED_ROOTS)
        for problem in problems:
            print(f"FAIL: {problem}")
        if problems:
            return 1
        print(f"OK: {len(local.traces())} traces, {len(local.spans())} spans, every span under its parent, no orphans.")
        print()
        problems = send_filtered_trace(local)
        for problem in problems:
            print(f"FAIL: {problem}")
        if problems:
            return 1
        print("OK: the span_filter='llm' trace keeps only its root and LLM span, no orphans.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
