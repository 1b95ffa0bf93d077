"""CPU instructions per span: end to end (``end_to_end.py``'s pipelines) and at span start
(``processor_overhead.py``'s scenarios), counted by valgrind instead of timed.

Run: ``python benchmarks/instruction_counts.py [--traces N] [--spans N]`` (needs ``valgrind``)

Timed benchmarks on a shared VM swing by tens of percent from run to run; instructions
counted by valgrind's callgrind do not. Each case runs in a child process under
callgrind twice, once doing nothing and once doing the work; the difference, divided by
the spans, is what one span costs all threads of the process, garbage collection
included. Kernel work (file and socket I/O) is not counted.

- end to end: ``--traces`` 3-span traces through each pipeline, ending with a flush that
  has delivered everything to a local sink (the application's span creation plus the
  export);
- span start: ``--spans`` spans of each scenario on each provider (the application's
  thread only).

The SDK's span clock is replaced by one advancing 12.5 us per reading, so that what is
cached per millisecond hits as often as at native speed.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

BENCHMARKS = Path(__file__).parent

# What every measured script starts with.
PRELUDE = r"""
import itertools, logging, sys, time
import opentelemetry.sdk.trace
logging.disable(logging.WARNING)
# Under callgrind everything runs ~50x slower, so caches kept per millisecond (the
# timestamp groups of minted ids) would miss on every span; the SDK's span clock
# instead advances 12.5 us per reading, about what it does at native speed.
opentelemetry.sdk.trace.time_ns = itertools.count(time.time_ns(), 12_500).__next__
sys.path.insert(0, {benchmarks!r})
"""

END_TO_END = r"""
import os, subprocess, tempfile
import end_to_end

name, traces = sys.argv[1], int(sys.argv[2])
sink = subprocess.Popen([sys.executable, "-c", end_to_end.SINK], stdout=subprocess.PIPE, text=True)
base = "http://127.0.0.1:%d/api" % int(sink.stdout.readline())
provider, stop = end_to_end.pipelines()[name](base, traces * 3 + 1024, tempfile.mkdtemp())
tracer = provider.get_tracer("benchmark.app", "1.0")
for count in (50, traces):  # the first round: imports, connections, threads
    for index in range(count):
        end_to_end.one_trace(tracer, index)
    provider.force_flush(600_000)
stop()
sink.kill()
os._exit(0)
"""

SPAN_START = r"""
import os
import processor_overhead

config, scenario, spans = sys.argv[1], sys.argv[2], int(sys.argv[3])
tracer = processor_overhead.providers()[config]
run = processor_overhead.SCENARIOS[scenario]
for count in (300, spans):  # the first round: first-call caches
    produced = 0
    while produced < count:
        produced += run(tracer)
os._exit(0)
"""

Case = Tuple[str, ...]


def instructions(script: str, arguments: Case) -> int:
    """Instructions callgrind counts for ``script`` run with ``arguments``."""
    with tempfile.NamedTemporaryFile("w", suffix=".py") as file:
        file.write(PRELUDE.format(benchmarks=str(BENCHMARKS)) + script)
        file.flush()
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, file.name, *arguments],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no instruction count:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def per_span(script: str, cases: List[Case], work: str, spans: int) -> Dict[Case, float]:
    """Instructions per span of each case: run with ``work`` units, less run with none."""
    jobs = [(case, amount) for case in cases for amount in ("0", work)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda job: instructions(script, (*job[0], job[1])), jobs))
    return {case: (counts[2 * index + 1] - counts[2 * index]) / spans for index, case in enumerate(cases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=600, help="3-span traces per end-to-end run")
    parser.add_argument("--spans", type=int, default=3000, help="spans per span-start run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (e.g. apt-get install valgrind)")
    sys.path.insert(0, str(BENCHMARKS))
    from end_to_end import pipelines
    from processor_overhead import SCENARIOS, providers

    print(f"python {sys.version.split()[0]}, instructions counted by callgrind")
    names = list(pipelines())
    pipeline_counts = per_span(END_TO_END, [(name,) for name in names], str(args.traces), args.traces * 3)
    print(f"\nend to end, {args.traces * 3} spans per pipeline")
    print(f"{'pipeline':<16} {'instructions/span':>18} {'vs SDK':>8}")
    for name in names:
        count = pipeline_counts[(name,)]
        print(f"{name:<16} {count:>18,.0f} {count / pipeline_counts[('SDK',)]:>7.2f}x")

    configs = list(providers())
    cases = [(config, scenario) for scenario in SCENARIOS for config in configs]
    start_counts = per_span(SPAN_START, cases, str(args.spans), args.spans)
    print(f"\nspan start, {args.spans} spans per scenario and provider")
    print(f"{'scenario':<10} {'config':<10} {'instructions/span':>18} {'vs bare':>9}")
    for config, scenario in cases:
        count = start_counts[(config, scenario)]
        print(f"{scenario:<10} {config:<10} {count:>18,.0f} {count / start_counts[('bare', scenario)] - 1:>+9.1%}")


if __name__ == "__main__":
    main()
