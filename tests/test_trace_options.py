"""configure() with the trace options users combine it with: a sampler, mint_root_ids=False."""

import itertools

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

from opik_otel import OPIK_TRACE_ID, configure, get_distributed_trace_headers, get_opik_trace_id


def run_trace(tracing, name="root"):
    tracer = tracing.tracer_provider.get_tracer("tests.trace_options")
    with tracer.start_as_current_span(name) as root:
        seen = get_opik_trace_id()
        with tracer.start_as_current_span(f"{name}-child"):
            pass
    assert tracing.force_flush()
    return root, seen


def test_unsampled_traces_write_neither_spans_nor_trace_rows(opik, tmp_path):
    tracing = configure(url=opik.url, tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
                        spool_directory=tmp_path / "spool")
    try:
        run_trace(tracing, "dropped")
    finally:
        tracing.shutdown()
    assert opik.spans() == [] and opik.traces() == []
    assert [r.path for r in opik.requests] == []


class AlternatingTraceIds(RandomIdGenerator):
    """Trace ids whose low 64 bits TraceIdRatioBased(0.5) keeps and drops in turn."""

    def __init__(self):
        self._counter = itertools.count(1)

    def generate_trace_id(self):
        n = next(self._counter)
        low = 1 if n % 2 else 2**64 - 1
        return (n << 64) | low


def test_a_ratio_sampler_keeps_whole_traces_with_their_rows(opik, tmp_path):
    sampler = ParentBased(TraceIdRatioBased(0.5))
    provider = TracerProvider(sampler=sampler, id_generator=AlternatingTraceIds())
    tracing = configure(url=opik.url, tracer_provider=provider, spool_directory=tmp_path / "spool")
    try:
        for index in range(20):
            run_trace(tracing, f"t{index}")
    finally:
        tracing.shutdown()
    traces = opik.traces()
    assert sorted(t.name for t in traces) == sorted(f"t{i}" for i in range(0, 20, 2))
    # Every kept trace has its row and both spans; nothing is orphaned.
    assert len(opik.spans()) == 20
    assert opik.orphans() == []


def test_without_minted_root_ids_opik_derives_the_trace(opik, tmp_path):
    tracing = configure(url=opik.url, tracer_provider=TracerProvider(), mint_root_ids=False,
                        spool_directory=tmp_path / "spool")
    try:
        tracer = tracing.tracer_provider.get_tracer("tests.trace_options")
        with tracer.start_as_current_span("derived") as root:
            assert get_opik_trace_id() is None
            assert get_distributed_trace_headers() is None
            with tracer.start_as_current_span("derived-child"):
                pass
        assert tracing.force_flush()
    finally:
        tracing.shutdown()
    assert OPIK_TRACE_ID not in root.attributes
    (trace_row,) = opik.traces()
    assert (trace_row.name, trace_row.source) == ("derived", "otel-root")
    assert sorted(s.name for s in opik.spans(trace_id=trace_row.id)) == ["derived", "derived-child"]
    assert opik.orphans() == []
