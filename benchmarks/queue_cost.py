"""Cost of the durable queue: app side and export side, against the alternatives.

Run: ``python benchmarks/queue_cost.py [--previous /path/to/previous/checkout]``

Three designs, each measured in its own subprocess against the same ``LocalOpik``
(itself a separate process, so its parsing does not compete for the measured GIL):

- ``queue``: this checkout's ``OpikExporter`` (prepare, encode, gzip, append to the disk
  queue; a background sender delivers);
- ``previous``: the ``OpikExporter`` of ``--previous`` (a checkout of the design before
  the queue: it sends on the export thread and spools only failures), if given;
- ``sdk``: the SDK's ``OTLPSpanExporter`` (encode and send on the export thread).

Printed per design: export() time per batch of 512 spans and per span (the cost on the
batching thread), time until the batches are delivered, and the app-side cost of a span
(start + end on the application's thread) through ``configure()`` (or ``BatchSpanProcessor``
for ``sdk``).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

MEASURE = r"""
import json, statistics, sys, tempfile, time
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

design, url, batches, spans_per_app_round = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
memory = InMemorySpanExporter()
source = TracerProvider(shutdown_on_exit=False)
source.add_span_processor(SimpleSpanProcessor(memory))
tracer = source.get_tracer("cost")
for index in range(512):
    with tracer.start_as_current_span("span", attributes={"input.value": "q" * 200, "index": index}):
        pass
batch = list(memory.get_finished_spans())

if design == "sdk":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=url + "/v1/private/otel/v1/traces")
else:
    from opik_otel import OpikExporter
    exporter = OpikExporter(url=url, spool_directory=tempfile.mkdtemp(prefix="opik-cost-"))

wall, cpu = [], []
started = time.monotonic()
for _ in range(batches):
    begin, begin_cpu = time.perf_counter_ns(), time.thread_time_ns()
    exporter.export(batch)
    wall.append(time.perf_counter_ns() - begin)
    cpu.append(time.thread_time_ns() - begin_cpu)
flushed = exporter.force_flush(60_000) if hasattr(exporter, "force_flush") else True
delivered_in = time.monotonic() - started
exporter.shutdown()

app = TracerProvider(shutdown_on_exit=False)
if design == "sdk":
    app.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/private/otel/v1/traces")))
else:
    from opik_otel import configure
    tracing = configure(url=url, tracer_provider=app, spool_directory=tempfile.mkdtemp(prefix="opik-cost-"))
app_tracer = app.get_tracer("cost")
costs = []
for _ in range(5):
    begin = time.perf_counter_ns()
    for _ in range(spans_per_app_round):
        app_tracer.start_span("app", attributes={"input.value": "q" * 200}).end()
    costs.append((time.perf_counter_ns() - begin) / spans_per_app_round)
app.force_flush(60_000)
app.shutdown()
print(json.dumps({
    "export_wall_ms": statistics.median(wall) / 1e6, "export_cpu_ms": statistics.median(cpu) / 1e6,
    "delivered_s": delivered_in, "flushed": flushed, "app_span_us": statistics.median(costs) / 1e3,
}))
"""

SERVER = r"""
import sys
from opik_otel.testing import LocalOpik
opik = LocalOpik().start()
print(opik.url, flush=True)
sys.stdin.readline()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--app-spans", type=int, default=2000)
    parser.add_argument("--previous", default=None, help="checkout of the previous design (its repository root)")
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    designs = [("queue", here), ("sdk", here)]
    if args.previous:
        designs.insert(1, ("previous", args.previous))
    results = {}
    try:
        for name, root in designs:
            env = dict(os.environ, PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
            env["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="opik-cost-cache-")
            done = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(MEASURE), name, url, str(args.batches), str(args.app_spans)],
                capture_output=True, text=True, env=env, timeout=600,
            )
            if done.returncode != 0:
                print(f"{name}: failed\n{done.stderr[-2000:]}")
                continue
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.stdin.close()
        server.wait(10)
    print(f"{'design':10} {'export() per 512-span batch':>28} {'per span':>10} {'delivered all':>14} {'app span':>9}")
    for name, r in results.items():
        print(
            f"{name:10} {r['export_wall_ms']:11.2f} ms wall {r['export_cpu_ms']:6.2f} ms CPU "
            f"{r['export_wall_ms'] * 1000 / 512:7.2f} us {r['delivered_s']:11.2f} s {r['app_span_us']:6.1f} us"
        )
    base = results.get("sdk")
    if base and "queue" in results:
        print(f"queue / sdk export() wall: {results['queue']['export_wall_ms'] / base['export_wall_ms']:.2f}; "
              f"app span: {results['queue']['app_span_us'] / base['app_span_us']:.2f}")
    if "previous" in results and "queue" in results:
        p = results["previous"]
        print(f"queue / previous export() wall: {results['queue']['export_wall_ms'] / p['export_wall_ms']:.2f}; "
              f"app span: {results['queue']['app_span_us'] / p['app_span_us']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
