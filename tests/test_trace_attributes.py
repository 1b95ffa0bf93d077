"""trace_attributes over real pipelines: nested blocks merged, carried across threads
and asyncio tasks that inherit the context, applied to rows and root spans."""

import asyncio
import contextvars
import threading

from opik_otel import trace_attributes


def _row_and_root(opik, name):
    root = next(span for span in opik.spans() if span.name == name)
    row = opik.trace(root.trace_id)
    assert row is not None, opik.trees()
    return row, root


def test_nested_blocks_merge_across_threads_and_asyncio(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url, tags=["configured"], metadata={"env": "test"}, thread_id="default")

    def in_thread():
        with tracer.start_as_current_span("thread-root"):
            with tracer.start_as_current_span("thread-child"):
                pass

    async def task():
        with tracer.start_as_current_span("task-root"):
            await asyncio.sleep(0)

    @trace_attributes(tags=["decorated"])
    async def decorated():
        await asyncio.create_task(task())

    with trace_attributes(thread_id="conv-1", user_id="u-1", tags=["outer"], metadata={"a": 1, "b": 1}):
        with trace_attributes(thread_id="conv-2", tags=["inner", "outer"], metadata={"b": 2}):
            worker = threading.Thread(target=contextvars.copy_context().run, args=(in_thread,))
            worker.start()
            worker.join()
            asyncio.run(decorated())
        with tracer.start_as_current_span("outer-root"):
            pass
    with tracer.start_as_current_span("outside"):
        pass
    assert tracing.force_flush(10_000)

    row, root = _row_and_root(opik, "thread-root")
    assert row.thread_id == root.thread_id == "conv-2"
    assert row.tags == root.tags == ["configured", "outer", "inner"]
    assert row.metadata["a"] == 1 and row.metadata["b"] == 2 and row.metadata["user_id"] == "u-1"
    assert row.metadata["env"] == "test"
    child = next(span for span in opik.spans() if span.name == "thread-child")
    assert child.tags == [] and child.thread_id is None

    row, _ = _row_and_root(opik, "task-root")
    assert row.thread_id == "conv-2" and row.tags == ["configured", "outer", "inner", "decorated"]

    row, _ = _row_and_root(opik, "outer-root")
    assert row.thread_id == "conv-1" and row.tags == ["configured", "outer"] and row.metadata["b"] == 1

    row, _ = _row_and_root(opik, "outside")
    assert row.thread_id == "default" and row.tags == ["configured"] and "user_id" not in row.metadata
    assert opik.orphans() == []
    assert not [key for span in opik.spans() for key in span.attributes if key.startswith("opik_otel.")]


def test_decorator_on_sync_function_and_project_of_the_row(opik, pipelines):
    tracer, tracing = pipelines(url=opik.url)

    @trace_attributes(thread_id=42, project_name="per-request")
    def handle():
        with tracer.start_as_current_span("handle"):
            with tracer.start_as_current_span("step"):
                pass

    handle()
    assert tracing.force_flush(10_000)
    row = opik.traces(project="per-request")
    assert [r.name for r in row] == ["handle"] and row[0].thread_id == "42"
    # The project applies to every span of the trace, so none is an orphan elsewhere.
    assert sorted(span.name for span in opik.spans(project="per-request")) == ["handle", "step"]
    assert opik.orphans() == []


def test_bad_values_are_ignored_with_a_warning(opik, pipelines, caplog):
    tracer, tracing = pipelines(url=opik.url)
    with trace_attributes(thread_id=["x"], tags=5, metadata="m", user_id="u"):
        with tracer.start_as_current_span("root"):
            pass
    assert tracing.force_flush(10_000)
    row, _ = _row_and_root(opik, "root")
    assert row.thread_id is None and row.metadata == {"user_id": "u"}
    assert sum("trace_attributes" in r.getMessage() for r in caplog.records) == 3


def test_propagate_carries_values_to_a_downstream_service_in_their_own_header(opik, pipelines):
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    from opik_otel import OpikPropagator

    tracer, tracing = pipelines(url=opik.url)
    propagator = OpikPropagator()
    not_propagated, carrier = {}, {}
    with trace_attributes(thread_id="conv-9", tags=["up"], user_id="u-9"):
        propagator.inject(not_propagated)
        with trace_attributes(tags=["carried"], propagate=True):
            with tracer.start_as_current_span("upstream"):
                propagator.inject(carrier)
    assert "opik-trace-attributes" not in not_propagated
    assert "opik-trace-attributes" in carrier
    assert baggage.get_all() == {}  # nothing went into the user's W3C baggage

    # Downstream: a fresh context, as a server sees it; a trace rooted there gets them.
    downstream = propagator.extract({"Opik-Trace-Attributes": carrier["opik-trace-attributes"]}, context=otel_context.Context())
    token = otel_context.attach(downstream)
    try:
        with trace_attributes(tags=["down"]):
            with tracer.start_as_current_span("job") as job:
                again = {}
                propagator.inject(again)
    finally:
        otel_context.detach(token)
    assert "opik-trace-attributes" in again  # and on to the next service
    assert tracing.force_flush(10_000)
    row, _ = _row_and_root(opik, "job")
    assert row.thread_id == "conv-9"
    assert row.tags == ["up", "carried", "down"]
    assert row.metadata["user_id"] == "u-9"
    assert job.attributes.get("opik.trace_id") == row.id


def test_malformed_propagated_header_is_ignored(opik, pipelines, caplog):
    from opentelemetry import context as otel_context

    from opik_otel import OpikPropagator

    context = OpikPropagator().extract({"opik-trace-attributes": "{not json"}, context=otel_context.Context())
    from opik_otel.trace_attributes import active_trace_attributes

    assert active_trace_attributes(context) is None
    assert any("opik-trace-attributes" in r.getMessage() for r in caplog.records)
