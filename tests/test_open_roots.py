"""A minted trace exists from its first span: open roots, crashed roots, shutdown.

The subprocess tests run ``tests/services/project_app.py open-root``: a root that stays
open while its children are exported, then the process is SIGKILLed, or exits cleanly
with the root still open.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from opik_otel import configure
from opik_otel.open_roots import OPEN_ROOT_DELAY_SECONDS, PROCESS_STOPPED_MESSAGE, OpenRoots

from helpers import SERVICE_PROJECT, app_env

SERVICES = Path(__file__).parent / "services"
CHILDREN = ["step-0", "step-0-inner", "step-1", "step-1-inner"]


def start_open_root(opik, tmp_path):
    process = subprocess.Popen(
        [sys.executable, str(SERVICES / "project_app.py"), "open-root"],
        env=app_env(opik, tmp_path, "open-root"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if not line.startswith("READY "):
        process.kill()
        raise AssertionError(f"open-root app did not start: {process.stderr.read()}")
    return process, line.split()[1]


def assert_visible_with_children(opik, trace_id):
    row = opik.trace(trace_id)
    assert row is not None and row.name == "long-agent-run", opik.trees()
    spans = {s.name: s for s in opik.spans(trace_id=trace_id)}
    assert set(spans) == {"long-agent-run", *CHILDREN}, opik.trees()
    assert spans["step-0"].parent_span_id == spans["long-agent-run"].id
    assert opik.orphans(SERVICE_PROJECT) == [], opik.trees()
    return row, spans


def test_open_root_is_visible_while_children_are_exported_and_after_sigkill(opik, tmp_path):
    process, trace_id = start_open_root(opik, tmp_path)
    try:
        # The children were flushed while the root is open: row and root span came first.
        row, _ = assert_visible_with_children(opik, trace_id)
        assert row.end_time is None  # still running
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    row, _ = assert_visible_with_children(opik, trace_id)
    assert len(opik.traces()) == 1


def test_clean_exit_with_the_root_open_closes_its_row_with_an_error(opik, tmp_path):
    process, trace_id = start_open_root(opik, tmp_path)
    try:
        process.stdin.write("exit\n")
        process.stdin.flush()
        assert process.wait(60) == 0, process.stderr.read()
    finally:
        process.kill()
    row, spans = assert_visible_with_children(opik, trace_id)
    assert row.end_time is not None
    assert PROCESS_STOPPED_MESSAGE in str(row.error_info), row
    assert spans["long-agent-run"].end_time is not None
    assert PROCESS_STOPPED_MESSAGE in str(spans["long-agent-run"].error_info)


def test_root_open_past_the_delay_is_written_without_any_child(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, project_name="open")
    span = tracer.start_span("waiting-root")
    try:
        assert opik.wait_for_traces(1, timeout=OPEN_ROOT_DELAY_SECONDS + 10), opik.trees()
        assert opik.wait_for_spans(1, timeout=10)
        (row,) = opik.traces()
        assert row.name == "waiting-root" and row.end_time is None and row.project_name == "open"
    finally:
        span.end()
    assert tracing.force_flush()
    (row,) = opik.traces()
    assert row.end_time is not None and row.error_info is None  # the real row upserted it
    (root,) = opik.spans()
    assert root.error_info is None and root.end_time > root.start_time


def test_roots_started_while_the_writer_waits_are_written_in_their_turn(opik, pipelines):
    # The writer thread sleeps until the oldest open root is due and is not woken by
    # later roots; one started after every earlier root ended must still wake it.
    tracer, tracing = pipelines(url=opik.url, project_name="open")
    with tracer.start_as_current_span("quick-root"):
        pass  # ended at once: the thread may then have nothing due and sleep until woken
    first = tracer.start_span("first-open-root")
    time.sleep(OPEN_ROOT_DELAY_SECONDS / 2)
    second = tracer.start_span("second-open-root")  # due after first: no wake-up
    try:
        deadline = time.monotonic() + OPEN_ROOT_DELAY_SECONDS + 10
        wanted = {"first-open-root", "second-open-root"}
        while time.monotonic() < deadline and not wanted <= {row.name for row in opik.traces()}:
            time.sleep(0.05)
        rows = {row.name: row for row in opik.traces()}
        assert wanted <= set(rows), opik.trees()
        assert rows["second-open-root"].end_time is None
    finally:
        first.end()
        second.end()
    assert tracing.force_flush()
    assert len(opik.traces()) == 3 and opik.orphans() == []


def test_short_roots_are_written_once(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url)
    for index in range(5):
        with tracer.start_as_current_span(f"request-{index}"):
            with tracer.start_as_current_span("work"):
                pass
    assert tracing.force_flush()
    assert len(opik.traces()) == 5 and len(opik.spans()) == 10
    assert opik.stats["duplicate_span_ids"] == 0  # no provisional copy was needed
    assert opik.stats["traces_written"] == 5
    assert opik.orphans() == []


def test_open_roots_registry_takes_each_root_once():
    provider = TracerProvider()
    tracer = provider.get_tracer("tests.open_roots")
    tracing = configure(tracer_provider=provider, url="http://127.0.0.1:9/api", spool_directory=False)
    try:
        roots = OpenRoots(max_roots=2)
        spans = [tracer.start_span(f"root-{i}") for i in range(3)]
        for span in spans:
            roots.add(span)
        assert len(roots) == 2  # the oldest forgotten
        assert [r.span.name for r in roots.take_due(0)] == ["root-1", "root-2"]
        assert roots.take_due(0) == [] and roots.next_due_in(0) is None
        assert [r.span.name for r in roots.take_all()] == ["root-1", "root-2"] and len(roots) == 0
        for span in spans:
            span.end()
    finally:
        tracing.shutdown(0)
        provider.shutdown()


def test_a_root_that_ended_is_forgotten_when_its_batch_is_seen():
    provider = TracerProvider()
    tracer = provider.get_tracer("tests.open_roots")
    tracing = configure(tracer_provider=provider, url="http://127.0.0.1:9/api", spool_directory=False)
    try:
        roots = OpenRoots()
        root = tracer.start_span("root")
        roots.add(root)
        with tracer.start_as_current_span("child", context=_context_of(root)) as child:
            pass
        assert [r.span.name for r in roots.before_batch([child])] == ["root"]
        assert roots.before_batch([child]) == []  # written once
        root.end()
        assert roots.before_batch([root]) == [] and len(roots) == 0
    finally:
        tracing.shutdown(0)
        provider.shutdown()


def _context_of(span):
    from opentelemetry import trace

    return trace.set_span_in_context(span)


if os.name != "posix":  # SIGKILL
    del test_open_root_is_visible_while_children_are_exported_and_after_sigkill
