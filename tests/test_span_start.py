"""The processor's shortcut for spans outside any ``@opik.track`` function (it keeps the
Opik SDK's span stack once found) still links spans started inside one later."""

import pytest

from opik_otel.attributes import OPIK_PARENT_SPAN_ID, OPIK_TRACE_ID


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
