"""CPU instructions per span, end to end: ``configure()`` against the stock OTel SDK pipeline.

Run: ``python benchmarks/instruction_counts.py [--traces N]`` (needs ``valgrind``)

Timed benchmarks on a shared VM swing by tens of percent from run to run; instructions
counted by valgrind's callgrind do not. Each pipeline of ``end_to_end.py`` runs the same
3-span traces in a child process under callgrind, once with no trace and once with
``--traces``, both ending with a flush that has delivered everything to a local sink; the
difference, divided by the spans, is what one span costs all threads of the process
(the application's span creation plus the export, garbage collection included).
Kernel work (file and socket I/O) is not counted.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict

CHILD = r"""
import logging, os, subprocess, sys, tempfile
logging.disable(logging.WARNING)
sys.path.insert(0, {benchmarks!r})
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


def instructions(name: str, traces: int) -> int:
    """Instructions callgrind counts for the child process running ``traces`` traces."""
    with tempfile.NamedTemporaryFile("w", suffix=".py") as script:
        script.write(CHILD.format(benchmarks=str(Path(__file__).parent)))
        script.flush()
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, script.name, name, str(traces)],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no instruction count:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=600, help="3-span traces per measured run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (e.g. apt-get install valgrind)")
    sys.path.insert(0, str(Path(__file__).parent))
    from end_to_end import pipelines

    names = list(pipelines())
    jobs = [(name, traces) for name in names for traces in (0, args.traces)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: instructions(*job), jobs)))
    per_span: Dict[str, float] = {
        name: (counts[(name, args.traces)] - counts[(name, 0)]) / (args.traces * 3) for name in names
    }
    print(f"python {sys.version.split()[0]}, {args.traces * 3} spans per pipeline, instructions counted by callgrind")
    print(f"{'pipeline':<16} {'instructions/span':>18} {'vs SDK':>8}")
    for name in names:
        print(f"{name:<16} {per_span[name]:>18,.0f} {per_span[name] / per_span['SDK']:>7.2f}x")


if __name__ == "__main__":
    main()
