"""Throughput of OpikExporter against the plain OTLP/HTTP exporter on the same batches.

Run: ``python benchmarks/exporter_throughput.py [--rounds N] [--batches N] [--batch-size N]``

OpikExporter with its defaults (gzip on), a plain ``OTLPSpanExporter()`` (no compression)
and ``OTLPSpanExporter(compression=Gzip)`` send the same pre-built batches to the same
local sink (a subprocess answering 200 to everything), in interleaved rounds. One span in
ten is a trace root whose Opik id was minted locally, so OpikExporter also writes trace
rows, as it does in ``configure()`` mode. Prints spans/s medians and their ratios.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from opik_otel import OpikExporter, OpikSpanProcessor

SINK = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def build_batches(batches: int, batch_size: int) -> List[List[ReadableSpan]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(OpikSpanProcessor(mint_root_ids=True))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("benchmark")
    for _ in range(batches * batch_size // 10):
        with tracer.start_as_current_span("request", attributes={"http.method": "GET", "input.value": "q" * 200}):
            for index in range(9):
                with tracer.start_as_current_span(f"step-{index}", attributes={"step": index, "output.value": "a" * 300}):
                    pass
    spans = list(memory.get_finished_spans())
    return [spans[i : i + batch_size] for i in range(0, len(spans), batch_size)]


def spans_per_second(exporter, batches: List[List[ReadableSpan]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        exporter.export(batch)
    # OpikExporter.export() queues durably and a background thread sends: the clock stops
    # once everything was delivered (the OTLP exporter's flush returns at once: it sent
    # on the calling thread already).
    assert exporter.force_flush(60_000)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()

    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())
        base = f"http://127.0.0.1:{port}/api"
        batches = build_batches(args.batches, args.batch_size)
        endpoint = f"{base}/v1/private/otel/v1/traces"
        exporters = {
            "OTLPSpanExporter()": OTLPSpanExporter(endpoint=endpoint),
            "OTLPSpanExporter(gzip)": OTLPSpanExporter(endpoint=endpoint, compression=Compression.Gzip),
        }
        with tempfile.TemporaryDirectory() as spool:
            exporters["OpikExporter"] = OpikExporter(url=base, project_name="benchmark", spool_directory=spool)
            samples: Dict[str, List[float]] = {name: [] for name in exporters}
            for exporter in exporters.values():
                spans_per_second(exporter, batches[:2])  # warm-up: connections, imports
            for _ in range(args.rounds):
                for name, exporter in exporters.items():
                    samples[name].append(spans_per_second(exporter, batches))
            for exporter in exporters.values():
                exporter.shutdown()
    finally:
        sink.kill()

    total = sum(len(b) for b in batches)
    print(f"{args.rounds} interleaved rounds of {total} spans in batches of {args.batch_size}")
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in medians.items():
        print(f"{name:<24} {value:>10.0f} spans/s")
    for baseline in ("OTLPSpanExporter()", "OTLPSpanExporter(gzip)"):
        print(f"ratio OpikExporter / {baseline}: {medians['OpikExporter'] / medians[baseline]:.2f}x")

if __name__ == "__main__":
    main()
