"""One process mixing the Opik SDK and OTel library spans, for tests/test_projects.py.

Settings come from ``OPIK_*`` variables (the SDK and ``opik_otel.configure()`` read the
same ones). Modes:

- ``track``: ``@opik.track(project_name="agent-project")`` around OTel spans two deep;
- ``context``: ``opik.project_context("context-project")`` around a ``@opik.track``
  function with OTel spans two deep, and around a plain OTel root (minted here);
- ``default``: ``@opik.track`` without a project, OTel spans two deep;
- ``open-root``: an OTel root that stays open while two children are exported; prints
  ``READY <trace id>`` and then waits for a line on stdin (the test SIGKILLs it, or
  sends a line for a clean exit with the root still open).

Prints ``DONE <json>`` (trace ids) at the end of the first three modes.
"""

import json
import os
import sys

from opentelemetry import trace

import opik_otel


def library_work(tracer):
    """What an instrumented library does inside the agent: spans two deep."""
    with tracer.start_as_current_span("library-call"):
        with tracer.start_as_current_span("library-inner"):
            return opik_otel.get_opik_trace_id()


def main() -> int:
    mode = sys.argv[1]
    tracing = opik_otel.configure(spool_directory=os.environ["PROJECT_APP_SPOOL"])
    tracer = trace.get_tracer("project_app")
    result = {}
    if mode == "open-root":
        with tracer.start_as_current_span("long-agent-run"):
            for index in range(2):
                with tracer.start_as_current_span(f"step-{index}"):
                    with tracer.start_as_current_span(f"step-{index}-inner"):
                        pass
            assert tracing.force_flush()
            print("READY", opik_otel.get_opik_trace_id(), flush=True)
            sys.stdin.readline()
            # A clean exit with the root still open: shutdown must close its row.
            tracing.shutdown()
            os._exit(0)

    import opik

    if mode == "track":

        @opik.track(name="agent", project_name="agent-project")
        def agent():
            return library_work(tracer)

        result["trace"] = agent()
    elif mode == "context":

        @opik.track(name="agent")
        def agent():
            return library_work(tracer)

        with opik.project_context("context-project"):
            result["trace"] = agent()
            result["otel_root"] = library_work(tracer)
    elif mode == "default":

        @opik.track(name="agent")
        def agent():
            return library_work(tracer)

        result["trace"] = agent()
    opik.flush_tracker()
    assert tracing.force_flush()
    tracing.shutdown()
    print("DONE", json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
