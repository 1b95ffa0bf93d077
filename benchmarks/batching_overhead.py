"""App-side cost per span of OpikBatchSpanProcessor against the SDK's BatchSpanProcessor.

Run: ``python benchmarks/batching_overhead.py [--rounds N] [--spans N]``

What the application thread pays for one ``start_span(...).end()`` with each batching
processor on a ``TracerProvider`` (and with none, as the floor). Both processors export
to the same no-op exporter, so the background thread costs the same; the queue is large
enough that nothing is dropped. Rounds are interleaved so machine noise hits all
variants alike; medians of per-round means print at the end, with the ratio to the
SDK's processor (the target is <= 1.0).

A second table does the same while the exporter is slow (sleeps 5 ms per batch, as a
network call would): the app-side cost must not depend on the exporter.
"""

import argparse
import random
import statistics
import time
from typing import Dict, List

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from opik_otel.batching import OpikBatchSpanProcessor


class NoopExporter(SpanExporter):
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.count = 0

    def export(self, spans):
        if self.delay:
            time.sleep(self.delay)
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def make_providers(delay: float, queue: int) -> Dict[str, TracerProvider]:
    bare = TracerProvider(shutdown_on_exit=False)
    sdk = TracerProvider(shutdown_on_exit=False)
    sdk.add_span_processor(BatchSpanProcessor(NoopExporter(delay), max_queue_size=queue, schedule_delay_millis=100))
    ours = TracerProvider(shutdown_on_exit=False)
    ours.add_span_processor(OpikBatchSpanProcessor(NoopExporter(delay), max_queue_size=queue, schedule_delay_millis=100))
    return {"bare provider": bare, "SDK BatchSpanProcessor": sdk, "OpikBatchSpanProcessor": ours}


def per_span_ns(provider: TracerProvider, spans: int) -> float:
    tracer = provider.get_tracer("bench")
    start_span = tracer.start_span
    started = time.perf_counter_ns()
    for _ in range(spans):
        start_span("op").end()
    elapsed = time.perf_counter_ns() - started
    provider.force_flush(10_000)  # drain between rounds: every round starts alike
    return elapsed / spans


def run(delay: float, rounds: int, spans: int) -> Dict[str, float]:
    providers = make_providers(delay, queue=max(2048, spans * 2))
    samples: Dict[str, List[float]] = {name: [] for name in providers}
    for name, provider in providers.items():  # warm-up
        per_span_ns(provider, spans // 10)
    order = list(providers)
    for round_index in range(rounds):
        random.Random(round_index).shuffle(order)  # no variant always runs after another
        for name in order:
            samples[name].append(per_span_ns(providers[name], spans))
    for provider in providers.values():
        provider.shutdown()
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, medians: Dict[str, float]) -> None:
    sdk = medians["SDK BatchSpanProcessor"]
    print(title)
    for name, value in medians.items():
        print(f"  {name:<24} {value / 1000:7.2f} us/span   x{value / sdk:5.2f} of SDK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--spans", type=int, default=20_000)
    args = parser.parse_args()
    report("Fast exporter:", run(0.0, args.rounds, args.spans))
    report("Slow exporter (5 ms per batch):", run(0.005, args.rounds, args.spans))


if __name__ == "__main__":
    main()
