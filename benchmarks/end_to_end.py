"""App-plus-export cost per span: ``configure()`` against the stock OTel SDK pipeline.

Run: ``python benchmarks/end_to_end.py [--rounds N] [--traces N]``

Per round and pipeline, a fresh ``TracerProvider``; the application thread creates
3-span traces (a root with two children, a few attributes each) as fast as it can while
the pipeline exports in the background to a local sink (a subprocess answering 200 to
everything and counting the spans it receives); the clock stops when a flush has
delivered every span. Measured: wall time and CPU time of this process (all its
threads), per span. Pipelines, in interleaved rounds:

- ``SDK``: ``BatchSpanProcessor(OTLPSpanExporter())``, the stock OTel setup;
- ``opik SDK recipe``: the Opik SDK's ``opik.integrations.otel.OpikSpanProcessor`` plus
  the same (when the installed ``opik`` has it);
- ``configure()``: opik_otel's defaults (minted trace ids, so trace rows too; gzip on).

Every pipeline gets a queue large enough to hold a whole round, so none drops spans.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Callable, Dict, List, Tuple

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from opik_otel import configure

SINK = r"""
import gzip, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

spans = 0
lock = threading.Lock()

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global spans
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/v1/traces"):
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
            count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with lock:
                spans += count
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        data = str(spans).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

Pipeline = Callable[[str, int, str], Tuple[TracerProvider, Callable[[], Any]]]


def stock_sdk(base: str, queue: int, spool: str) -> Tuple[TracerProvider, Callable[[], Any]]:
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/private/otel/v1/traces"), max_queue_size=queue)
    )
    return provider, provider.shutdown


def opik_sdk_recipe(base: str, queue: int, spool: str) -> Tuple[TracerProvider, Callable[[], Any]]:
    from opik.integrations.otel import OpikSpanProcessor as OpikSdkSpanProcessor

    provider, stop = stock_sdk(base, queue, spool)
    provider.add_span_processor(OpikSdkSpanProcessor())
    return provider, stop


def opik_otel_configure(base: str, queue: int, spool: str) -> Tuple[TracerProvider, Callable[[], Any]]:
    provider = TracerProvider()
    tracing = configure(url=base, project_name="benchmark", tracer_provider=provider, max_queue_size=queue, spool_directory=spool)

    def stop() -> None:
        tracing.shutdown()
        provider.shutdown()

    return provider, stop


def pipelines() -> Dict[str, Pipeline]:
    result: Dict[str, Pipeline] = {"SDK": stock_sdk}
    try:
        import opik.integrations.otel  # noqa: F401
    except ImportError:
        print("(the installed opik has no opik.integrations.otel: its recipe is left out)")
    else:
        result["opik SDK recipe"] = opik_sdk_recipe
    result["configure()"] = opik_otel_configure
    return result


def delivered(base: str) -> int:
    with urllib.request.urlopen(f"{base}/count") as response:
        return int(response.read())


def one_trace(tracer: Any, index: int) -> None:
    """A root with two children, a few attributes each: what the application does."""
    with tracer.start_as_current_span("request", attributes={"http.method": "GET", "input.value": "question " * 20}):
        with tracer.start_as_current_span("retrieve", attributes={"k": index, "documents": 3}):
            pass
        with tracer.start_as_current_span("generate", attributes={"output.value": "answer " * 40, "gen_ai.usage.input_tokens": 120}):
            pass


def one_round(make: Pipeline, base: str, traces: int, spool: str) -> Tuple[float, float]:
    """Wall and CPU seconds per span, from the first span to everything delivered."""
    # A spool directory of its own, as one application has: no claiming of the
    # directories earlier rounds' exporters left behind.
    provider, stop = make(base, traces * 3 + 1024, tempfile.mkdtemp(dir=spool))
    tracer = provider.get_tracer("benchmark.app", "1.0")
    before = delivered(base)
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(traces):
        one_trace(tracer, index)
    provider.force_flush(60_000)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop()
    received = delivered(base) - before
    # More is fine: configure() writes a root that is still open when a child of it is
    # exported ahead of that child, then again when it ends (an upsert of the same ids).
    if received < traces * 3:
        raise SystemExit(f"a pipeline delivered {received} of {traces * 3} spans; the figures would be wrong")
    return wall / (traces * 3), cpu / (traces * 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--traces", type=int, default=2000, help="3-span traces per round and pipeline")
    args = parser.parse_args()

    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}/api"
        makers = pipelines()
        walls: Dict[str, List[float]] = {name: [] for name in makers}
        cpus: Dict[str, List[float]] = {name: [] for name in makers}
        with tempfile.TemporaryDirectory() as spool:
            for make in makers.values():
                one_round(make, base, 200, spool)  # warm-up: imports, connections
            for _ in range(args.rounds):
                for name, make in makers.items():
                    wall, cpu = one_round(make, base, args.traces, spool)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
    finally:
        sink.kill()

    print(f"python {sys.version.split()[0]}, {args.rounds} interleaved rounds x {args.traces * 3} spans per pipeline")
    print(f"{'pipeline':<16} {'wall us/span':>13} {'cpu us/span':>12} {'wall vs SDK':>12} {'cpu vs SDK':>11}")
    sdk_wall, sdk_cpu = statistics.median(walls["SDK"]), statistics.median(cpus["SDK"])
    for name in makers:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name:<16} {wall * 1e6:>13.1f} {cpu * 1e6:>12.1f} {wall / sdk_wall:>11.2f}x {cpu / sdk_cpu:>10.2f}x")


if __name__ == "__main__":
    main()
