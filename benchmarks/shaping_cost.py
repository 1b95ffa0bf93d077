"""What span shaping costs: app-side per span for ``span_filter="llm"`` and
``sample_rate=0.1``, export-side per span for default scrubbing, each against the same
pipeline without it, timed in interleaved rounds in one run.

Run: ``python benchmarks/shaping_cost.py [--rounds N] [--traces N]``

App side: a real ``TracerProvider`` with ``OpikSpanProcessor`` (root ids minted, as
``configure()`` does) and a processor collecting finished spans, running a request of
four spans (server root, DB query, LLM call with ``gen_ai.*`` attributes, HTTP call).
Export side: the exporter's preparation and OTLP encoding of those finished spans
(what its thread does before sending), with ``scrub=True`` and ``scrub=False``.
"""

import argparse
import statistics
import time
from typing import Callable, Dict, List

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from opik_otel import OpikSpanProcessor
from opik_otel.encoding import encode_span_batch
from opik_otel.masking import Masker
from opik_otel.otlp_wire import WireEncoder
from opik_otel.prepare import BatchPreparer, TraceOptions
from opik_otel.sampling import installed_sampler

SPANS_PER_REQUEST = 4


class Collect(SpanProcessor):
    """Keeps finished spans (bounded), standing in for the batching queue."""

    def __init__(self, limit: int) -> None:
        self.spans: List[ReadableSpan] = []
        self._limit = limit

    def on_end(self, span: ReadableSpan) -> None:
        # Bounded: holding every span of every round would time the garbage collector.
        if len(self.spans) < self._limit:
            self.spans.append(span)


def request(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("GET /chat", attributes={"http.request.method": "GET", "http.route": "/chat",
                                                               "http.request.header.authorization": ("Bearer x",)}):
        with tracer.start_as_current_span("SELECT docs", attributes={"db.system": "sqlite", "db.statement": "SELECT 1"}):
            with tracer.start_as_current_span(
                "chat gpt-4o",
                attributes={"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "input.value": "hello"},
            ) as llm:
                llm.set_attribute("gen_ai.usage.input_tokens", 12)
                with tracer.start_as_current_span("POST", attributes={"http.request.method": "POST", "url.full": "https://api"}):
                    pass


def pipeline(limit: int = 0, **options: object) -> "tuple[trace.Tracer, Collect]":
    """The provider configure() builds, without the network: its sampler and processor."""
    provider = TracerProvider()
    rate = options.get("sample_rate")
    provider.sampler = installed_sampler(provider.sampler, rate if isinstance(rate, float) else None)
    provider.add_span_processor(OpikSpanProcessor(mint_root_ids=True, **options))  # type: ignore[arg-type]
    collect = Collect(limit)
    provider.add_span_processor(collect)
    return provider.get_tracer("bench"), collect


def app_side(tracer: trace.Tracer, traces: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(traces):
        request(tracer)
    return (time.perf_counter_ns() - start) / (traces * SPANS_PER_REQUEST)


def export_side(masker: Masker, spans: List[ReadableSpan]) -> float:
    """The exporter's preparation and encoding stages, as ``OpikExporter.export`` runs them."""
    start = time.perf_counter_ns()
    batch = BatchPreparer(TraceOptions(project_name="bench"), masker).prepare(spans)
    encode_span_batch(batch.spans, batch.changes, WireEncoder())
    return (time.perf_counter_ns() - start) / len(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--traces", type=int, default=1000)
    args = parser.parse_args()

    app: Dict[str, Callable[[], float]] = {}
    for name, options in (("no shaping", {}), ('span_filter="llm"', {"span_filter": "llm"}),
                          ("sample_rate=0.1", {"sample_rate": 0.1})):
        tracer, _ = pipeline(**options)
        app[name] = lambda tracer=tracer: app_side(tracer, args.traces)

    tracer, collected = pipeline(limit=512)
    for _ in range(128):
        request(tracer)
    batch = collected.spans[:512]
    maskers = {"scrub=False": Masker(scrub=False), "scrub=True (default)": Masker()}
    export: Dict[str, Callable[[], float]] = {
        name: (lambda masker=masker: export_side(masker, batch)) for name, masker in maskers.items()
    }

    results: Dict[str, List[float]] = {name: [] for name in (*app, *export)}
    for _ in range(args.rounds):
        for name, run in (*app.items(), *export.items()):
            results[name].append(run())

    def report(title: str, names: List[str]) -> None:
        base = statistics.median(results[names[0]])
        print(title)
        for name in names:
            median = statistics.median(results[name])
            print(f"  {name:<22} {median / 1000:8.2f} us/span   x{median / base:.2f}")

    report("app side (span start to end, per span, 4-span request):", list(app))
    report("export side (prepare + OTLP encode, per span, batch of 512):", list(export))


if __name__ == "__main__":
    main()
