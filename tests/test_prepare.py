"""The export preparation's memos never let an id through that it would refuse alone."""

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from opik_otel import OPIK_SPAN_ID, OPIK_TRACE_ID, generate_id
from opik_otel.prepare import BatchPreparer, TraceOptions


def span(index, attributes):
    context = SpanContext(trace_id=index + 1, span_id=index + 1, is_remote=False, trace_flags=TraceFlags(1))
    parent = SpanContext(trace_id=index + 1, span_id=999, is_remote=False)
    return ReadableSpan(
        name=f"s{index}", context=context, parent=parent, attributes=attributes, start_time=1, end_time=2
    )


def test_ids_checked_once_per_trace_are_still_checked_in_every_other_spelling():
    trace_id = generate_id()
    preparer = BatchPreparer(TraceOptions(project_name="p"))
    spellings = [trace_id, trace_id.upper(), f" {trace_id}", trace_id, "{" + trace_id + "}"]
    batch = preparer.prepare(
        [span(i, {OPIK_TRACE_ID: value, OPIK_SPAN_ID: generate_id()}) for i, value in enumerate(spellings)]
    )
    sent = [changes.get(OPIK_TRACE_ID, "unchanged") for changes in batch.changes]
    assert sent == ["unchanged", trace_id, None, "unchanged", trace_id]
    # A second batch (memo warm) decides alike.
    again = preparer.prepare([span(9, {OPIK_TRACE_ID: f" {trace_id}", OPIK_SPAN_ID: generate_id()})])
    assert again.changes[0][OPIK_TRACE_ID] is None


def test_the_canonical_id_memo_is_bounded():
    preparer = BatchPreparer(TraceOptions(project_name="p"))
    for start in range(0, 6000, 500):
        ids = [{OPIK_TRACE_ID: generate_id(), OPIK_SPAN_ID: generate_id()} for _ in range(500)]
        preparer.prepare([span(start + i, attributes) for i, attributes in enumerate(ids)])
        assert len(preparer._canonical_ids) <= 4096
