"""Per-span cost of OpikSpanProcessor against a bare TracerProvider.

Run: ``python benchmarks/processor_overhead.py [--rounds N] [--spans N]``

Three scenarios, each timed for a bare provider, opik_otel's processor and (when the
``opik`` package is installed) the Opik SDK's own processor. A round times a short
chunk of spans on each provider back to back (a few milliseconds each), so machine
noise hits all of them alike; each round gives a ratio to bare, and the median
ratio over all rounds prints at the end with the median time per span. Times are
CPU time of the benchmark thread (``time.thread_time_ns``): what the application's
thread pays, and much less disturbed than wall time when other processes compete for
the cores. On a shared VM whole rounds of several seconds, the earlier method,
swung by tens of percent; ratios of back-to-back chunks hold within a few.

- outside: a three-level subtree with no Opik linkage anywhere;
- attached: a boundary span carrying Opik ids plus two descendants;
- baggage: one server span whose only link is W3C baggage from upstream.
"""

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List

from opentelemetry import baggage, trace
from opentelemetry.sdk.trace import TracerProvider

from opik_otel import OPIK_SPAN_ID, OPIK_TRACE_ID, OpikSpanProcessor, generate_id

BOUNDARY = {OPIK_TRACE_ID: generate_id(), OPIK_SPAN_ID: generate_id()}
BAGGAGE_CONTEXT = baggage.set_baggage(
    OPIK_SPAN_ID, generate_id(), baggage.set_baggage(OPIK_TRACE_ID, generate_id())
)


def subtree(tracer: trace.Tracer, attributes: Dict[str, str]) -> int:
    with tracer.start_as_current_span("boundary", attributes=attributes):
        with tracer.start_as_current_span("handler"):
            with tracer.start_as_current_span("db"):
                pass
    return 3


def outside(tracer: trace.Tracer) -> int:
    return subtree(tracer, {})


def attached(tracer: trace.Tracer) -> int:
    return subtree(tracer, BOUNDARY)


def baggage_linked(tracer: trace.Tracer) -> int:
    tracer.start_span("server", context=BAGGAGE_CONTEXT).end()
    return 1


SCENARIOS: Dict[str, Callable[[trace.Tracer], int]] = {
    "outside": outside,
    "attached": attached,
    "baggage": baggage_linked,
}


def providers() -> Dict[str, trace.Tracer]:
    result: Dict[str, trace.Tracer] = {"bare": TracerProvider().get_tracer("bench")}
    ours = TracerProvider()
    ours.add_span_processor(OpikSpanProcessor())
    result["opik_otel"] = ours.get_tracer("bench")
    try:
        from opik.integrations.otel import OpikSpanProcessor as OpikSdkSpanProcessor
    except ImportError:
        return result
    sdk = TracerProvider()
    sdk.add_span_processor(OpikSdkSpanProcessor())
    result["opik SDK"] = sdk.get_tracer("bench")
    return result


def time_per_span(scenario: Callable[[trace.Tracer], int], tracer: trace.Tracer, spans: int) -> float:
    produced = 0
    start = time.thread_time_ns()
    while produced < spans:
        produced += scenario(tracer)
    return (time.thread_time_ns() - start) / produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--spans", type=int, default=300, help="spans per chunk (one provider, one round)")
    args = parser.parse_args()

    tracers = providers()
    times: Dict[str, Dict[str, List[float]]] = {s: {name: [] for name in tracers} for s in SCENARIOS}
    ratios: Dict[str, Dict[str, List[float]]] = {s: {name: [] for name in tracers} for s in SCENARIOS}
    for scenario_name, scenario in SCENARIOS.items():  # warm-up
        for tracer in tracers.values():
            time_per_span(scenario, tracer, 2000)
    for _ in range(args.rounds):
        for scenario_name, scenario in SCENARIOS.items():
            chunk = {name: time_per_span(scenario, tracer, args.spans) for name, tracer in tracers.items()}
            for name, value in chunk.items():
                times[scenario_name][name].append(value)
                ratios[scenario_name][name].append(value / chunk["bare"])

    print(f"python {sys.version.split()[0]}, {args.rounds} rounds x {args.spans} spans per scenario and config")
    print(f"{'scenario':<10} {'config':<10} {'median CPU ns/span':>19} {'vs bare':>9}")
    for scenario_name in SCENARIOS:
        for name in tracers:
            median = statistics.median(times[scenario_name][name])
            ratio = statistics.median(ratios[scenario_name][name])
            print(f"{scenario_name:<10} {name:<10} {median:>19.0f} {ratio - 1:>+9.1%}")


if __name__ == "__main__":
    main()
