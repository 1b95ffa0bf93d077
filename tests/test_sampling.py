"""sample_rate over real pipelines: local roots sampled per trace id, traces whole, rows
only for kept traces, requests linked from upstream always kept."""

import pytest

from opik_otel import attach_to_parent, configure, generate_id
from opik_otel import ConfigurationError
from opik_otel.sampling import is_sampled, sampling_bound


def _local_traces(tracer, count):
    roots = {}
    for index in range(count):
        with tracer.start_as_current_span(f"root-{index}") as root:
            roots[f"root-{index}"] = root.get_span_context().trace_id
            with tracer.start_as_current_span("child"):
                with tracer.start_as_current_span("grandchild"):
                    pass
    return roots


def _linked_requests(tracer, count):
    upstream = {}
    for index in range(count):
        trace_id, parent = generate_id(), generate_id()
        with tracer.start_as_current_span(f"linked-{index}") as server:
            attach_to_parent(server, {"opik_trace_id": trace_id, "opik_parent_span_id": parent})
            with tracer.start_as_current_span("handler"):
                pass
        upstream[trace_id] = parent
    return upstream


def _check_linked_kept(opik, upstream):
    for trace_id, parent in upstream.items():
        spans = {span.name: span for span in opik.spans(trace_id=trace_id)}
        assert len(spans) == 2, opik.tree(trace_id)
        server = next(span for name, span in spans.items() if name.startswith("linked-"))
        assert server.parent_span_id == parent
        assert spans["handler"].parent_span_id == server.id


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_sampling_keeps_whole_traces_by_trace_id_and_every_linked_request(opik, pipelines, rate):
    tracer, tracing = pipelines(url=opik.url, sample_rate=rate)
    roots = _local_traces(tracer, 120)
    upstream = _linked_requests(tracer, 5)
    assert tracing.force_flush(10_000)

    bound = sampling_bound(rate)
    expected = sorted(name for name, otel_id in roots.items() if is_sampled(otel_id, bound))
    if rate == 0.0:
        assert expected == []
    if rate == 1.0:
        assert len(expected) == 120
    if rate == 0.5:
        assert 30 < len(expected) < 90
    rows = [row for row in opik.traces() if row.name.startswith("root-")]
    assert sorted(row.name for row in rows) == expected
    for row in rows:  # whole: every kept trace has its three spans, chained
        assert sorted(span.name for span in opik.spans(trace_id=row.id)) == sorted(
            [row.name, "child", "grandchild"]
        )
    local = [span for span in opik.spans() if span.trace_id not in upstream]
    assert len(local) == 3 * len(expected)
    assert [span for span in opik.orphans() if span.trace_id not in upstream] == []
    _check_linked_kept(opik, upstream)
    assert not [key for span in opik.spans() for key in span.attributes if key.startswith("opik_otel.")]


def test_sampled_out_trace_hands_no_opik_ids_downstream(pipelines, opik):
    from opik_otel import get_distributed_trace_headers, get_opik_trace_id

    tracer, _ = pipelines(url=opik.url, sample_rate=0.0)
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("child") as child:
            assert get_distributed_trace_headers() is None
            assert get_opik_trace_id() is None
            with tracer.start_as_current_span("grandchild") as grandchild:
                pass
    # Close to free: only the root is recorded (attach_to_parent may still link it).
    assert root.attributes.get("opik_otel.sampled_out") is True
    assert not child.is_recording() and not grandchild.is_recording()
    assert not hasattr(child, "attributes")


def test_configure_anew_without_sample_rate_removes_the_sampler(pipelines, opik):
    from opentelemetry.sdk.trace import TracerProvider

    from opik_otel.sampling import OpikSampler

    provider = TracerProvider()
    own_sampler = provider.sampler
    first = configure(url=opik.url, tracer_provider=provider, sample_rate=0.5, spool_directory=False)
    assert isinstance(provider.sampler, OpikSampler) and provider.sampler.delegate is own_sampler
    # A second call while the first pipeline runs reuses it, sampler included.
    assert configure(url=opik.url, tracer_provider=provider, spool_directory=False).span_processor is first.span_processor
    assert isinstance(provider.sampler, OpikSampler)
    first.shutdown()
    second = configure(url=opik.url, tracer_provider=provider, spool_directory=False)
    assert provider.sampler is own_sampler
    second.shutdown()


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", float("nan"), True])
def test_bad_sample_rate_is_a_configuration_error(bad, isolated_opik_settings, tmp_path):
    from opentelemetry.sdk.trace import TracerProvider

    with pytest.raises(ConfigurationError, match="sample_rate"):
        configure(url="http://127.0.0.1:9/api", tracer_provider=TracerProvider(), sample_rate=bad, spool_directory=False)
