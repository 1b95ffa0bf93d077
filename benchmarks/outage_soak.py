"""Outage soak: a steady span producer keeps going while Opik is down for a long stretch.

Run: ``python benchmarks/outage_soak.py`` (20,000 spans over ~60 s, Opik down for the
middle 30 s), or shorter: ``python benchmarks/outage_soak.py --spans 2000 --duration 10 --outage 5``.

The producer (this process) emits traces of one root and ``--children`` children at a
steady rate through ``opik_otel.configure()`` to a ``LocalOpik`` that runs in a child
process and refuses connections for ``--outage`` seconds in the middle of the run.
LocalOpik runs out of process on purpose: its HTTP handling and protobuf parsing would
otherwise compete for this process's GIL only while Opik is up (skewing the per-span cost
comparison) and its stored records would count in this process's RSS.

Printed at the end: spans emitted, unique span ids delivered (and whether that is exactly
the emitted set), duplicates Opik upserted, trace rows and orphans, peak RSS growth during
the outage (VmRSS from /proc, or ru_maxrss), peak spool size, time to drain after the
outage, and the app-side cost of a span (start + end on the producer thread) while Opik
is down against while it is up.

Targets (issue 5): delivered == emitted, RSS growth < 50 MB, per-span cost during the
outage within 10% of the cost while Opik is up (judged on the medians). Exit status 1 when
a target is missed.

The per-span cost of a sparse producer (one trace every 12 ms) is dominated by cold
caches, so on a shared VM one run's windows can differ by 10-20% for reasons unrelated
to Opik's state. ``--control`` keeps Opik up the whole run and labels the middle window
as if it were down: the ratio it prints is this machine's noise floor.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from opentelemetry.sdk.trace import TracerProvider

from opik_otel import configure

SERVER = r"""
import json, sys
from opik_otel.testing import LocalOpik

opik = LocalOpik().start()
print(opik.url, flush=True)
for line in sys.stdin:
    command = line.split()
    if not command:
        continue
    if command[0] == "down":
        opik.refuse_connections()
        print("ok", flush=True)
    elif command[0] == "up":
        opik.accept_connections()
        print("ok", flush=True)
    elif command[0] == "count":
        stats = opik.stats
        print(stats["spans_accepted"] - stats["duplicate_span_ids"], flush=True)
    elif command[0] == "report":
        spans = opik.spans()
        with open(command[1], "w") as handle:
            json.dump(
                {
                    "ids": [s.otel_span_id for s in spans],
                    "stats": opik.stats,
                    "traces": len(opik.traces()),
                    "orphans": len(opik.orphans()),
                    "statuses": sorted({r.status for r in opik.requests}),
                },
                handle,
            )
        print("ok", flush=True)
    elif command[0] == "quit":
        break
opik.stop()
"""


class Server:
    """LocalOpik in a child process, driven over its stdin."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        self._lock = threading.Lock()

    def ask(self, *command: str) -> str:
        with self._lock:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(" ".join(command) + "\n")
            self.process.stdin.flush()
            return self.process.stdout.readline().strip()

    def close(self) -> None:
        try:
            self.ask("quit")
            self.process.wait(10)
        except Exception:
            self.process.kill()


def rss_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Sampler(threading.Thread):
    """Samples RSS and spool size every ``interval`` seconds."""

    def __init__(self, exporter, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.exporter = exporter
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples: List[tuple] = []  # (monotonic, rss, spool bytes, spool records)

    def run(self) -> None:
        queue = self.exporter.queue
        while not self.stop_event.wait(self.interval):
            self.samples.append((time.monotonic(), rss_bytes(), queue.size_bytes, len(queue)))


def mib(value: float) -> str:
    return f"{value / (1024 * 1024):.1f} MiB"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Outage soak for opik_otel.configure().")
    parser.add_argument("--spans", type=int, default=20_000, help="spans to emit (default 20000)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to spread them over (default 60)")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds Opik is down, centred (default 30)")
    parser.add_argument("--children", type=int, default=3, help="children per root span (default 3)")
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to wait for delivery after")
    parser.add_argument("--spool-dir", default=None, help="spool directory (default: a fresh temp dir)")
    parser.add_argument(
        "--control",
        action="store_true",
        help="keep Opik up the whole time but still label the middle window 'down': the noise floor "
        "of the down/up comparison on this machine",
    )
    parser.add_argument(
        "--short-lived",
        type=int,
        default=0,
        metavar="RUNS",
        help="instead: RUNS runs of a small program while Opik flaps (down for every other pair of runs)",
    )
    args = parser.parse_args(argv)
    if args.short_lived:
        return short_lived_runs(args.short_lived, args.children)

    per_trace = 1 + args.children
    traces = max(1, args.spans // per_trace)
    emitted_target = traces * per_trace
    outage_start = (args.duration - args.outage) / 2
    outage_end = outage_start + args.outage
    spool_dir = args.spool_dir or tempfile.mkdtemp(prefix="opik-soak-spool-")

    server = Server()
    provider = TracerProvider(shutdown_on_exit=False)
    tracing = configure(url=server.url, tracer_provider=provider, spool_directory=spool_dir, project_name="soak")
    tracer = provider.get_tracer("outage-soak")
    sampler = Sampler(tracing.exporter)
    costs: Dict[str, List[float]] = {"up": [], "down": []}
    cpu_costs: Dict[str, List[float]] = {"up": [], "down": []}
    emitted_ids: List[str] = []
    phase = "up"
    rss_at_outage: Optional[int] = None
    outage_window = (0.0, 0.0)
    payload = "q" * 200

    print(
        f"emitting {emitted_target} spans ({traces} traces of {per_trace}) over {args.duration:.0f} s; "
        f"Opik down from {outage_start:.1f} s to {outage_end:.1f} s",
        flush=True,
    )
    sampler.start()
    started = time.monotonic()
    interval = args.duration / traces
    for index in range(traces):
        target = started + index * interval
        now = time.monotonic()
        if now < target:
            time.sleep(target - now)
        elapsed = time.monotonic() - started
        if phase == "up" and outage_start <= elapsed < outage_end and rss_at_outage is None:
            rss_at_outage = rss_bytes()
            if not args.control:
                server.ask("down")
            outage_window = (time.monotonic(), 0.0)
            phase = "down"
            print(f"  {elapsed:5.1f} s: Opik down", flush=True)
        elif phase == "down" and elapsed >= outage_end:
            if not args.control:
                server.ask("up")
            outage_window = (outage_window[0], time.monotonic())
            phase = "up"
            print(f"  {elapsed:5.1f} s: Opik up again", flush=True)

        begin = time.perf_counter_ns()
        begin_cpu = time.thread_time_ns()
        with tracer.start_as_current_span("request", attributes={"input.value": payload, "http.route": "/chat"}) as root:
            ids = [root.get_span_context().span_id]
            for child in range(args.children):
                with tracer.start_as_current_span(f"step-{child}", attributes={"gen_ai.request.model": "m"}) as span:
                    ids.append(span.get_span_context().span_id)
        cost = (time.perf_counter_ns() - begin) / per_trace
        cpu_costs[phase].append((time.thread_time_ns() - begin_cpu) / per_trace)
        costs[phase].append(cost)
        emitted_ids.extend(format(i, "016x") for i in ids)
    produced_in = time.monotonic() - started
    if phase == "down":  # a run shorter than the outage window
        server.ask("up")
        outage_window = (outage_window[0], time.monotonic())

    # Drain: everything emitted must reach Opik, the spooled part included.
    drain_started = time.monotonic()
    tracing.force_flush(int(args.drain_timeout * 1000))
    delivered_count = 0
    while time.monotonic() - drain_started < args.drain_timeout:
        delivered_count = int(server.ask("count"))
        if delivered_count >= len(emitted_ids):
            break
        time.sleep(0.25)
    sampler.stop_event.set()
    sampler.join()
    recovered_at = outage_window[1] or drain_started
    drained_at = next((s[0] for s in sampler.samples if s[0] >= recovered_at and s[3] == 0), None)
    report_path = os.path.join(tempfile.mkdtemp(prefix="opik-soak-"), "report.json")
    server.ask("report", report_path)
    with open(report_path) as handle:
        report = json.load(handle)
    batching = tracing.span_processor.stats
    exporter_stats = tracing.exporter.stats
    tracing.shutdown(5000)
    server.close()
    if args.spool_dir is None:
        shutil.rmtree(spool_dir, ignore_errors=True)

    delivered = set(report["ids"])
    emitted = set(emitted_ids)
    down_start, down_end = outage_window
    during = [s for s in sampler.samples if down_start <= s[0] <= (down_end or float("inf"))]
    rss_growth = max((s[1] for s in during), default=rss_bytes()) - (rss_at_outage or rss_bytes())
    spool_peak_bytes = max((s[2] for s in sampler.samples), default=0)
    spool_peak_records = max((s[3] for s in sampler.samples), default=0)

    def summary(values: List[float]) -> str:
        if not values:
            return "n/a"
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"mean {statistics.fmean(values) / 1000:6.1f} us, median {statistics.median(values) / 1000:6.1f} us, "
            f"p99 {p99 / 1000:6.1f} us  ({len(values) * per_trace} spans)"
        )

    up, down = costs["up"], costs["down"]
    mean_ratio = statistics.fmean(down) / statistics.fmean(up) if up and down else float("nan")
    median_ratio = statistics.median(down) / statistics.median(up) if up and down else float("nan")

    print()
    print(f"produced in               {produced_in:.1f} s")
    print(f"emitted                   {len(emitted_ids)} spans")
    print(f"delivered (unique ids)    {len(delivered)}   exactly the emitted set: {delivered == emitted}")
    print(f"missing / unexpected      {len(emitted - delivered)} / {len(delivered - emitted)}")
    print(f"duplicates upserted       {report['stats']['duplicate_span_ids']}")
    print(f"trace rows / orphans      {report['traces']} / {report['orphans']}")
    print(f"dropped by the queue      {batching['dropped_queue_full'] + batching['dropped_at_shutdown']}")
    print(f"queue lost to the cap     {exporter_stats['queue_dropped_records']} records")
    print("exporter counters         " + ", ".join(f"{k}={v}" for k, v in exporter_stats.items() if k.startswith("requests") and v))
    print(f"peak RSS growth (outage)  {mib(rss_growth)}")
    print(f"peak queue size on disk   {mib(spool_peak_bytes)} in {spool_peak_records} records")
    drained = f"{drained_at - recovered_at:.1f} s" if drained_at is not None else "not observed"
    print(f"queue drained after       {drained} (from the end of the outage)")
    print(f"per-span cost, Opik up    {summary(up)}")
    print(f"per-span cost, Opik down  {summary(down)}")
    print(f"down / up ratio           mean {mean_ratio:.3f}, median {median_ratio:.3f}  (wall clock)")
    cpu_up, cpu_down = cpu_costs["up"], cpu_costs["down"]
    if cpu_up and cpu_down:
        print(
            f"                          mean {statistics.fmean(cpu_down) / statistics.fmean(cpu_up):.3f}, "
            f"median {statistics.median(cpu_down) / statistics.median(cpu_up):.3f}  (producer thread CPU time: "
            f"{statistics.median(cpu_up) / 1000:.1f} us up, {statistics.median(cpu_down) / 1000:.1f} us down)"
        )

    failures = []
    if delivered != emitted:
        failures.append("delivered != emitted")
    if rss_growth >= 50 * 1024 * 1024:
        failures.append("RSS growth >= 50 MB")
    if not median_ratio <= 1.10:
        failures.append("per-span cost during the outage more than 10% above the cost while up")
    print("targets:", "all met" if not failures else "MISSED: " + "; ".join(failures))
    return 1 if failures else 0


PROGRAM = r"""
import json, sys
from opentelemetry.sdk.trace import TracerProvider
from opik_otel import configure

provider = TracerProvider()
configure(url=sys.argv[1], tracer_provider=provider, project_name="short-lived", exit_timeout_millis=5000)
tracer = provider.get_tracer("short-lived")
ids = []
for index in range(int(sys.argv[2])):
    with tracer.start_as_current_span("request") as root:
        ids.append(format(root.get_span_context().span_id, "016x"))
        for child in range(int(sys.argv[3])):
            with tracer.start_as_current_span(f"step-{child}") as span:
                ids.append(format(span.get_span_context().span_id, "016x"))
print(json.dumps(ids), flush=True)
"""


def short_lived_runs(runs: int, children: int, traces: int = 10) -> int:
    """Many runs of a small program while Opik flaps; each run exits (flushing at exit)
    and, when Opik was up, must have delivered everything emitted so far by then."""
    server = Server()
    cache = tempfile.mkdtemp(prefix="opik-short-lived-")
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    emitted: List[str] = []
    own_exit_ok = up_runs = 0
    exit_times: Dict[str, List[float]] = {"up": [], "down": []}
    try:
        for run in range(runs):
            down = (run // 2) % 2 == 1
            server.ask("down" if down else "up")
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-c", PROGRAM, server.url, str(traces), str(children)],
                capture_output=True, text=True, env=env, timeout=120,
            )
            exit_times["down" if down else "up"].append(time.monotonic() - started)
            if done.returncode != 0:
                print(f"run {run} failed:\n{done.stderr[-1000:]}")
                return 1
            emitted += json.loads(done.stdout)
            if not down:
                up_runs += 1
                delivered = int(server.ask("count"))
                own_exit_ok += delivered >= len(set(emitted))
        server.ask("up")
        report_path = os.path.join(cache, "report.json")
        server.ask("report", report_path)
        with open(report_path) as handle:
            report = json.load(handle)
    finally:
        server.close()
        shutil.rmtree(cache, ignore_errors=True)
    delivered_ids = set(report["ids"])
    exact = delivered_ids == set(emitted)
    print(f"runs                      {runs} ({up_runs} with Opik up, {runs - up_runs} down)")
    print(f"emitted / delivered       {len(emitted)} / {len(delivered_ids)}   exactly the emitted set: {exact}")
    print(f"up-runs whose own exit delivered everything emitted so far: {own_exit_ok} of {up_runs}")
    for phase, times in exit_times.items():
        if times:
            print(f"run wall time, Opik {phase:4}  median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    ok = exact and own_exit_ok == up_runs
    print("targets:", "all met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
