"""The processor's span-start shortcuts keep every span's linkage: the Opik SDK's span
stack kept once found, the memos of checked ids and of parsed baggage, the direct read
of the current context."""

import logging

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider

from opik_otel import OpikSpanProcessor, attach_to_parent
from opik_otel import processor as processor_module
from opik_otel._logging import reset_rate_limits
from opik_otel.attributes import OPIK_PARENT_SPAN_ID, OPIK_SPAN_ID, OPIK_TRACE_ID, PROJECT_NAME
from opik_otel.linkage import current_context_getter


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_spans_outside_then_inside_a_tracked_function(monkeypatch, tracer, exporter):
    monkeypatch.setenv("OPIK_URL_OVERRIDE", "http://127.0.0.1:9/api")
    monkeypatch.setenv("OPIK_TRACK_DISABLE", "false")
    monkeypatch.delenv("OPIK_API_KEY", raising=False)
    opik = pytest.importorskip("opik")
    from opik import opik_context

    with tracer.start_as_current_span("before"):  # the processor finds the SDK's stack here
        pass

    @opik.track(name="tracked")
    def tracked():
        with tracer.start_as_current_span("inside"):
            pass
        data = opik_context.get_current_span_data()
        return data.trace_id, data.id

    trace_id, span_id = tracked()
    with tracer.start_as_current_span("after"):
        pass
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert OPIK_TRACE_ID not in spans["before"].attributes
    assert spans["inside"].attributes[OPIK_TRACE_ID] == trace_id
    assert spans["inside"].attributes[OPIK_PARENT_SPAN_ID] == span_id
    assert OPIK_TRACE_ID not in spans["after"].attributes


# --- the memos of checked ids and of parsed baggage (issue 13) -----------------------------

TRACE = "0192f5e0-7b3c-7d4e-8f5a-1b2c3d4e5f6a"
PARENT = "0192f5e0-7b3d-7aaa-9bbb-cccccccccccc"


def linkage_warnings(caplog):
    return [r for r in caplog.records if r.name == "opik_otel.linkage" and r.levelno >= logging.WARNING]


def test_an_id_changed_after_its_children_started_is_checked_again(tracer, caplog):
    caplog.set_level(logging.WARNING)
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {"opik_trace_id": TRACE})
        with tracer.start_as_current_span("first") as first:
            pass
        assert first.attributes[OPIK_TRACE_ID] == TRACE  # both ids are known now
        boundary.set_attribute(OPIK_SPAN_ID, "not-an-id")
        with tracer.start_as_current_span("second") as second:
            pass
    assert OPIK_TRACE_ID not in second.attributes
    assert len(linkage_warnings(caplog)) == 1


def test_a_known_id_in_another_spelling_is_still_canonicalised(tracer):
    upper_trace, upper_parent = TRACE.upper(), PARENT.upper().replace("-", "")
    with tracer.start_as_current_span("known") as known:
        attach_to_parent(known, {"opik_trace_id": TRACE})
        with tracer.start_as_current_span("child"):
            pass
    boundary = tracer.start_span("boundary", attributes={OPIK_TRACE_ID: upper_trace, OPIK_SPAN_ID: upper_parent})
    with trace.use_span(boundary, end_on_exit=True):
        for name in ("a", "b"):  # the second one after the first has memoised what it checked
            with tracer.start_as_current_span(name) as child:
                with tracer.start_as_current_span(name + "-child") as grandchild:
                    pass
            assert child.attributes[OPIK_TRACE_ID] == TRACE
            assert child.attributes[OPIK_PARENT_SPAN_ID] == PARENT
            assert grandchild.attributes[OPIK_PARENT_SPAN_ID] == child.attributes[OPIK_SPAN_ID]


def test_the_memo_of_known_ids_stays_bounded_and_linkage_survives_its_clearing():
    spans_processor = OpikSpanProcessor()
    provider = TracerProvider()
    provider.add_span_processor(spans_processor)
    tracer = provider.get_tracer("memo")
    with tracer.start_as_current_span("boundary") as boundary:
        attach_to_parent(boundary, {"opik_trace_id": TRACE})
        parent = boundary
        for index in range(3 * processor_module._MAX_KNOWN_IDS):
            with trace.use_span(parent):
                child = tracer.start_span(f"s{index}")
            assert child.attributes[OPIK_TRACE_ID] == TRACE
            assert child.attributes[OPIK_PARENT_SPAN_ID] == parent.attributes[OPIK_SPAN_ID]
            assert len(spans_processor._known_ids) <= processor_module._MAX_KNOWN_IDS
            parent = child


def test_spans_in_one_bad_baggage_are_each_left_unlinked_with_a_warning(tracer, caplog):
    caplog.set_level(logging.WARNING)
    bad = baggage.set_baggage(OPIK_SPAN_ID, "not-an-id", baggage.set_baggage(OPIK_TRACE_ID, TRACE))
    spans = [tracer.start_span(name, context=bad) for name in ("a", "b")]
    assert all(OPIK_TRACE_ID not in span.attributes for span in spans)
    assert len(linkage_warnings(caplog)) == 1  # rate-limited: one line for the cause
    reset_rate_limits()  # as when the rate limit's interval has passed
    assert OPIK_TRACE_ID not in tracer.start_span("c", context=bad).attributes
    assert len(linkage_warnings(caplog)) == 2  # the bad baggage was not memoised as "no linkage"


def test_each_baggage_mapping_gives_its_own_linkage(tracer):
    def linked(trace_id, span_id, project=None):
        ctx = baggage.set_baggage(OPIK_TRACE_ID, trace_id, baggage.set_baggage(OPIK_SPAN_ID, span_id))
        if project is not None:
            ctx = baggage.set_baggage("opik.project_name", project, ctx)
        return ctx

    first, second = linked(TRACE, PARENT, "p1"), linked(PARENT, TRACE)
    for ctx, trace_id, parent_id, project in [
        (first, TRACE, PARENT, "p1"),
        (first, TRACE, PARENT, "p1"),
        (second, PARENT, TRACE, None),
        (first, TRACE, PARENT, "p1"),
    ]:
        span = tracer.start_span("server", context=ctx)
        assert span.attributes[OPIK_TRACE_ID] == trace_id
        assert span.attributes[OPIK_PARENT_SPAN_ID] == parent_id
        assert span.attributes.get(PROJECT_NAME) == project


class OtherRuntimeContext:
    """A runtime context that is not the API's contextvars one (OTEL_PYTHON_CONTEXT)."""

    def __init__(self):
        self.current = context.Context()

    def attach(self, ctx):
        previous, self.current = self.current, ctx
        return previous

    def get_current(self):
        return self.current

    def detach(self, token):
        self.current = token


def test_the_current_context_comes_from_whatever_runtime_context_is_configured(monkeypatch):
    assert current_context_getter()() is context.get_current()
    runtime = OtherRuntimeContext()
    monkeypatch.setattr(context, "_RUNTIME_CONTEXT", runtime)
    provider = TracerProvider()
    provider.add_span_processor(OpikSpanProcessor())
    tracer = provider.get_tracer("runtime")
    boundary = tracer.start_span("boundary")
    attach_to_parent(boundary, {"opik_trace_id": TRACE})
    runtime.attach(trace.set_span_in_context(boundary))
    child = tracer.start_span("child")  # no context given: the processor asks the runtime
    assert child.attributes[OPIK_PARENT_SPAN_ID] == boundary.attributes[OPIK_SPAN_ID]


def test_headers_extracted_into_the_memoised_baggage_still_win(tracer):
    from opentelemetry.context import set_value

    from opik_otel.linkage import PROPAGATED_LINKAGE_KEY, Linkage

    bag = baggage.set_baggage(OPIK_TRACE_ID, TRACE, baggage.set_baggage(OPIK_SPAN_ID, PARENT))
    assert tracer.start_span("first", context=bag).attributes[OPIK_TRACE_ID] == TRACE  # memoised
    extracted = set_value(PROPAGATED_LINKAGE_KEY, Linkage(PARENT, TRACE, "p"), bag)
    span = tracer.start_span("server", context=extracted)
    assert span.attributes[OPIK_TRACE_ID] == PARENT
    assert span.attributes[OPIK_PARENT_SPAN_ID] == TRACE
    assert span.attributes[PROJECT_NAME] == "p"
